"""Issue 11: a run folder nothing can corrupt, and one-line errors for what the user can fix.

Each test reproduces one reported defect with a tiny ResNet-20 run on generated images.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import TRAIN, error_line, run_train, train_env, train_in_process

from resnet_tf.errors import ConfigError

FAST = ["--epochs", "2", "--batch-size", "8", "--no-export", "--precision", "float32"]


@pytest.fixture(scope="module")
def images(image_folder_factory):
    return image_folder_factory(per_class=12, size=8)


@pytest.fixture(scope="module")
def finished(images, tmp_path_factory):
    """A complete 2-epoch run, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = run_train("--data-dir", images, *FAST, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _half_finished(finished, tmp_path, rows=1):
    """A copy of the finished run that looks killed after `rows` epochs (history rows)."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    config = json.loads((out / "config.json").read_text())
    config["status"] = "running"
    (out / "config.json").write_text(json.dumps(config))
    lines = (out / "history.csv").read_text().splitlines()
    (out / "history.csv").write_text("\n".join(lines[:1 + rows]) + "\n")
    (out / "backup").mkdir()
    return out


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
time.sleep(120)
"""


def test_run_lock_names_its_holder_and_dies_with_it(tmp_path):
    # The lock's own behaviour, with a plain Python process as the other writer; the
    # slow test below checks the same through two train.py processes.
    from resnet_tf.runs import LOCK_FILE, RunDirectory

    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run" / LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"is in use by process {holder.pid}, which is "
                                              "writing this run"):
            RunDirectory(str(tmp_path / "run")).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunDirectory(str(tmp_path / "run")).lock()  # a killed holder leaves no stuck lock


@pytest.mark.slow
def test_second_writer_of_a_run_folder_stops_at_once_naming_the_first(images, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, TRAIN, "--data-dir", images, *FAST,
                              "--epochs", "4", "--out", str(out)],
                             env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists() or not (out / ".lock").read_text().strip():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        second = run_train("--data-dir", images, *FAST, "--epochs", "4", "--out", out)
        assert second.returncode == 2
        assert f"is in use by process {first.pid}" in error_line(second)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed holder leaves no stuck lock: the next run resumes (here: starts) normally.
    third = run_train("--data-dir", images, *FAST, "--epochs", "4", "--out", out)
    assert third.returncode == 0, third.stderr[-3000:]


def test_train_returns_the_run_free_for_the_next_process(images, tmp_path):
    # train() in a notebook, then train.py in a terminal on the same folder: not "in use".
    import fcntl

    out = tmp_path / "run"
    assert train_in_process("--data-dir", images, *FAST, "--epochs", "1",
                            "--out", out).returncode == 0
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while still held
    finally:
        os.close(fd)


def test_missing_backup_is_refused_not_silently_restarted(finished, images, tmp_path):
    out = _half_finished(finished, tmp_path, rows=2)
    shutil.rmtree(out / "backup")
    history = (out / "history.csv").read_text()
    result = train_in_process("--data-dir", images, *FAST, "--out", out)
    assert result.returncode == 2
    assert "2 finished epoch(s) but there is no backup state" in error_line(result)
    assert (out / "history.csv").read_text() == history  # nothing overwritten


@pytest.mark.parametrize("damage", ["weights", pytest.param("metadata", marks=pytest.mark.slow),
                                    pytest.param("history", marks=pytest.mark.slow)])
def test_damaged_run_files_are_one_line_errors(finished, images, tmp_path, damage):
    out = _half_finished(finished, tmp_path)
    (out / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n cut short")
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 0, "batch": -1}')
    if damage == "metadata":
        (out / "backup" / "training_metadata.json").write_text("{not json")
    if damage == "history":
        (out / "history.csv").write_text("epoch,loss\n1,abc\n")
    result = train_in_process("--data-dir", images, *FAST, "--out", out)
    assert result.returncode == 2
    expected = {"weights": "latest.weights.h5 is damaged",
                "metadata": "training_metadata.json is damaged",
                "history": "cannot read"}[damage]
    assert expected in error_line(result)


