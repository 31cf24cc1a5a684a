"""`resnet-evaluate NAME_OR_FILE --data-dir DIR` (issue 29 item 2): a registered entry or
a published weights file is evaluated on an ImageNet-layout folder with the entry's
transform and the 1000 ImageNet classes, a folder holding some of them scored against the
model's own indices."""

import contextlib
import importlib.util
import io
import json

import numpy as np
import pytest
from PIL import Image

from resnet_tf.cli import evaluate as evaluate_cli
from resnet_tf.models import registry

if importlib.util.find_spec("torchvision") is None:
    pytest.skip("torchvision (the test extra) is not installed", allow_module_level=True)

from torch_reference import save_torchvision_resnet18  # noqa: E402

ENTRY = "torchvision:resnet18.IMAGENET1K_V1"
# Two of ImageNet's WordNet ids (tench, goldfish) and one further down the list (tabby cat).
FOLDERS = {"n01440764": 0, "n01443537": 1, "n02123045": 281}


@pytest.fixture(scope="module")
def published_file(tmp_path_factory):
    """A torchvision ResNet-18 with random weights, under the name torchvision publishes."""
    folder = tmp_path_factory.mktemp("weights")
    return save_torchvision_resnet18(folder / registry.WEIGHTS[ENTRY].file_name)


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_val")
    rng = np.random.default_rng(0)
    for wnid in FOLDERS:
        (root / wnid).mkdir()
        for i in range(2):
            small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((120, 90), Image.BILINEAR).save(
                root / wnid / f"ILSVRC2012_val_{i}.JPEG", quality=90)
    return root


def _evaluate(model, folder, out):
    status = evaluate_cli.evaluate_main([str(model), "--data-dir", str(folder), "--out", str(out)])
    assert status == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def by_file(published_file, imagenet_folder, tmp_path_factory):
    """The published file's evaluation and what the command printed."""
    out = tmp_path_factory.mktemp("by_file")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        metrics = _evaluate(published_file, imagenet_folder, out)
    return metrics, printed.getvalue()


def test_a_published_file_evaluates_with_its_entry_transform_and_imagenet_classes(by_file):
    metrics, printed = by_file
    assert metrics["transform"] == registry.WEIGHTS[ENTRY].preprocessing.get_config()
    assert "resize 256 (bilinear), centre crop 224" in printed
    names = registry.imagenet_classes()[1]
    assert len(metrics["class_names"]) == 1000 and metrics["class_names"][281] == names[281]
    assert metrics["examples"] == 6
    # Each folder's images are scored as the model's class of that WordNet id.
    assert {name: metrics["per_class"][names[index]]["support"]
            for name, index in FOLDERS.items()} == dict.fromkeys(FOLDERS, 2)
    assert sum(row["support"] for row in metrics["per_class"].values()) == 6


def test_a_registered_name_is_the_same_evaluation(by_file, published_file, imagenet_folder,
                                                  tmp_path, monkeypatch):
    by_file = by_file[0]
    # No internet here: the entry's download is the file already fetched.
    monkeypatch.setattr(registry, "download_weights", lambda name, **build: (str(published_file),))
    by_name = _evaluate(ENTRY, imagenet_folder, tmp_path / "name")
    assert (by_name["top1"], by_name["top5"], by_name["transform"]) == (
        by_file["top1"], by_file["top5"], by_file["transform"])
    assert by_name["confusion_matrix"] == by_file["confusion_matrix"]


def test_offline_a_registered_name_is_one_line_saying_what_to_download(imagenet_folder,
                                                                        tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_cache"))

    def offline(name, **build):
        raise registry.WeightsDownloadError(f"The weights {name} are not in the Keras cache "
                                            "and could not be downloaded")

    monkeypatch.setattr(registry, "download_weights", offline)
    status = evaluate_cli.evaluate_main([ENTRY, "--data-dir", str(imagenet_folder),
                                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("resnet-evaluate: error: The weights " + ENTRY)
    assert not (tmp_path / "out").exists()


def test_a_weights_file_of_unknown_architecture_is_refused(tmp_path, imagenet_folder, capsys):
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"not weights")
    status = evaluate_cli.evaluate_main([str(bogus), "--data-dir", str(imagenet_folder),
                                         "--out", str(tmp_path / "out")])
    assert status == 2
    assert "weights.bin" in capsys.readouterr().err
