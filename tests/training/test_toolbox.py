"""Issue 13: the toolbox flags reach the model, the optimizer and the run folder, and a
run killed after an epoch resumes with its EMA weights and optimizer state intact."""

import concurrent.futures
import json

import keras
import numpy as np
import pytest
from conftest import run_train, train_in_process

import resnet_tf  # noqa: F401  (registers the layers and the schedule)


@pytest.fixture(scope="module")
def images(image_folder_factory):
    return image_folder_factory(per_class=12, size=8)


def test_toolbox_flags_reach_model_optimizer_and_run_folder(images, tmp_path):
    out = tmp_path / "run"
    result = train_in_process("--data-dir", images, "--epochs", "1", "--batch-size", "8",
                              "--precision", "float32", "--out", out, "--ema", "0.9",
                              "--loss", "bce", "--optimizer", "lamb", "--grad-clip", "1",
                              "--dropout", "0.2", "--se-ratio", "0.25", "--zero-init-residual",
                              "--shortcut", "B", "--tta", "flip", "--augment", "augmix",
                              "--cutmix", "1.0", "--random-erasing", "0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["config"]
    assert {k: config[k] for k in ("ema", "loss", "optimizer", "grad_clip", "dropout", "tta")} == {
        "ema": 0.9, "loss": "bce", "optimizer": "lamb", "grad_clip": 1.0, "dropout": 0.2,
        "tta": "flip"}
    assert (config["augment"], config["cutmix"], config["random_erasing"]) == ("augmix", 1.0, 0.25)
    assert "augmix, cutmix 1, random_erasing 0.25" in result.stdout
    assert "weight EMA 0.9" in result.stdout and "flip test-time augmentation" in result.stdout
    model = keras.saving.load_model(out / "best.keras")
    names = [layer.name for layer in model.layers]
    assert "head_dropout" in names and any("se" in n for n in names)
    assert model.layers[-1].get_config()["activation"] == "linear"  # BCE trains logits
    assert type(model.optimizer).__name__ == "Lamb"
    assert (out / "export" / "resnet20" / "1" / "saved_model.pb").exists()
    # With TTA, metrics.json also has the single-view numbers (what a served model gets).
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["single_view"]) == {"top1", "top5"} and 0 <= metrics["top1"] <= 1
    assert "also: single view top-1" in result.stdout


def test_resume_restores_ema_and_optimizer_state(image_folder_factory, tmp_path):
    # One batch of all 30 training images per epoch and no augmentation: the data of each
    # epoch does not depend on the process, so a resumed run must land where an
    # uninterrupted one does.
    images = image_folder_factory(per_class=11, size=8)  # 10 train + 1 validation per class
    args = ["--data-dir", images, "--epochs", "3", "--batch-size", "30", "--val-split", "0.1",
            "--augment", "none", "--ema", "0.5", "--deterministic", "--precision", "float32",
            "--no-export"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two independent processes
        whole = pool.submit(run_train, *args, "--out", tmp_path / "whole")
        killed = pool.submit(run_train, *args, "--out", tmp_path / "resumed",
                             RESNET_TF_KILL_AT="start of epoch 2")
        whole, killed = whole.result(), killed.result()
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert killed.returncode == -9
    resumed = run_train(*args, "--out", tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/3" not in resumed.stdout
    a = keras.saving.load_model(tmp_path / "whole" / "last.keras")
    b = keras.saving.load_model(tmp_path / "resumed" / "last.keras")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    # last.keras holds the EMA weights (BatchNorm statistics included) and the optimizer.
    assert len(a.optimizer.variables) == len(b.optimizer.variables) > 2
    for x, y in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