def test_resume_with_other_classes_is_refused_before_writing(finished, image_folder_factory,
                                                             tmp_path):
    out = _half_finished(finished, tmp_path)
    fewer = image_folder_factory(classes=("cat", "dog"), per_class=12, size=8)
    config = json.loads((out / "config.json").read_text())
    config["config"]["data_dir"] = fewer
    (out / "config.json").write_text(json.dumps(config))
    before = {name: (out / name).read_bytes() for name in ("config.json", "classes.txt")}
    result = train_in_process("--data-dir", fewer, *FAST, "--out", out)
    assert result.returncode == 2
    assert "was trained on other classes" in error_line(result)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_divergence_stops_without_export_and_keeps_the_run_resumable(images, tmp_path):
    out = tmp_path / "run"
    result = train_in_process("--data-dir", images, "--epochs", "2", "--batch-size", "8",
                              "--lr", "1e30", "--warmup-epochs", "0", "--precision", "float32",
                              "--out", out)
    assert result.returncode == 2
    assert "Training diverged: the loss of epoch 1 is nan" in error_line(result)
    assert not (out / "export").exists() and not (out / "history.csv").exists()
    assert json.loads((out / "config.json").read_text())["status"] == "running"


def _sigint_as_in_a_terminal():
    # A job started in the background of a non-interactive shell (`cmd &`, as CI may
    # run pytest) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: Ctrl-C in a terminal reaches a command with SIGINT at its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume(images, tmp_path):
    process = subprocess.Popen([sys.executable, TRAIN, "--data-dir", images, *FAST,
                                "--epochs", "50", "--out", str(tmp_path / "run")],
                               env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_sigint_as_in_a_terminal)
    deadline = time.monotonic() + 180
    while not (tmp_path / "run" / "history.csv").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted; rerun the same command to resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_a_ctrl_c_python_swallows_still_stops_training_after_the_batch():
    # SIGINT during a finalizer (`__del__`) is a KeyboardInterrupt Python prints and drops.
    from resnet_tf.training.callbacks import StopOnInterrupt

    inherited = signal.getsignal(signal.SIGINT)  # ignored when pytest runs in the background
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
        stop = StopOnInterrupt()
        stop.on_train_begin()
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first: recorded, nothing raised yet
            time.sleep(0.01)
            assert stop.interrupted
            with pytest.raises(KeyboardInterrupt):
                stop.on_train_batch_end(0)
            with pytest.raises(KeyboardInterrupt):  # the second: the handler from before
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        finally:
            stop.restore()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup: an ignored Ctrl-C stays ignored
        ignoring = StopOnInterrupt()
        ignoring.on_train_begin()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ignoring.restore()
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed is out of range"),
    (["--split-seed", "-1"], "--split-seed is out of range"),
    pytest.param(["--seed", str(2**70)], "--seed is out of range", marks=pytest.mark.slow),
    (["--image-size", "100000"], "--image-size is too large"),
    pytest.param(["--warmup-epochs", "nan"], "--warmup-epochs must be a finite number",
                 marks=pytest.mark.slow),
    pytest.param(["--lr", "inf"], "--lr must be a finite number", marks=pytest.mark.slow),
    (["--devices", "99"], "--devices asks for more CPU devices than cores"),
])
def test_bad_values_are_one_line_errors(images, tmp_path, args, message):
    result = train_in_process("--data-dir", images, *FAST, "--out", tmp_path / "run", *args)
    assert result.returncode == 2
    assert message in error_line(result)
    assert not (tmp_path / "run").exists()


def test_export_dir_that_is_a_file_is_refused_before_training(images, tmp_path):
    (tmp_path / "file").write_text("x")
    result = train_in_process("--data-dir", images, "--epochs", "1", "--batch-size", "8",
                              "--out", tmp_path / "run", "--export-dir", tmp_path / "file")
    assert result.returncode == 2
    assert "--export-dir is a file. Received:" in error_line(result)
    assert not (tmp_path / "run" / "history.csv").exists()


def test_a_full_disk_stops_before_writing_checkpoints(tmp_path, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    import keras

    from resnet_tf.errors import ConfigError
    from resnet_tf.training.callbacks import check_free_space

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1000)])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9, 10**5))
    with pytest.raises(ConfigError, match=r"is \(nearly\) full\. Received: 0 MB free"):
        check_free_space(str(tmp_path), model)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**12, 0, 10**12))
    check_free_space(str(tmp_path), model)
