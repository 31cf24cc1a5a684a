"""Named pretrained weights: the facts match their sources, downloads are checked.

No test reaches the internet: downloads come from a local HTTP server the test starts,
and "offline" is a failing DNS lookup.
"""

import dataclasses
import functools
import hashlib
import http.server
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
from conftest import randomise_batchnorm

from resnet_tf import build_resnet, files
from resnet_tf.errors import WeightsDownloadError
from resnet_tf.models import registry, torch_weights
from resnet_tf.models.registry import WEIGHTS, get_weights, list_weights, resolve_weights
from resnet_tf.models.resnet import DEPTHS

_BUILD_ARGUMENTS = {"depth", "variant", "groups", "width_per_group", "width_multiplier",
                    "se_ratio"}


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_every_entry_carries_its_facts(name):
    entry = WEIGHTS[name]
    assert entry.name == f"{entry.source}:{entry.architecture}.{entry.tag}"
    assert entry.build["depth"] in DEPTHS and set(entry.build) <= _BUILD_ARGUMENTS
    assert entry.url.startswith("https://")
    assert os.sep not in entry.file_name
    if entry.source == "keras":
        assert len(entry.file_hash) == 32  # md5, as keras.applications publishes
    elif entry.file_hash is not None:  # the SHA-256 prefix torch hub and timm put in the name
        assert entry.file_name.endswith(f"-{entry.file_hash}.pth")
        assert len(entry.file_hash) == 8 and entry.unpinned is None
    pre = entry.preprocessing
    assert pre.mode in ("torch", "caffe") and len(pre.mean) == 3
    assert (pre.std is None) == (pre.mode == "caffe")
    assert pre.resize is None or pre.resize > pre.crop
    for top1 in (entry.top1, entry.test_top1):
        assert top1 is None or 65 < top1 < 85


@pytest.mark.parametrize("name", [n for n, e in WEIGHTS.items() if e.source == "timm"])
def test_timm_entries_are_pinned_or_say_why_not(name):
    entry = WEIGHTS[name]
    if entry.file_hash is None:  # a branch of the Hugging Face Hub
        assert "/resolve/main/" in entry.url and "no hash" in entry.unpinned
        assert entry.format == "safetensors"
    else:  # a GitHub release file, named with its hash as torchvision's are
        assert entry.url.startswith("https://github.com/") and "/releases/download/" in entry.url
        assert entry.url.endswith("/" + entry.file_name) and entry.unpinned is None
        assert entry.format == "torch"


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_every_entry_has_a_published_top1(name):
    entry = WEIGHTS[name]
    # No source publishes the ResNetV2 entries at their train size: timm's test size then.
    assert entry.top1 is not None or (entry.source == "timm" and entry.test_top1 is not None)


# timm's results table as published (results/results-imagenet.csv of
# huggingface/pytorch-image-models at 0173a139a2c66db3a41ebfe1d8ac4fb02483642e): the
# rows of our entries, columns model, top1, img_size, crop_pct.
_TIMM_RESULTS = """\
resnet18.a1_in1k,73.158,288,1.000
resnet34.a1_in1k,77.918,288,1.000
resnet50.a1_in1k,81.214,288,1.000
resnet101.a1_in1k,82.322,288,1.000
resnet152.a1_in1k,82.732,288,1.000
resnet50d.a1_in1k,81.450,288,1.000
resnet101d.ra2_in1k,83.016,320,1.000
seresnet50.a1_in1k,81.102,288,1.000
resnext50_32x4d.a1_in1k,81.466,288,1.000
resnetv2_50.a1h_in1k,81.398,288,1.000
resnetv2_101.a1h_in1k,83.002,288,1.000
"""


def test_timm_test_top1_is_timms_results_table():
    table = {}
    for line in _TIMM_RESULTS.splitlines():
        model, top1, size, crop_pct = line.split(",")
        table["timm:" + model] = (float(top1), int(size), float(crop_pct))
    ours = {name: (e.test_top1, e.test_crop, 1.0) for name, e in WEIGHTS.items()
            if e.source == "timm"}
    assert ours == table


def test_file_names_are_unique():
    names = [entry.file_name for entry in WEIGHTS.values()]
    assert len(names) == len(set(names))


def test_list_weights_by_depth():
    assert {e.name for e in list_weights(18)} == {"torchvision:resnet18.IMAGENET1K_V1",
                                                  "timm:resnet18.a1_in1k"}
    assert len(list_weights()) == len(WEIGHTS)


