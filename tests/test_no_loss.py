"""Issue 30: a command never deletes or changes a file it cannot prove it wrote, and never
serves a stale or broken model.

Each test is named after the reported case; `snapshot` records every file of a folder
(path and a hash of its bytes) so a refused or failed command can be shown to change
nothing.
"""

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import error_line, train_in_process

from resnet_tf.errors import ConfigError

FAST = ["--epochs", "1", "--batch-size", "8", "--no-export", "--precision", "float32"]


def snapshot(folder):
    """{relative path: sha256 of the bytes (or "dir")} of everything under `folder`."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _user_project(root):
    """A folder of a user's own files, named as a run's would be."""
    for name, text in {"logs/server.log": "up", "backup/thesis.docx": "chapter 1",
                       "export/mydata.csv": "a,b\n1,2\n", "curves.png": "my plot",
                       "notes.txt": "keep"}.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    return root


@pytest.fixture(scope="module")
def images(image_folder_factory):
    return image_folder_factory(per_class=12, size=8)


# --- --overwrite --------------------------------------------------------------------------


def test_overwrite_of_a_folder_without_a_run_is_refused_and_deletes_nothing(tmp_path):
    from resnet_tf.runs import RunDirectory

    project = _user_project(str(tmp_path / "userproj"))
    before = snapshot(project)
    with pytest.raises(ConfigError, match=r"holds files but no run \(no config.json\), and "
                                          r"--overwrite replaces only a run's own files"):
        RunDirectory(project).clear()
    assert snapshot(project) == before


def test_overwrite_deletes_only_the_files_the_run_wrote(tmp_path):
    from resnet_tf.runs import RunDirectory

    run = str(tmp_path / "run")
    _user_project(run)
    written = ["config.json", "classes.txt", "history.csv", "metrics.json", "best.keras",
               "last.keras", "logs/train/events.out.tfevents.1.host",
               "logs/validation/events.out.tfevents.2.host", "backup/latest.weights.h5",
               "backup/training_metadata.json", "backup/ema-12.npz",
               "backup/finetune/latest.weights.h5", "export/resnet20/1/saved_model.pb"]
    for name in written:
        os.makedirs(os.path.dirname(os.path.join(run, name)), exist_ok=True)
        with open(os.path.join(run, name), "w") as f:
            f.write("x")
    RunDirectory(run).clear()
    left = snapshot(run)
    # In a run folder curves.png is the run's; every other file of the user's stays, and
    # so does every export version (a new model gets a new one).
    assert {"logs/server.log", "backup/thesis.docx", "export/mydata.csv", "notes.txt",
            "export/resnet20/1/saved_model.pb"} <= set(left)
    assert not {"config.json", "history.csv", "last.keras", "backup/latest.weights.h5",
                "backup/finetune", "logs/train", "backup/ema-12.npz"} & set(left)


def test_overwrite_advice_is_not_given_for_a_folder_without_a_run(images, tmp_path):
    project = _user_project(str(tmp_path / "userproj"))
    before = snapshot(project)
    plain = train_in_process("--data-dir", images, *FAST, "--out", project)
    assert plain.returncode == 2
    assert "holds no run (no config.json); choose another --out" in error_line(plain)
    assert "pass --overwrite" not in error_line(plain)
    overwrite = train_in_process("--data-dir", images, *FAST, "--out", project, "--overwrite")
    assert overwrite.returncode == 2
    assert "--overwrite replaces only a run's own files" in error_line(overwrite)
    assert snapshot(project) == before  # no .lock either


def test_out_inside_data_dir_leaves_no_lock_and_no_folder(image_folder_factory, tmp_path):
    data = image_folder_factory(per_class=4, size=8)
    before = snapshot(data)
    result = train_in_process("--data-dir", data, *FAST, "--out", os.path.join(data, "run"))
    assert result.returncode == 2
    assert "no image files" in error_line(result)
    assert snapshot(data) == before
    again = train_in_process("--data-dir", data, *FAST, "--out", tmp_path / "run")
    assert again.returncode == 0, again.stderr[-3000:]  # the data still works


def test_refused_runs_leave_no_empty_run_folder(tmp_path):
    from resnet_tf.runs import RunDirectory

    run = RunDirectory(str(tmp_path / "new" / "run"))
    run.check_writable()
    run.lock()
    run.release_if_unused()
    assert os.listdir(tmp_path) == []
    kept = RunDirectory(str(tmp_path / "kept"))
    kept.check_writable()
    kept.lock()
    with open(kept.file("config.json"), "w") as f:
        f.write("{}")
    kept.release_if_unused()  # a run was written: its folder and lock stay
    assert sorted(os.listdir(kept.path)) == [".lock", "config.json"]


# --- exports ------------------------------------------------------------------------------


def _fake_run(folder, model):
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "last.keras"))
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.write("\n".join(f"c{i}" for i in range(model.output_shape[-1])) + "\n")
    return folder


def test_overwritten_run_with_another_seed_is_exported_as_a_new_version(tmp_path, tiny_resnet):
    import tensorflow as tf

    from resnet_tf.export import export_run

    run = _fake_run(str(tmp_path / "run"), tiny_resnet(classes=2, size=8, seed=0))
    first = export_run(run)
    assert export_run(run) == first  # the same model is never exported twice
    retrained = tiny_resnet(classes=2, size=8, seed=1)
    _fake_run(run, retrained)  # what --overwrite with another --seed leaves
    second = export_run(run)
    assert os.path.basename(first) == "1" and os.path.basename(second) == "2"
    pixels = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype(np.uint8)
    served = tf.saved_model.load(second).signatures["serving_pixels"](images=pixels)
    from resnet_tf.data import normalize

    expected = retrained(normalize(pixels), training=False)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-4)
    assert export_run(run) == second


def test_non_finite_weights_are_never_exported(tmp_path, tiny_resnet):
    from resnet_tf.errors import ExportError
    from resnet_tf.export import export_serving_model

    model = tiny_resnet(classes=2, size=8)
    kernel = model.weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(ExportError, match=r"1 of \d+ weights are not finite .*Nothing was "
                                          "exported"):
        export_serving_model(model, str(tmp_path / "export"), class_names=["a", "b"],
                             image_size=8, preset="cifar")
    assert not (tmp_path / "export").exists() or os.listdir(tmp_path / "export") == []


@pytest.mark.parametrize("logs, weights_ok, message", [
    ({"loss": 1e30, "val_loss": float("nan")}, True, "the validation loss of epoch 3 is nan"),
    ({"loss": 1e30, "val_loss": 2.0}, False, "after epoch 3, 1 of"),
])
def test_wd_1e30_stops_before_recording_the_epoch(tiny_resnet, logs, weights_ok, message):
    # What `--wd 1e30 --epochs 1` gave: a finite loss, a NaN validation loss and NaN weights.
    from resnet_tf.errors import TrainingDivergedError
    from resnet_tf.training.callbacks import StopOnNonFiniteLoss

    model = tiny_resnet(classes=2, size=8)
    if not weights_ok:
        model.weights[0].assign(np.full(model.weights[0].shape, np.inf, "float32"))
    stop = StopOnNonFiniteLoss()
    stop.set_model(model)
    with pytest.raises(TrainingDivergedError, match=message):
        stop.on_epoch_end(2, logs)


def test_empty_batch_returns_empty_outputs(tmp_path, tiny_resnet):
    import tensorflow as tf

    from resnet_tf.export import export_serving_model

    path = export_serving_model(tiny_resnet(classes=2, size=8), str(tmp_path), top_k=2,
                                class_names=["a", "b"], image_size=8, preset="cifar")
    loaded = tf.saved_model.load(path)
    for name, request in [("serving_default", {"image_bytes": tf.constant([], tf.string)}),
                          ("serving_pixels", {"images": tf.zeros([0, 8, 8, 3], tf.uint8)})]:
        out = loaded.signatures[name](**request)
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "probabilities": (0, 2), "classes": (0, 2), "scores": (0, 2), "class_names": (0, 2)}


def test_export_version_beyond_int64_is_refused(tmp_path, tiny_resnet):
    from resnet_tf.errors import ExportError
    from resnet_tf.export import export_serving_model

    with pytest.raises(ExportError, match=r"version must be an integer from 0 to "
                                          r"9223372036854775807"):
        export_serving_model(tiny_resnet(classes=2, size=8), str(tmp_path), version=2**64,
                             class_names=["a", "b"], image_size=8, preset="cifar")
    assert os.listdir(tmp_path) == []


def test_export_marker_of_an_earlier_version_still_counts(tmp_path, tiny_resnet):
    from resnet_tf.export import export_run

    run = _fake_run(str(tmp_path / "run"), tiny_resnet(classes=2, size=8))
    first = export_run(run)
    with open(os.path.join(first, "assets.extra", "resnet_tf_run.json"), "w") as f:
        json.dump({"run": run, "epochs": 0}, f)  # what earlier versions wrote
    assert export_run(run) == first


# --- the other cases ----------------------------------------------------------------------


def test_run_whose_best_keras_was_deleted_does_not_complete_without_it(tmp_path, tiny_resnet):
    from resnet_tf.runs import RunDirectory
    from resnet_tf.training.callbacks import RunRecorder

    run = RunDirectory(str(tmp_path / "run"))
    os.makedirs(run.path)
    with open(run.file("history.csv"), "w") as f:
        f.write("epoch,loss\n1,0.5\n")
    recorder = RunRecorder(run, "accuracy")
    recorder.set_model(tiny_resnet(classes=2, size=8))
    with pytest.raises(ConfigError, match=r"has finished epochs but no best\.keras\. .*Pass "
                                          "--overwrite"):
        recorder.on_epoch_begin(1)  # resuming
    complete = {"config": {"epochs": 1}, "status": "complete"}
    with pytest.raises(ConfigError, match=r"no best\.keras"):
        run.check({"epochs": 1}, complete)  # "already complete" is not said either
    tiny_resnet(classes=2, size=8).save(run.file("best.keras"))
    assert run.check({"epochs": 1}, complete) is True


def test_explain_out_existing_file_is_a_one_line_error(tmp_path, capsys):
    from resnet_tf.cli import explain

    (tmp_path / "taken").write_text("mine")
    assert explain.main(["model.keras", "a.png", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnet-explain: error: --out is a file. Received:")
    assert len(err.splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, tiny_resnet):
    """A user's folder: a model, an export with version 1, a decompression bomb, a file."""
    from data.test_image_bombs import png_bomb

    from resnet_tf.export import export_serving_model

    root = tmp_path_factory.mktemp("user")
    model = tiny_resnet(classes=2, size=8)
    model.save(root / "model.keras")
    export_serving_model(model, str(root / "served"), class_names=["a", "b"], image_size=8,
                         preset="cifar")
    (root / "images" / "a").mkdir(parents=True)
    (root / "images" / "b").mkdir()
    (root / "images" / "a" / "bomb.png").write_bytes(png_bomb(9000, 9000))
    (root / "images" / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    (root / "taken").write_text("mine")
    return root


def _refused_commands(root):
    from resnet_tf.cli import evaluate, explain, export

    model, served, images = str(root / "model.keras"), str(root / "served"), str(root / "images")
    return {
        "export to an existing version": (export.main, [model, "--export-dir", served,
                                                        "--version", "1"]),
        "export version beyond int64": (export.main, [model, "--export-dir", served,
                                                      "--version", "9" * 20]),
        "export to a file": (export.main, [model, "--export-dir", str(root / "taken")]),
        "evaluate into a file": (evaluate.evaluate_main, [model, "--data-dir", images,
                                                          "--out", str(root / "taken")]),
        "evaluate images none can decode": (evaluate.evaluate_main, [
            model, "--data-dir", images, "--out", str(root / "taken" / "x")]),
        "predict a bomb": (evaluate.predict_main, [model, str(root / "images" / "a")]),
        "explain a bomb": (explain.main, [model, str(root / "images" / "a" / "bomb.png"),
                                          "--out", str(root / "explained")]),
        "explain into a file": (explain.main, [model, images, "--out", str(root / "taken")]),
    }


@pytest.mark.parametrize("case", list(_refused_commands(__import__("pathlib").Path("."))))
def test_refused_or_failed_commands_change_nothing_of_the_users(user_folder, case, capsys):
    main, argv = _refused_commands(user_folder)[case]
    before = snapshot(user_folder)
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status in (1, 2), case
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(user_folder) == before
