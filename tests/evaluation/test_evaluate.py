"""`resnet-evaluate` and `resnet-predict` on a tiny run folder, its SavedModel and image folders.

The numbers they report must be the Keras model's on the evaluation pipeline, whichever
kind of model is given; user errors print one line and exit with status 2.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf import build_resnet, data, metrics
from resnet_tf import evaluation as evaluate
from resnet_tf.cli import evaluate as evaluate_cli
from resnet_tf.cli import train as train_cli
from resnet_tf.data.examples import val_mask
from resnet_tf.export import export_serving_model

SIZE = 16
CLASSES = ["cat", "dog", "bird"]
PER_CLASS = 4
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_image(path, seed, fmt="PNG"):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize((20, 18), Image.BILINEAR).save(path, fmt)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as the trainer leaves it, plus its exported SavedModel."""
    folder = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(1)
    model = build_resnet(20, input_shape=(SIZE, SIZE, 3), classes=len(CLASSES))
    model.save(folder / "best.keras")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "config.json").write_text(json.dumps({"config": {"image_size": SIZE, "preset": "cifar"}}))
    export_serving_model(model, folder / "export" / "tiny", class_names=CLASSES, image_size=SIZE,
                         preset="cifar", top_k=2)
    return folder, model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir()
        for i in range(PER_CLASS):
            fmt = "JPEG" if i % 2 else "PNG"
            _write_image(folder / name / f"{i}.{fmt.lower().replace('jpeg', 'jpg')}", 10 * label + i, fmt)
    return folder


def _expected(model, folder):
    """Files, labels as model indices, and the Keras model's probabilities on the evaluation pipeline."""
    files, labels, names = data.list_image_folder(folder)
    batch = tf.stack([data.preprocess_for_eval(data.decode_image(tf.io.read_file(f)), SIZE, "cifar")
                      for f in files])
    labels = np.asarray([CLASSES.index(names[label]) for label in labels])  # folders list sorted
    return files, labels, model(batch, training=False).numpy()


def _one_error_line(capsys, prog):
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_evaluate_reports_the_models_accuracy_and_confusion_matrix(run, images, tmp_path, capsys, kind):
    folder, model = run
    source = folder if kind == "keras" else folder / "export" / "tiny"  # base folder: latest version
    out = tmp_path / "eval"
    assert evaluate_cli.evaluate_main([str(source), "--data-dir", str(images), "--out", str(out)]) == 0

    _, labels, probabilities = _expected(model, images)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (labels, predicted), 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == 3 * PER_CLASS
    assert metrics["top1"] == pytest.approx((predicted == labels).mean())
    assert metrics["top5"] == 1.0  # 3 classes
    assert metrics["confusion_matrix"] == confusion.tolist()
    for i, name in enumerate(CLASSES):
        assert metrics["per_class"][name]["recall"] == pytest.approx(confusion[i, i] / PER_CLASS)
        assert metrics["per_class"][name]["precision"] == pytest.approx(
            confusion[i, i] / confusion[:, i].sum() if confusion[:, i].sum() else 0.0)
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = capsys.readouterr().out
    assert f"top-1 accuracy: {metrics['top1']:.4f}" in table
    assert "class      precision  recall  support" in table
    for name in CLASSES:
        assert f"{name:<9}  {metrics['per_class'][name]['precision']:9.4f}" in table