def test_keras_entries_are_keras_applications_files():
    from keras.src.applications import resnet as applications

    for depth in (50, 101, 152):
        entry = WEIGHTS[f"keras:resnet{depth}.imagenet"]
        assert entry.url == applications.BASE_WEIGHTS_PATH + entry.file_name
        assert entry.file_hash == applications.WEIGHTS_HASHES[f"resnet{depth}"][0]
        assert entry.build == dict(depth=depth, variant="v1")


# Prints the sources' own facts as JSON; a separate process, since torchvision and timm
# must not be imported after TensorFlow (see test_torch_weights.py).
_SOURCE_FACTS = textwrap.dedent(
    """
    import json
    import timm
    from torchvision.models import get_model_weights
    from timm.models import get_pretrained_cfg

    facts = {}
    for architecture in %s:
        for weights in get_model_weights(architecture):
            t = weights.transforms()
            facts[f"torchvision:{architecture}.{weights.name}"] = dict(
                url=weights.url, top1=weights.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                resize=t.resize_size[0], crop=t.crop_size[0],
                interpolation=t.interpolation.value, mean=t.mean, std=t.std)
    for name in %s:
        c = get_pretrained_cfg(name).to_dict()
        facts["timm:" + name] = dict(
            hub=c["hf_hub_id"], url=c["url"] or None,
            size=c["input_size"][1], crop_pct=c["crop_pct"],
            test_size=(c["test_input_size"] or (0, None))[1],
            interpolation=c["interpolation"], mean=c["mean"], std=c["std"])
    print(json.dumps(facts))
    """
)


def test_entries_match_torchvision_and_timm():
    if importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("timm") is None:
        pytest.skip("torchvision and timm (the test extra) are not installed")
    torchvision = sorted({e.architecture for e in WEIGHTS.values() if e.source == "torchvision"})
    timm = [f"{e.architecture}.{e.tag}" for e in WEIGHTS.values() if e.source == "timm"]
    result = subprocess.run([sys.executable, "-c", _SOURCE_FACTS % (torchvision, timm)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout)
    ours = {name for name, e in WEIGHTS.items() if e.source == "torchvision"}
    assert ours == {name for name in facts if name.startswith("torchvision:")}  # all of them
    for name, entry in WEIGHTS.items():
        fact, pre = facts.get(name), entry.preprocessing
        if entry.source == "torchvision":
            assert (entry.url, entry.top1) == (fact["url"], fact["top1"]), name
            assert (pre.resize, pre.crop, pre.interpolation) == (
                fact["resize"], fact["crop"], fact["interpolation"]), name
        elif entry.source == "timm":  # the release file where timm names one, else the Hub
            assert entry.url == (fact["url"] or f"https://huggingface.co/{fact['hub']}/"
                                 "resolve/main/model.safetensors"), name
            assert (pre.crop, pre.resize) == (fact["size"],
                                              int(fact["size"] / fact["crop_pct"])), name
            assert (entry.test_crop, pre.interpolation) == (
                fact["test_size"], fact["interpolation"]), name
        else:
            continue
        assert (list(pre.mean), list(pre.std)) == (fact["mean"], fact["std"]), name


def test_short_names_pick_the_architecture_from_the_build_arguments():
    assert get_weights("torchvision:IMAGENET1K_V2", depth=50).name == \
        "torchvision:resnet50.IMAGENET1K_V2"
    assert get_weights("torchvision:IMAGENET1K_V2", depth=50, groups=32,
                       width_per_group=4).name == "torchvision:resnext50_32x4d.IMAGENET1K_V2"
    assert get_weights("keras:imagenet", depth=101, variant="v1").name == \
        "keras:resnet101.imagenet"


def test_unknown_name_suggests_registered_ones():
    with pytest.raises(ValueError) as error:
        get_weights("torchvision:IMAGENET1K_V2", depth=18)
    assert str(error.value) == (
        "Unknown pretrained weights. Received: weights='torchvision:IMAGENET1K_V2'; "
        "expected a registered name fitting build_resnet(18) such as "
        "'torchvision:resnet18.IMAGENET1K_V1' (resnet_tf.models.registry.list_weights() "
        "lists them), or a path to a weights file."
    )


def test_weights_for_another_architecture_are_refused():
    with pytest.raises(ValueError) as error:
        get_weights("timm:resnet50d.a1_in1k", depth=50, variant="v1.5")
    assert str(error.value) == (
        "The weights timm:resnet50d.a1_in1k are for build_resnet(50, variant='d'). "
        "Received: depth=50, variant='v1.5'; expected the same build_resnet arguments."
    )


# --- downloads ---------------------------------------------------------------------

@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def server(tmp_path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving `folder`."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _serve(monkeypatch, server, name, content, file_hash):
    """Points entry `name` at `content` on the local server, with `file_hash`."""
    folder, base = server
    (folder / "weights.bin").write_bytes(content)
    entry = dataclasses.replace(WEIGHTS[name], url=f"{base}/weights.bin", file_hash=file_hash)
    monkeypatch.setitem(WEIGHTS, name, entry)
    return entry


def _assert_one_sentence(message):
    assert "\n" not in message and message.endswith(".")


CONTENT = np.random.default_rng(0).bytes(100_000)
SHA256 = hashlib.sha256(CONTENT).hexdigest()


@pytest.mark.parametrize("file_hash", [SHA256[:8], SHA256], ids=["prefix", "full"])
def test_download_is_checked_then_cached(keras_home, server, monkeypatch, file_hash):
    name = "torchvision:resnet18.IMAGENET1K_V1"
    _serve(monkeypatch, server, name, CONTENT, file_hash)
    path, entry = resolve_weights(name)
    assert path == str(keras_home / "models" / "resnet18-f37072fd.pth")
    assert open(path, "rb").read() == CONTENT and entry.name == name
    assert os.listdir(keras_home / "models") == ["resnet18-f37072fd.pth"]
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns)  # the second time: from the cache
    assert resolve_weights(name)[0] == path


def test_hash_mismatch_is_one_line_and_leaves_nothing(keras_home, server, monkeypatch):
    name = "torchvision:resnet18.IMAGENET1K_V1"
    entry = _serve(monkeypatch, server, name, CONTENT, "0badc0de")
    with pytest.raises(WeightsDownloadError) as error:
        resolve_weights(name)
    assert str(error.value) == (
        f"The download of {entry.url} is not the published file (expected sha256 0badc0de) "
        "and was deleted; download it again, or check a copy yourself and pass "
        "weights='/path/to/resnet18-f37072fd.pth'."
    )
    assert os.listdir(keras_home / "models") == []


def test_offline_fails_fast_with_one_sentence(keras_home, monkeypatch):
    lookups = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: lookups.append(a) or _no_dns())
    timeout = socket.getdefaulttimeout()
    with pytest.raises(WeightsDownloadError) as error:
        resolve_weights("torchvision:IMAGENET1K_V2", depth=50)
    assert len(lookups) == 1  # one try, no retries with back-off
    message = str(error.value)
    assert message.startswith(
        "The weights torchvision:resnet50.IMAGENET1K_V2 are not in the Keras cache "
        f"({keras_home / 'models'}) and could not be downloaded (")
    assert message.endswith(
        "; on a machine with internet download "
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth and pass "
        "weights='/path/to/resnet50-11ad3fa6.pth'.")
    _assert_one_sentence(message)
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert os.listdir(keras_home / "models") == []
    assert socket.getdefaulttimeout() == timeout


