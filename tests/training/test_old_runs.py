"""Run folders and `.keras` files written before the package layout changed still work.

tests/fixtures/v0_run was made by tests/fixtures/make_v0_run.py with the code of 72e9ce5
(the flat package): a ResNet-20 run stopped after epoch 1 of 2, with its backup.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np

import resnet_tf  # noqa: F401  (registers the layers and the schedule)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "v0_run")


def _copy(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "v0", ignore=shutil.ignore_patterns("*.py"))
    run, data = tmp_path / "v0" / "run", tmp_path / "v0" / "data"
    config = json.loads((run / "config.json").read_text())
    config["config"]["data_dir"] = str(data)  # the run moved with its data
    (run / "config.json").write_text(json.dumps(config))
    return run, data


def test_old_keras_files_load_compiled_and_predict(tmp_path):
    run, _ = _copy(tmp_path)
    model = keras.saving.load_model(run / "best.keras")  # compiled: needs WarmupSchedule
    assert type(model.optimizer).__name__ == "SGD"
    assert type(model.optimizer._learning_rate).__name__ == "WarmupSchedule"
    out = model.predict(np.zeros((2, 8, 8, 3), np.float32), verbose=0)
    assert out.shape == (2, 2) and np.allclose(out.sum(axis=1), 1, atol=1e-5)


def test_old_half_finished_run_resumes_and_exports(tmp_path):
    run, data = _copy(tmp_path)
    args = ["--data-dir", str(data), "--val-split", "0.25", "--epochs", "2", "--batch-size", "4",
            "--precision", "float32", "--deterministic", "--depth", "20", "--lr", "0.4",
            "--wd", "5e-4", "--label-smoothing", "0.1", "--warmup-epochs", "1", "--out", str(run)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"], history
    assert json.loads((run / "config.json").read_text())["status"] == "complete"
    assert os.listdir(run / "export" / "resnet20") == ["1"]
