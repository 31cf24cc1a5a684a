"""The SavedModel from `export_serving_model` is what TF Serving and its clients rely on.

One tiny ResNet-20 (16x16 inputs, 3 classes, BatchNorm statistics randomised so folding
them matters) is exported once per module; the tests check its signatures through
`saved_model_cli`, serve it in a process that never imports resnet_tf, compare it with
the Keras model on the evaluation pipeline, send it bad requests, and check versioning.
"""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batchnorm
from PIL import Image

from resnet_tf import build_resnet, data, export
from resnet_tf.cli import export as export_cli
from resnet_tf.errors import ExportError
from resnet_tf.export import export_serving_model, header_shape, inference_model

SIZE = 16
CLASSES = ["cat", "dog", "bird"]
TOLERANCE = 1e-4


def _tiny_model(**kwargs):
    keras.utils.set_random_seed(0)
    return randomise_batchnorm(build_resnet(20, input_shape=(SIZE, SIZE, 3), classes=3, **kwargs))


def _encode(array, fmt, mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _photo(height, width, seed=0):
    """A smooth random image: compresses like a photo, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("export") / "tiny"
    version_dir = export_serving_model(model, base, class_names=CLASSES, image_size=SIZE,
                                       preset="cifar")
    return version_dir


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(exported).signatures["serving_default"]


@pytest.fixture(scope="module")
def images():
    rgb = _photo(20, 28)
    return {
        "jpeg": _encode(rgb, "JPEG", quality=90),
        "png": _encode(rgb, "PNG"),
        "grayscale_png": _encode(rgb[..., 0], "PNG"),
        "rgba_png": _encode(np.dstack([rgb, rgb[..., :1]]), "PNG"),
        "palette_png": _encode(rgb, "PNG", mode="P"),
        "png_16bit": tf.io.encode_png(tf.constant(rgb.astype(np.uint16) * 257)).numpy(),
        "cmyk_jpeg": _encode(rgb, "JPEG", mode="CMYK"),
        "grayscale_jpeg": _encode(rgb[..., 1], "JPEG"),
        "bmp": _encode(rgb, "BMP"),
        "gif": _encode(rgb, "GIF"),
        "webp_lossy": _encode(rgb, "WEBP", quality=80),
        "webp_lossless": _encode(rgb, "WEBP", lossless=True),
    }


def _reference(model, encoded, size=SIZE, preset="cifar"):
    """The Keras model on the evaluation pipeline."""
    batch = tf.stack([data.preprocess_for_eval(data.decode_image(e), size, preset) for e in encoded])
    return model(batch, training=False).numpy()


def _signatures_from_cli(text):
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} from `saved_model_cli show --all`."""
    found = {}
    for block in text.split("signature_def['")[1:]:
        name = block.split("'", 1)[0]
        entries = {"inputs": {}, "outputs": {}}
        for kind, key, dtype, shape in re.findall(
                r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\S+(?: \S+)*?)\n",
                block):
            entries[kind][key] = (dtype, shape)
        found[name] = entries
    return found