def test_stalled_download_times_out(keras_home, monkeypatch):
    # Accepts the connection and never answers: only the socket timeout ends the wait.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    name = "timm:resnet18.a1_in1k"
    monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(
        WEIGHTS[name], url=f"http://127.0.0.1:{silent.getsockname()[1]}/model.safetensors"))
    monkeypatch.setattr(registry, "socket_timeout",
                        functools.partial(files.socket_timeout, 0.5))
    try:
        with pytest.raises(WeightsDownloadError) as error:
            resolve_weights(name)
    finally:
        silent.close()
    assert "timed out" in str(error.value)
    assert os.listdir(keras_home / "models") == []


def test_partial_file_in_the_cache_is_never_trusted(keras_home, server, monkeypatch):
    name = "torchvision:resnet18.IMAGENET1K_V1"
    _serve(monkeypatch, server, name, CONTENT, SHA256[:8])
    (keras_home / "models").mkdir(parents=True)
    cached = keras_home / "models" / "resnet18-f37072fd.pth"
    cached.write_bytes(CONTENT[:1000])  # what a killed download would leave
    path, _ = resolve_weights(name)
    assert path == str(cached) and cached.read_bytes() == CONTENT


def test_unpinned_timm_files_must_be_complete(keras_home, server, monkeypatch):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    whole = safetensors_numpy.save({"fc.weight": np.ones((10, 8), "float32")})
    name = "timm:resnetv2_50.a1h_in1k"
    assert WEIGHTS[name].file_hash is None
    _serve(monkeypatch, server, name, whole, None)
    path, _ = resolve_weights(name)
    assert open(path, "rb").read() == whole
    os.remove(path)
    _serve(monkeypatch, server, name, whole[:-10], None)
    with pytest.raises(WeightsDownloadError) as error:
        resolve_weights(name)
    assert "is not the published file (expected a complete file) and was deleted" in \
        str(error.value)
    assert os.listdir(keras_home / "models") == []


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_HOME", str(blocker / "keras"))  # root ignores permissions
    with pytest.raises(WeightsDownloadError) as error:
        resolve_weights("keras:imagenet", depth=50, variant="v1")
    message = str(error.value)
    assert message.startswith(f"The Keras cache folder {blocker / 'keras' / 'models'} is "
                              "not writable (")
    assert message.endswith(
        "so the weights keras:resnet50.imagenet cannot be downloaded; set KERAS_HOME to a "
        "writable folder, or download https://storage.googleapis.com/tensorflow/"
        "keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5 and pass "
        "weights='/path/to/resnet50_weights_tf_dim_ordering_tf_kernels.h5'.")
    _assert_one_sentence(message)


