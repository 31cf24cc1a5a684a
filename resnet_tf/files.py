"""Writing results so that a kill or crash never leaves a half-written file, and downloads
that fail fast.

Each write goes to a temporary file in the same folder and is renamed over the target
(or, with `exclusive=True`, linked to it only if it does not exist yet), so a reader sees
either the old file or the new one, and a file that must never be overwritten is not.
"""

import contextlib
import json
import os
import socket
import tempfile

from resnet_tf.errors import ExportError

# Per socket operation, not for a whole download: a stalled connection fails in seconds,
# a slow one still finishes.
DOWNLOAD_TIMEOUT_S = 10



def atomic_write(path, write, *, exclusive=False):
    """Calls `write(tmp_path)` and moves the result to `path`; a kill leaves either.

    The file gets the permissions a plain `open(path, "w")` would (the user's umask).
    With `exclusive=True` an existing `path` is never replaced: `ExportError` is raised,
    even if the file appeared while `write` ran.
    """
    path = os.fspath(path)
    if exclusive and os.path.lexists(path):
        raise ExportError(_exists_message(path))
    directory, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    if name.endswith(".weights.h5"):
        ext = ".weights.h5"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=ext, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; results are for everyone
    try:
        write(tmp)
        fault_point(f"writing {os.path.basename(path)}")
        if exclusive:
            try:
                os.link(tmp, path)  # unlike a rename, fails if `path` appeared meanwhile
            except FileExistsError:
                raise ExportError(_exists_message(path)) from None
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def current_umask():
    """The process umask (read without changing it for longer than two calls)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exists_message(path):
    return (f"'{path}' already exists and is never overwritten; remove it or choose "
            "another path.")


def write_bytes(path, content, *, exclusive=False):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)
    atomic_write(path, write, exclusive=exclusive)


def write_text(path, text, *, exclusive=False):
    write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def write_json(path, obj, *, exclusive=False):
    write_text(path, json.dumps(obj, indent=2) + "\n", exclusive=exclusive)


def remove_debris(folder, prefixes=(".",)):
    """Deletes what an interrupted `atomic_write` leaves in `folder`: `.<stem>.*` temporaries.

    Only names that `atomic_write` itself makes (a dot, the target's stem, a dot and
    mkstemp's 8 characters) are removed; returns their paths.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(prefixes) and _is_temporary(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def _is_temporary(name):
    # ".last.ab12cd_9.keras", ".history.x1y2z3a4.csv", ".latest.q9w8e7r6.weights.h5"
    parts = name[1:].split(".")
    return len(parts) >= 3 and len(parts[1]) == 8


def fault_point(name):
    """Kills this process with SIGKILL when `RESNET_TF_KILL_AT` names `name`.

    The fault-injection tests (tests/training/test_faults.py) use it to stop a run at an
    exact moment of its life, as `kill -9` would; unset, it does nothing.
    """
    if os.environ.get("RESNET_TF_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def socket_timeout(seconds=None):
    """Downloads inside fail within `seconds` (default `DOWNLOAD_TIMEOUT_S`) per socket
    operation instead of hanging.

    A finished download ends at `fault_point("after download")`: its file is complete
    but not yet checked or moved into place, the moment a kill must not make it trusted.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S if seconds is None else seconds)
    try:
        yield
        fault_point("after download")
    finally:
        socket.setdefaulttimeout(previous)