def test_saved_model_cli_lists_both_signatures(exported):
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(command + ["show", "--all", "--dir", exported],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    signatures = _signatures_from_cli(result.stdout)
    outputs = {
        "probabilities": ("DT_FLOAT", "(-1, 3)"),
        "classes": ("DT_INT32", "(-1, 3)"),
        "scores": ("DT_FLOAT", "(-1, 3)"),
        "class_names": ("DT_STRING", "(-1, 3)"),
    }
    assert signatures["serving_default"] == {
        "inputs": {"image_bytes": ("DT_STRING", "(-1)")}, "outputs": outputs}
    assert signatures["serving_pixels"] == {
        "inputs": {"images": ("DT_UINT8", f"(-1, {SIZE}, {SIZE}, 3)")}, "outputs": outputs}
    assert "Method name is: tensorflow/serving/predict" in result.stdout


def test_fresh_process_without_resnet_tf_serves_like_evaluation(model, exported, images, tmp_path):
    encoded = [images["jpeg"], images["png"]]
    for i, e in enumerate(encoded):
        (tmp_path / f"{i}.img").write_bytes(e)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(exported)!r}).signatures["serving_default"]
        files = [open({str(tmp_path)!r} + f"/{{i}}.img", "rb").read() for i in range(2)]
        out = serve(image_bytes=tf.constant(files))
        pixels = tf.saved_model.load({str(exported)!r}).signatures["serving_pixels"]
        assert "resnet_tf" not in sys.modules, sorted(m for m in sys.modules if "resnet" in m)
        out = {{k: v.numpy() for k, v in out.items()}}
        out["class_names"] = out["class_names"].astype("S")
        np.savez({str(tmp_path / "out.npz")!r}, **out)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")

    expected = _reference(model, encoded)
    assert out["probabilities"].dtype == np.float32
    assert np.abs(out["probabilities"] - expected).max() <= TOLERANCE
    # top-k: k = 5 capped at the 3 classes, in descending order, names matching indices.
    order = np.argsort(-expected, axis=1)
    np.testing.assert_array_equal(out["classes"], order)
    np.testing.assert_allclose(out["scores"], np.take_along_axis(expected, order, 1), atol=TOLERANCE)
    assert out["class_names"].tolist() == [[CLASSES[i].encode() for i in row] for row in order]


def test_every_supported_format_is_decoded_like_evaluation(model, served, images):
    names = list(images)
    out = served(image_bytes=tf.constant([images[n] for n in names]))
    expected = _reference(model, [images[n] for n in names])
    difference = np.abs(out["probabilities"].numpy() - expected).max(axis=1)
    assert dict(zip(names, difference.tolist())) == pytest.approx(dict.fromkeys(names, 0.0), abs=TOLERANCE)


def test_pixels_signature_takes_uint8_at_the_training_size(model, exported):
    pixels = tf.saved_model.load(exported).signatures["serving_pixels"]
    batch = np.stack([_photo(SIZE, SIZE, seed) for seed in range(3)])
    out = pixels(images=tf.constant(batch))
    expected = model(data.normalize(batch), training=False).numpy()
    assert np.abs(out["probabilities"].numpy() - expected).max() <= TOLERANCE


def test_imagenet_preset_resizes_and_crops_like_evaluation(tmp_path):
    model = randomise_batchnorm(build_resnet(20, input_shape=(32, 32, 3), classes=4))
    version = export_serving_model(model, tmp_path, class_names=list("abcd"), image_size=32,
                                   preset="imagenet", top_k=2)
    serve = tf.saved_model.load(version).signatures["serving_default"]
    encoded = [_encode(_photo(45, 70), "JPEG"), _encode(_photo(90, 40, 1), "PNG")]
    out = serve(image_bytes=tf.constant(encoded))
    expected = _reference(model, encoded, 32, "imagenet")
    assert np.abs(out["probabilities"].numpy() - expected).max() <= TOLERANCE
    assert out["classes"].shape == (2, 2)


BAD_REQUESTS = {
    "empty": (b"", "image_bytes is empty"),
    "not an image": (b"this is not an image at all", "is not a JPEG, PNG, GIF, BMP or WebP image"),
    "truncated jpeg": (None, "Invalid JPEG data"),
    "corrupt png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "PNG"),
    "too many bytes": (b"\xff\xd8\xff" + b"\0" * export.savedmodel.MAX_IMAGE_BYTES, "larger than the limit of"),
    "too many pixels (png header)": (None, "larger than the limit of 50000000 pixels"),
    "too many pixels (jpeg header)": (None, "larger than the limit of 50000000 pixels"),
}


def _huge_png_header():
    """A PNG whose header claims 10000 x 10000 pixels: rejected before decoding."""
    png = bytearray(_encode(_photo(8, 8), "PNG"))
    png[16:24] = (10000).to_bytes(4, "big") * 2
    return bytes(png)