def _state_dict_of(model):
    """The torch state dict that loads into `model`: the converter run backwards."""
    state = {}
    for layer_name, module in torch_weights.torch_names(model).items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.BatchNormalization):
            for ours, theirs in (("gamma", "weight"), ("beta", "bias"),
                                 ("moving_mean", "running_mean"),
                                 ("moving_variance", "running_var")):
                state[f"{module}.{theirs}"] = keras.ops.convert_to_numpy(getattr(layer, ours))
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        kernel = kernel.T if kernel.ndim == 2 else kernel.transpose(3, 2, 0, 1)
        # safetensors.numpy writes the memory of a transposed view as it lies.
        state[f"{module}.weight"] = np.ascontiguousarray(kernel)
        if layer.use_bias:
            state[f"{module}.bias"] = keras.ops.convert_to_numpy(layer.bias)
    return state


@pytest.fixture
def fake_download(monkeypatch):
    """`serve(content)`: from then on keras.utils.get_file "downloads" `content`, without
    a network; returns the list of URLs asked for."""
    asked = []

    def serve(content):
        def get_file(fname, origin, cache_subdir="datasets", cache_dir=None, **kwargs):
            asked.append(origin)
            path = os.path.join(cache_dir, cache_subdir, fname)
            with open(path, "wb") as f:
                f.write(content)
            return path

        monkeypatch.setattr(keras.utils, "get_file", get_file)
        return asked

    return serve


def test_pinned_timm_file_with_another_hash_is_refused(keras_home, fake_download):
    asked = fake_download(CONTENT)
    with pytest.raises(WeightsDownloadError) as error:
        resolve_weights("timm:resnet50.a1_in1k")
    url = ("https://github.com/rwightman/pytorch-image-models/releases/download/"
           "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth")
    assert asked == [url]
    assert str(error.value) == (
        f"The download of {url} is not the published file (expected sha256 14fe96d1) and "
        "was deleted; download it again, or check a copy yourself and pass "
        "weights='/path/to/resnet50_a1_0-14fe96d1.pth'."
    )
    assert os.listdir(keras_home / "models") == []


def _timm_file(state, file_format):
    """(content, SHA-256 prefix or None) of `state` as timm publishes it."""
    if file_format == "pth":  # the release files: torch.save's legacy format (clean_checkpoint.py)
        torch = pytest.importorskip("torch")
        buffer = io.BytesIO()
        torch.save({key: torch.tensor(value) for key, value in state.items()}, buffer,
                   _use_new_zipfile_serialization=False)
        return buffer.getvalue(), hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    return safetensors_numpy.save(state), None  # the Hub's model.safetensors: no hash


@pytest.mark.parametrize("file_format", ["pth", "safetensors"])
def test_build_resnet_loads_a_registered_name(keras_home, fake_download, monkeypatch,
                                              file_format):
    source = randomise_batchnorm(build_resnet(18, input_shape=(None, None, 3),
                                              classifier_activation=None))
    content, file_hash = _timm_file(_state_dict_of(source), file_format)
    name = "timm:resnet18.a1_in1k"
    # No file made here can have the published hash: the entry gets this one's.
    monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(WEIGHTS[name], file_hash=file_hash))
    fake_download(content)
    model = build_resnet(18, input_shape=(None, None, 3), classifier_activation=None,
                         weights="timm:a1_in1k")
    assert os.listdir(keras_home / "models") == ["resnet18_a1_0-d63eafa0.pth"]
    x = np.random.default_rng(0).normal(size=(2, 40, 48, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(source(x)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"are for build_resnet\(18\)\. Received: depth=34"):
        build_resnet(34, weights="timm:resnet18.a1_in1k")