def test_evaluate_on_a_tfds_split(run, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    keras.utils.set_random_seed(2)
    build_resnet(20, input_shape=(32, 32, 3), classes=10).save(tmp_path / "cifar.keras")
    with tfds.testing.mock_data(num_examples=6):  # random 32x32 images, cifar10's 10 labels
        metrics = evaluate.evaluate(evaluate.load_classifier(tmp_path / "cifar.keras"),
                                    dataset="cifar10", split="test")
        assert metrics["examples"] == 6 and np.sum(metrics["confusion_matrix"]) == 6
        assert len(metrics["class_names"]) == 10 and metrics["top5"] >= metrics["top1"]
        with pytest.raises(evaluate.EvaluationError, match="3 classes but TFDS 'cifar10'.* has 10"):
            evaluate.evaluate(evaluate.load_classifier(run[0]), dataset="cifar10", split="test")


def test_predict_with_a_saved_model_alone_matches_the_keras_model(run, images, capsys):
    folder, model = run
    assert evaluate_cli.predict_main([str(folder / "export" / "tiny" / "1"), str(images), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    files, _, probabilities = _expected(model, images)
    assert [r["file"] for r in results] == files
    for result, expected in zip(results, probabilities):
        order = np.argsort(-expected)[:2]  # exported with top_k=2
        assert [p["index"] for p in result["predictions"]] == order.tolist()
        assert [p["class"] for p in result["predictions"]] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], expected[order], atol=1e-4)


def test_predict_table_from_a_keras_file(run, images, capsys):
    folder, model = run
    image = str(images / "dog" / "0.png")
    assert evaluate_cli.predict_main([str(folder / "best.keras"), image, "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    _, _, probabilities = _expected(model, images)
    best = CLASSES[int(probabilities[2 * PER_CLASS].argmax())]  # bird, cat, dog: the 9th file
    assert lines[0].split() == ["file", "rank", "class", "score"]
    assert lines[1].split()[:3] == [image, "1", best]
    assert len(lines) == 4


def test_predict_skips_an_unreadable_image_and_reports_it(run, images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = str(images / "cat" / "0.png")
    assert evaluate_cli.predict_main([str(run[0] / "export" / "tiny"), str(bad), good, "--json"]) == 1
    captured = capsys.readouterr()
    assert [r["file"] for r in json.loads(captured.out)] == [good]
    assert captured.err == (f"resnet-predict: warning: skipped '{bad}': image_bytes is not a "
                            "JPEG, PNG, GIF, BMP or WebP image (unrecognised header)\n")


def test_evaluate_user_errors_print_one_line_and_exit_2(run, images, tmp_path, capsys):
    folder, _ = run
    saved_model = str(folder / "export" / "tiny")
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    two_classes = tmp_path / "two"
    for name in ("a", "b"):
        (two_classes / name).mkdir(parents=True)
        _write_image(two_classes / name / "x.png", 0)

    cases = [
        ([str(tmp_path / "missing.keras"), "--data-dir", str(images)], "does not exist"),
        ([saved_model, "--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        ([saved_model, "--data-dir", str(empty)], "no image files"),
        ([saved_model, "--data-dir", str(two_classes)], "The model has 3 classes but folder"),
        ([str(folder), "--data-dir", str(two_classes)], "The model has 3 classes but folder"),
        ([str(tmp_path), "--data-dir", str(images)], "is not a SavedModel"),
    ]
    for argv, message in cases:
        assert evaluate_cli.evaluate_main(argv + ["--out", str(tmp_path / "o")]) == 2, argv
        assert message in _one_error_line(capsys, "resnet-evaluate"), argv


def test_predict_user_errors_print_one_line_and_exit_2(run, tmp_path, capsys):
    saved_model = str(run[0] / "export" / "tiny")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("hi")
    cases = [
        ([saved_model, str(tmp_path / "missing.jpg")], "Image '"),
        ([saved_model, str(tmp_path / "no_images")], "has no image files"),
        ([str(tmp_path / "missing.keras"), str(tmp_path / "no_images" / "notes.txt")], "does not exist"),
    ]
    for argv, message in cases:
        assert evaluate_cli.predict_main(argv) == 2, argv
        assert message in _one_error_line(capsys, "resnet-predict"), argv


def test_python_m_resnet_tf_dispatches_with_exit_status_and_no_traceback(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "resnet_tf", "evaluate", str(tmp_path / "missing.keras"),
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("resnet-evaluate: error:")]
    assert len(errors) == 1 and "missing.keras' does not exist" in errors[0]
    assert "Traceback" not in result.stderr


# --- Damaged models, unusable --out, links -----------------------------------------------------


def _base_with_versions(run, tmp_path, *damages):
    """A model base folder: version 1 as exported, then one version per damage."""
    import shutil

    exported = run[0] / "export" / "tiny" / "1"
    base = tmp_path / "models"
    shutil.copytree(exported, base / "1")
    for version, damage in enumerate(damages, 2):
        folder = base / str(version)
        shutil.copytree(exported, folder)
        pb = (folder / "saved_model.pb").read_bytes()
        if damage == "truncated":
            (folder / "saved_model.pb").write_bytes(pb[: len(pb) // 2])
        elif damage == "unloadable":  # whole as a file, but no graph TF can load
            (folder / "saved_model.pb").write_bytes(b"\x08\x01\x12\x04\xff\xff\xff\xff")
    return base


def test_a_half_written_newer_version_is_passed_over(run, images, tmp_path, capsys):
    base = _base_with_versions(run, tmp_path, "truncated")
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match=r"Skipped incomplete version\(s\) 2 .*; using version 1"):
        assert evaluate_cli.evaluate_main([str(base), "--data-dir", str(images), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == str(base / "1")
    with pytest.warns(UserWarning, match="using version 1"):
        assert evaluate_cli.predict_main([str(base), str(images / "cat" / "0.png")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["truncated", "unloadable"])
def test_a_broken_saved_model_is_one_error_line(run, images, tmp_path, capsys, damage):
    import shutil

    base = _base_with_versions(run, tmp_path, damage)
    shutil.rmtree(base / "1")
    expected = {"truncated": f"'{base}' is not a SavedModel: expected a folder with saved_model.pb",
                "unloadable": f"SavedModel '{base / '2'}' cannot be loaded ("}[damage]
    for model in (base, base / "2"):
        if damage == "truncated" and model != base:
            expected = f"SavedModel '{model}' is incomplete (saved_model.pb cut short"
        assert evaluate_cli.evaluate_main([str(model), "--data-dir", str(images),
                                           "--out", str(tmp_path / "o")]) == 2
        assert expected in _one_error_line(capsys, "resnet-evaluate")
        assert evaluate_cli.predict_main([str(model), str(images / "cat" / "0.png")]) == 2
        assert expected in _one_error_line(capsys, "resnet-predict")
    assert not (tmp_path / "o").exists()


def test_an_unusable_out_is_found_before_the_model_is_loaded(run, images, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    monkeypatch.setattr(evaluate_cli, "load_classifier", lambda *a, **k: pytest.fail("loaded"))
    cases = [(tmp_path / "file", "--out is a file. Received: --out="),
             (tmp_path / "file" / "eval", "--out lies inside a file. Received: --out="),
             (read_only / "eval", "--out is not writable. Received: --out=")]
    if os.geteuid() == 0:  # root writes anyway: let the folder refuse as a read-only one would
        import tempfile

        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if str(dir).startswith(str(read_only)):
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    for out, message in cases:
        assert evaluate_cli.evaluate_main([str(run[0]), "--data-dir", str(images), "--out", str(out)]) == 2
        err = _one_error_line(capsys, "resnet-evaluate")
        assert f"resnet-evaluate: error: {message}'{out}'" in err, err
    assert "(Permission denied in '" in err and err.endswith("expected a folder this user can write to.\n")


def test_a_cut_short_keras_file_is_one_error_line(run, images, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run[0], folder, ignore=shutil.ignore_patterns("export"))
    content = (folder / "best.keras").read_bytes()
    (folder / "best.keras").write_bytes(content[: len(content) // 3])
    for model in (folder, folder / "best.keras"):
        assert evaluate_cli.evaluate_main([str(model), "--data-dir", str(images), "--out",
                                           str(tmp_path / "o")]) == 2
        err = _one_error_line(capsys, "resnet-evaluate")
        assert (f"error: '{folder / 'best.keras'}' is not a complete .keras file "
                f"({len(content) // 3} bytes, not a zip archive: cut short or another format)") in err


def test_predict_on_a_folder_with_a_broken_link_classifies_the_rest(run, images, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(images / "cat", folder)
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "loop").symlink_to(".")
    assert evaluate_cli.predict_main([str(run[0] / "export" / "tiny"), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["file"] for r in json.loads(captured.out)] == [str(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
                                                            for i in range(PER_CLASS)]
    assert captured.err == ""


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_evaluate_writes_the_most_confident_errors(run, images, tmp_path, kind, monkeypatch):
    folder, model = run
    source = folder if kind == "keras" else folder / "export" / "tiny"
    shown = {}
    real = evaluate_cli.error_gallery

    def spy(images_, true, pred, probs, class_names, path, heatmaps=None, count=16):
        shown.update(true=list(true), pred=list(pred), heatmaps=heatmaps, images=images_)
        return real(images_, true, pred, probs, class_names, path, heatmaps, count)

    monkeypatch.setattr(evaluate_cli, "error_gallery", spy)
    argv = [str(source), "--data-dir", str(images), "--out", str(tmp_path / "e")]
    assert evaluate_cli.evaluate_main(argv + (["--explain"] if kind == "keras" else [])) == 0
    assert (tmp_path / "e" / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, labels, probabilities = _expected(model, images)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    expected = wrong[np.argsort(-confidence, kind="stable")][:16]
    assert shown["true"] == labels[expected].tolist() and shown["pred"] == predicted[expected].tolist()
    assert shown["images"].dtype == np.uint8 and shown["images"].shape[1:] == (SIZE, SIZE, 3)
    if kind == "keras":
        assert shown["heatmaps"] is not None and len(shown["heatmaps"]) == len(expected)


def test_flip_tta_averages_an_image_with_its_mirror(run, images, tmp_path):
    folder, model = run
    out = tmp_path / "tta"
    assert evaluate_cli.evaluate_main([str(folder), "--data-dir", str(images), "--out", str(out),
                                       "--tta", "flip"]) == 0
    files, labels, _ = data.list_image_folder(images)
    batch = np.stack([data.preprocess_for_eval(data.decode_image(tf.io.read_file(f)), SIZE, "cifar")
                      for f in files])
    labels = np.asarray([CLASSES.index(sorted(CLASSES)[i]) for i in labels])
    scores = model(batch, training=False).numpy() + model(batch[:, :, ::-1], training=False).numpy()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx((scores.argmax(axis=1) == labels).mean())


@pytest.mark.parametrize("tta", ["flip", "flip-shift"])
def test_tta_scores_average_the_views_a_cifar_run_trains_on(tta):
    # Each view is a crop the cifar recipe trains on: the image padded with black (pixel
    # value 0), cut out one pixel off along a diagonal, maybe mirrored.
    model = build_resnet(20, input_shape=(SIZE, SIZE, 3), classes=len(CLASSES))
    raw = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(6) % len(CLASSES)
    seen = []
    metrics.evaluate_model(model, [(data.normalize(raw).numpy(), labels)], CLASSES, tta=tta,
                           on_batch=lambda images, labels, scores: seen.append(scores))
    padded = np.pad(raw, [(0, 0), (1, 1), (1, 1), (0, 0)])
    offsets = [(0, 0, 4)] + ([(-1, -1, 1), (1, 1, 1), (-1, 1, 1), (1, -1, 1)]
                             if tta == "flip-shift" else [])
    expected = 0
    for dy, dx, weight in offsets:
        view = data.normalize(padded[:, 1 + dy:1 + dy + SIZE, 1 + dx:1 + dx + SIZE]).numpy()
        for each in (view, view[:, :, ::-1]):
            expected = expected + weight * model(each, training=False).numpy()
    expected /= 2 * sum(weight for _, _, weight in offsets)
    np.testing.assert_allclose(seen[0], expected, rtol=1e-5, atol=1e-6)


def test_hold_out_reproduces_the_runs_own_metrics(image_folder_factory, tmp_path):
    images = image_folder_factory(per_class=10, size=SIZE)
    out = tmp_path / "run"
    # In-process: a fresh process would add only TensorFlow's start-up. tf-defaults: no
    # CPU environment to set, so the command never restarts itself (and pytest with it).
    assert train_cli.main(["--data-dir", str(images), "--depth", "20", "--epochs", "1",
                           "--batch-size", "8", "--val-split", "0.3", "--split-seed", "3",
                           "--tta", "flip", "--precision", "float32", "--no-export",
                           "--cpu-config", "tf-defaults", "--out", str(out)]) == 0
    assert evaluate_cli.evaluate_main([str(out / "last.keras"), "--hold-out", "--tta", "flip",
                                       "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert again["examples"] == trained["examples"] == 9  # 3 of 10 images of each class
    for key in ("top1", "top5", "confusion_matrix"):
        assert again[key] == trained[key]
    assert "split seed 3" in again["data"]
    # The very images split seed 3 held out, whatever the model predicts on them.
    seen = []
    evaluate.evaluate(evaluate.load_classifier(str(out / "last.keras")), hold_out=True,
                      errors=lambda batch, labels, scores: seen.extend(np.asarray(batch)))
    files, labels, _ = data.list_image_folder(images)
    held_out = np.asarray(files)[val_mask(np.asarray(labels), 0.3, 3)]
    expected = [data.preprocess_for_eval(data.decode_image(tf.io.read_file(f)), SIZE, "cifar")
                for f in held_out]
    assert sorted(x.numpy().tobytes() for x in expected) == sorted(x.tobytes() for x in seen)


def test_hold_out_needs_a_run(run, images, tmp_path, capsys):
    folder, _ = run  # a run folder whose config.json does not name its data
    assert evaluate_cli.evaluate_main([str(folder), "--hold-out", "--out", str(tmp_path / "x")]) == 2
    assert "--hold-out needs the training run's config.json" in _one_error_line(capsys, "resnet-evaluate")
    assert evaluate_cli.evaluate_main([str(folder / "export" / "tiny"), "--hold-out",
                                       "--out", str(tmp_path / "x")]) == 2
    assert "--hold-out needs the Keras model" in _one_error_line(capsys, "resnet-evaluate")
    assert not (tmp_path / "x").exists()


def test_tta_and_explain_need_the_keras_model(run, images, tmp_path, capsys):
    folder, _ = run
    for flag in (["--tta", "flip"], ["--explain"]):
        argv = [str(folder / "export" / "tiny"), "--data-dir", str(images), "--out", str(tmp_path / "x")]
        assert evaluate_cli.evaluate_main(argv + flag) == 2
        assert "needs the Keras model" in _one_error_line(capsys, "resnet-evaluate")