def _huge_jpeg_header():
    jpeg = bytearray(_encode(_photo(8, 8), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (9000).to_bytes(2, "big") * 2  # height, width
    return bytes(jpeg)


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_fails_with_its_reason_and_the_model_keeps_serving(served, images, case):
    encoded, reason = BAD_REQUESTS[case]
    encoded = {
        "truncated jpeg": images["jpeg"][: len(images["jpeg"]) // 2],
        "too many pixels (png header)": _huge_png_header(),
        "too many pixels (jpeg header)": _huge_jpeg_header(),
    }.get(case, encoded)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(reason)):
        served(image_bytes=tf.constant([images["png"], encoded]))
    out = served(image_bytes=tf.constant([images["png"]]))
    assert out["probabilities"].shape == (1, 3)


def test_a_12_megapixel_photo_is_accepted(served):
    photo = _encode(_photo(3000, 4000), "JPEG", quality=70)
    out = served(image_bytes=tf.constant([photo]))
    assert out["probabilities"].shape == (1, 3)


def test_header_shape_reads_every_format_before_decoding(images):
    for name, encoded in images.items():
        height, width = header_shape(tf.constant(encoded))
        assert (int(height), int(width)) == (20, 28), name
    webp_alpha = _encode(np.dstack([_photo(20, 28), _photo(20, 28)[..., :1]]), "WEBP")  # VP8X
    assert webp_alpha[12:16] == b"VP8X"
    assert [int(v) for v in header_shape(tf.constant(webp_alpha))] == [20, 28]
    assert [int(v) for v in header_shape(tf.constant(b"nope"))] == [-1, -1]


def _graph_nodes(version_dir):
    """Every node of a SavedModel's graph and of its functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    return list(graph.node) + [n for f in graph.library.function for n in f.node_def]


def _half_precision_ops(version_dir):
    from tensorflow.core.framework import types_pb2

    half = {types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
    return sorted({n.op for n in _graph_nodes(version_dir) for a in n.attr.values()
                   if a.type in half or half & set(a.list.type)})


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_model_exports_a_float32_graph(policy, tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = _tiny_model()
        # Still under the mixed policy, as when the trainer exports at the end of a run.
        version = export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE,
                                       preset="cifar")
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("conv1_conv").compute_dtype != "float32"
    assert _half_precision_ops(version) == []
    batch = np.stack([_photo(SIZE, SIZE, seed) for seed in range(2)])
    out = tf.saved_model.load(version).signatures["serving_pixels"](images=tf.constant(batch))
    # float32 weights of a mixed model; the mixed model itself differs by rounding only.
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               model(data.normalize(batch)).numpy(), atol=0.05)


def _graph_op_dtypes(version_dir, op):
    """The dtypes (attr T) of every `op` node in a SavedModel's graph and functions."""
    from tensorflow.core.framework import types_pb2

    return sorted({types_pb2.DataType.Name(n.attr["T"].type) for n in _graph_nodes(version_dir)
                   if n.op == op})


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_exported_weights_are_frozen_and_bfloat16_computes_convolutions_in_bfloat16(
        model, precision, tmp_path):
    version = export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE,
                                   preset="cifar", precision=precision)
    loaded = tf.saved_model.load(version)
    # Only the metadata is left as variables; the network's weights are graph constants.
    saved = tf.train.list_variables(os.path.join(version, "variables", "variables"))
    assert sorted(name.split("/")[0] for name, _ in saved if name.endswith("VARIABLE_VALUE")) == [
        "class_names", "image_size", "preset", "transform", "tta"]
    assert _graph_op_dtypes(version, "Conv2D") == [
        {"float32": "DT_FLOAT", "bfloat16": "DT_BFLOAT16"}[precision]]
    batch = np.stack([_photo(SIZE, SIZE, seed) for seed in range(4)])
    out = loaded.signatures["serving_pixels"](images=tf.constant(batch))
    assert out["probabilities"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    reference = model(data.normalize(batch), training=False).numpy()
    # float32: the folded network; bfloat16: 8-bit mantissas through 20 layers.
    atol = {"float32": TOLERANCE, "bfloat16": 0.05}[precision]
    np.testing.assert_allclose(out["probabilities"].numpy(), reference, atol=atol)


def test_export_rejects_an_unknown_precision(model, tmp_path):
    with pytest.raises(ExportError, match=r"Unknown precision\. Received: precision='int8'; "
                                          r"expected one of 'float32', 'bfloat16', 'float16'"):
        export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE,
                             preset="cifar", precision="int8")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs", [{}, {"variant": "v2"}, {"variant": "v1", "shortcut": "B"}],
                         ids=["v1.5", "v2", "v1-projection"])
