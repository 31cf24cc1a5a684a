"""Run folders and `.keras` files written by older code still work with today's.

Both fixtures are made by tests/fixtures/make_runs.py with the code of the commit named:
- v0_run (72e9ce5, the flat package before the layout change): a ResNet-20 run stopped
  after epoch 1 of 2, with its backup.
- main_run (57849e7): a complete 1-epoch run with its SavedModel export, so that a change
  to the run folder's files (config.json, best.keras, the export) is caught here.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import resnet_tf  # noqa: F401  (registers the layers and the schedule)
from resnet_tf.cli.evaluate import evaluate_main, predict_main
from resnet_tf.cli.train import main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
FIXTURE = os.path.join(FIXTURES, "v0_run")


def _make_runs():
    spec = importlib.util.spec_from_file_location("make_runs", os.path.join(FIXTURES, "make_runs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy(tmp_path, name="v0_run"):
    shutil.copytree(os.path.join(FIXTURES, name), tmp_path / name)
    run, data = tmp_path / name / "run", tmp_path / name / "data"
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
    result = _train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"], history
    assert json.loads((run / "config.json").read_text())["status"] == "complete"
    assert os.listdir(run / "export" / "resnet20") == ["1"]


def _train(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_todays_run_folder_evaluates_and_predicts(tmp_path, capsys):
    run, data = _copy(tmp_path, "main_run")
    out = tmp_path / "evaluation"
    assert evaluate_main([str(run), "--data-dir", str(data), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == 16 and metrics["class_names"] == ["cat", "dog"]
    capsys.readouterr()
    image = str(data / "dog" / "0.png")
    (export,) = os.listdir(run / "export")
    for model in (run, run / "export" / export):  # the run's best.keras, then its SavedModel
        assert predict_main([str(model), image, "--top-k", "2", "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        assert sorted(p["class"] for p in result["predictions"]) == ["cat", "dog"]


def test_todays_complete_run_is_reported_complete_by_the_same_command(tmp_path, capsys):
    run, data = _copy(tmp_path, "main_run")
    before = {name: (run / name).read_bytes() for name in ("best.keras", "history.csv", "metrics.json")}
    # In-process: the command has --cpu-config tf-defaults, so it never restarts itself.
    assert train_main(["--data-dir", str(data), *_make_runs().MAIN_ARGS, "--out", str(run)]) == 0
    assert "is already complete (1 epochs); nothing to do" in capsys.readouterr().out
    assert {name: (run / name).read_bytes() for name in before} == before
    assert json.loads((run / "config.json").read_text())["status"] == "complete"


# The main code before the resolved configuration (issue 28): its run folders must resume
# and compare equal. A fresh clone has it; a shallow one skips.
BEFORE_RESOLVED_CONFIG = "57849e7"


def _old_code(tmp_path):
    shallow = subprocess.run(["git", "-C", ROOT, "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True)
    if shallow.returncode or shallow.stdout.strip() != "false":
        pytest.skip("no full git history here")
    code = tmp_path / "old_code"
    code.mkdir()
    archive = subprocess.run(["git", "-C", ROOT, "archive", BEFORE_RESOLVED_CONFIG, "resnet_tf"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return code


def test_a_run_folder_of_the_code_before_resolved_configs_resumes_and_compares_equal(
        tmp_path, image_folder_factory):
    from resnet_tf.training import RunOptions, TrainConfig, train, trainer

    code = _old_code(tmp_path)
    data = image_folder_factory(per_class=8, size=8)
    out = tmp_path / "run"
    settings = dict(depth=20, data_dir=data, val_split=0.25, epochs=2, batch_size=4,
                    precision="float32", seed=1)
    script = ("import resnet_tf\n"
              "print(resnet_tf.__file__, flush=True)\n"
              "from resnet_tf.training import RunOptions, TrainConfig, train\n"
              f"train(TrainConfig(**{settings!r}), RunOptions(out={str(out)!r}, export=False, "
              "verbose=0))\n")
    env = dict(os.environ, PYTHONPATH=str(code), TF_CPP_MIN_LOG_LEVEL="3",
               RESNET_TF_KILL_AT="start of epoch 2")
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)  # not this checkout's code
    assert killed.returncode == -9, killed.stderr[-3000:]  # epoch 1 of 2 done
    assert killed.stdout.startswith(str(code))  # the old code made the run
    written = json.loads((out / "config.json").read_text())["config"]

    config, options = TrainConfig(**settings), RunOptions(out=str(out), export=False, verbose=0)
    run, resolved = trainer.resolve_run(config, options)
    now = resolved.to_dict()
    assert run.path == str(out) and {k: now[k] for k in written} == written  # every key and value
    # Fields added since take the values the old run had (resnet_tf.compat).
    assert {k: v for k, v in now.items() if k not in written} == {
        "train_size": None, "grad_accum": 1, "calibrate": False, "eval_transform": None,
        "distill": 0.0}

    result = train(config, options)
    assert result["epochs"] == 2
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]
    finished = json.loads((out / "config.json").read_text())
    assert finished["status"] == "complete"
    assert {k: finished["config"][k] for k in written} == written
    assert not (out / "calibration.json").exists()  # the old run did not calibrate
    again = train(config, options)  # complete: compared equal, nothing trained
    assert again == result
