"""Writing results so that a kill or crash never leaves a half-written file.

Each write goes to a temporary file in the same folder and is renamed over the target,
so a reader sees either the old file or the new one.
"""

import json
import os
import tempfile

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write):
    """Calls `write(tmp_path)` and moves the result over `path`; a kill leaves either."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    if name.endswith(".weights.h5"):
        ext = ".weights.h5"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=ext, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are for everyone
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")