def test_batchnorm_folding_keeps_outputs(kwargs):
    model = _tiny_model(**kwargs)
    weights = model.get_weights()
    batch = data.normalize(np.stack([_photo(SIZE, SIZE, seed) for seed in range(4)]))
    folded = inference_model(model, fold_batchnorm=True)
    plain = inference_model(model, fold_batchnorm=False)
    bn_count = lambda m: sum(isinstance(l, keras.layers.BatchNormalization) for l in m.layers)
    assert bn_count(plain) == bn_count(model)
    assert bn_count(folded) < bn_count(model)
    if not kwargs:
        assert bn_count(folded) == 0  # every BatchNorm of v1.5 follows a convolution
    reference = model(batch, training=False).numpy()
    assert np.abs(folded(batch, training=False).numpy() - reference).max() <= TOLERANCE
    assert np.abs(plain(batch, training=False).numpy() - reference).max() <= TOLERANCE
    # The original model is untouched.
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))


def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): (
            os.stat(os.path.join(root, name)).st_mtime_ns,
            hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest())
        for root, _, names in os.walk(folder) for name in names
    }


def test_versions_count_up_and_existing_ones_are_never_touched(model, tmp_path):
    first = export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE, preset="cifar")
    before = _snapshot(first)
    second = export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE, preset="cifar")
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
    with pytest.raises(ExportError, match="Version 1 already exists"):
        export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE, preset="cifar",
                             version=1)
    assert _snapshot(first) == before
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # no temporary folder left behind


def test_a_failed_export_leaves_no_version_and_no_temporary_folder(model, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE, preset="cifar")
    assert os.listdir(tmp_path) == []


def test_export_rejects_mismatched_class_names(model, tmp_path):
    with pytest.raises(ExportError, match="3 outputs but 2 class names"):
        export_serving_model(model, tmp_path, class_names=["a", "b"], image_size=SIZE, preset="cifar")


def test_command_exports_a_run_folder_and_refuses_an_existing_version(model, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    (run / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (run / "config.json").write_text(json.dumps({"config": {"image_size": SIZE, "preset": "cifar"}}))

    assert export_cli.main([str(run), "--top-k", "2"]) == 0
    version = run / "export" / model.name / "1"
    assert capsys.readouterr().out.strip() == str(version)
    loaded = tf.saved_model.load(str(version))
    assert [c.decode() for c in loaded.class_names.numpy()] == CLASSES
    assert (int(loaded.image_size), loaded.preset.numpy().decode()) == (SIZE, "cifar")
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([_encode(_photo(9, 9), "PNG")]))
    assert out["class_names"].shape == (1, 2)

    assert export_cli.main([str(run), "--version", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnet-export: error: Version 1 already exists") and err.count("\n") == 1

    assert export_cli.main([str(run), "--precision", "bfloat16"]) == 0
    version = run / "export" / model.name / "2"
    assert capsys.readouterr().out.strip() == str(version)
    assert _graph_op_dtypes(str(version), "Conv2D") == ["DT_BFLOAT16"]


def test_pixels_signature_refuses_images_of_another_size(exported):
    # The signature declares (N, 16, 16, 3), but a restored signature (and TF Serving)
    # passes any shape on; a fully convolutional network would answer it.
    pixels = tf.saved_model.load(exported).signatures["serving_pixels"]
    for shape in [(1, 24, 24, 3), (2, 16, 12, 3), (1, 16, 16, 4), (16, 16, 3)]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=re.escape(f"images must have the shape (N, {SIZE}, {SIZE}, 3) "
                                           "of the images the model was trained on; received "
                                           f"shape] [{' '.join(map(str, shape))}]")):
            pixels(images=tf.zeros(shape, tf.uint8))
    assert pixels(images=tf.zeros((2, SIZE, SIZE, 3), tf.uint8))["probabilities"].shape == (2, 3)


def _modes(folder):
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = oct(os.stat(path).st_mode & 0o777)
    return found


@pytest.mark.parametrize("umask, folders, files", [(0o022, "0o755", "0o644"),
                                                    (0o077, "0o700", "0o600")],
                         ids=["umask-022", "umask-077"])
def test_versions_get_the_permissions_of_the_users_umask(model, tmp_path, umask, folders, files):
    previous = os.umask(umask)
    try:
        version = export_serving_model(model, tmp_path / "tiny", class_names=CLASSES,
                                       image_size=SIZE, preset="cifar", marker={"run": "x"})
    finally:
        os.umask(previous)
    modes = _modes(version)
    assert {"saved_model.pb", "variables", "variables/variables.index",
            "assets.extra/resnet_tf_run.json"} <= set(modes)
    assert oct(os.stat(version).st_mode & 0o777) == folders
    assert modes == {name: folders if os.path.isdir(os.path.join(version, name)) else files
                     for name in modes}


# --- Half-written versions and unusable export folders --------------------------------------


def _copy_version(exported, base, version):
    shutil.copytree(exported, base / str(version))
    return base / str(version)


def _cut_short(path, keep=0.5):
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])


def test_a_truncated_version_is_passed_over_for_the_latest_complete_one(exported, tmp_path):
    base = tmp_path / "tiny"
    _copy_version(exported, base, 1)
    for version, damage in [(2, "pb"), (3, "data"), (4, "index"), (5, "tail")]:
        folder = _copy_version(exported, base, version)
        if damage == "pb":
            _cut_short(folder / "saved_model.pb")
        elif damage == "tail":  # even the last few bytes
            _cut_short(folder / "saved_model.pb", keep=0.999)
        else:
            name = "variables.data-00000-of-00001" if damage == "data" else "variables.index"
            (folder / "variables" / name).write_bytes(b"")
        assert not export.savedmodel.is_complete_saved_model(str(folder)), damage
    assert export.savedmodel.is_complete_saved_model(exported)

    with pytest.warns(UserWarning, match=r"Skipped incomplete version\(s\) 2, 3, 4, 5 in .*; "
                                         r"using version 1\."):
        assert export.latest_version_dir(base) == str(base / "1")
    with pytest.raises(ExportError, match=r"SavedModel '.*5' is incomplete \(saved_model\.pb cut "
                                          r"short, or variables/ missing or empty\)"):
        export.latest_version_dir(base / "5")
    shutil.rmtree(base / "1")
    with pytest.raises(ExportError, match="is not a SavedModel: expected a folder with "
                                          "saved_model.pb or numeric version folders holding "
                                          "a complete one"):
        export.latest_version_dir(base)


def test_check_export_dir_finds_a_file_or_an_unwritable_folder(tmp_path, monkeypatch):
    from resnet_tf.export.savedmodel import check_export_dir

    (tmp_path / "file").write_text("x")
    check_export_dir(tmp_path / "new" / "deeper")  # creatable: fine, and nothing is created
    check_export_dir(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["file"]
    with pytest.raises(ExportError) as error:
        check_export_dir(tmp_path / "file")
    assert str(error.value) == (f"--export-dir is a file. Received: --export-dir='{tmp_path}/file'; "
                                "expected a folder or a path where one can be created.")
    with pytest.raises(ExportError, match=r"--export-dir lies inside a file\. Received: "
                                          r"--export-dir='.*/file/models' \('.*/file' is a file\)"):
        check_export_dir(tmp_path / "file" / "models")

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make the folder refuse as a read-only one would
        import tempfile

        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ExportError, match=r"--export-dir is not writable\. Received: "
                                          r"--export-dir='.*/read_only/models' \(Permission "
                                          r"denied in '.*/read_only'\); expected a folder this "
                                          r"user can write to\."):
        check_export_dir(read_only / "models")


def test_command_finds_a_bad_export_dir_or_a_cut_short_keras_file_in_one_line(
        model, tmp_path, capsys, monkeypatch):
    model.save(tmp_path / "model.keras")
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(export_cli, "load_checkpoint", lambda *a, **k: pytest.fail("loaded"))
    assert export_cli.main([str(tmp_path / "model.keras"), "--export-dir",
                            str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err == (f"resnet-export: error: --export-dir is a file. Received: --export-dir="
                   f"'{tmp_path}/file'; expected a folder or a path where one can be created.\n")
    monkeypatch.undo()

    _cut_short(tmp_path / "model.keras", keep=0.9)
    size = (tmp_path / "model.keras").stat().st_size
    assert export_cli.main([str(tmp_path / "model.keras"), "--export-dir",
                            str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"resnet-export: error: '{tmp_path}/model.keras' is not a complete .keras file "
                   f"({size} bytes, not a zip archive: cut short or another format); expected a "
                   "file saved by model.save or written by train.py.\n")
    assert not (tmp_path / "out").exists()


# --- Load: many threads, one SavedModel --------------------------------------------------------


THREADS, REQUESTS_PER_THREAD = 8, 200


def test_concurrent_requests_are_answered_as_one_at_a_time(served, images):
    """8 threads send 200 requests each, good and bad mixed: every good answer equals the
    single-threaded one, every bad request fails with its own reason, nothing crosses."""
    import concurrent.futures

    good = [images[n] for n in ("jpeg", "png", "bmp", "gif", "webp_lossy", "grayscale_jpeg")]
    good.append(_encode(_photo(64, 48, seed=3), "JPEG"))
    bad = [(b"", "image_bytes is empty"),
           (b"this is not an image at all", "is not a JPEG, PNG, GIF, BMP or WebP image"),
           (_huge_png_header(), "larger than the limit of 50000000 pixels"),
           (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "PNG")]

    def request(thread, i):
        """(images, expected error or None): one, two or three images, some with a bad one."""
        rng = np.random.default_rng(thread * 100_000 + i)
        batch = [good[j] for j in rng.choice(len(good), rng.integers(1, 4))]
        if rng.random() < 0.3:
            encoded, reason = bad[rng.integers(len(bad))]
            batch.insert(int(rng.integers(len(batch) + 1)), encoded)
            return batch, reason
        return batch, None

    plan = [[request(t, i) for i in range(REQUESTS_PER_THREAD)] for t in range(THREADS)]
    # Single-threaded answers, one per distinct request.
    expected = {}
    for batch, reason in (r for thread in plan for r in thread):
        key = tuple(batch)
        if reason is None and key not in expected:
            expected[key] = {k: v.numpy() for k, v in served(image_bytes=tf.constant(batch)).items()}

    def run(thread):
        problems, answered, rejected = [], 0, 0
        for i, (batch, reason) in enumerate(plan[thread]):
            try:
                out = served(image_bytes=tf.constant(batch))
            except tf.errors.InvalidArgumentError as error:
                rejected += 1
                if reason is None or reason not in error.message:
                    problems.append((thread, i, "rejected", reason, error.message[:200]))
                continue
            answered += 1
            if reason is not None:
                problems.append((thread, i, "answered a bad request", reason))
                continue
            want = expected[tuple(batch)]
            for key, value in out.items():
                if not np.array_equal(value.numpy(), want[key]):
                    problems.append((thread, i, key, np.abs(value.numpy() - want[key]).max()
                                     if key in ("probabilities", "scores") else "differs"))
        return problems, answered, rejected

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, range(THREADS)))

    assert [p for problems, _, _ in results for p in problems] == []
    answered = sum(a for _, a, _ in results)
    rejected = sum(r for _, _, r in results)
    assert answered + rejected == THREADS * REQUESTS_PER_THREAD
    assert rejected == sum(reason is not None for thread in plan for _, reason in thread) > 0
