"""`probe_data`: what a run knows of its data before building the pipelines, and that
`load_data` then agrees with it."""

import pytest

from resnet_tf.data import DataFacts, load_data, probe_data


def _images(root, sizes, classes=("cat", "dog")):
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True)
        for i, (height, width) in enumerate(sizes):
            Image.new("RGB", (width, height), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    return str(root)


@pytest.mark.filterwarnings("ignore:.*resized to it")
@pytest.mark.parametrize("sizes, expected", [
    ([(12, 12)] * 3, 12),
    ([(40, 40), (40, 40), (30, 50)], 40),  # most share one square size
    ([(40, 40), (30, 50), (20, 20)], 224),  # none does
    ([(30, 50)] * 3, 224),  # not square
])
def test_a_folder_is_probed_as_load_data_reads_it(tmp_path, sizes, expected):
    folder = _images(tmp_path / "train", sizes)
    facts = probe_data(data_dir=folder)
    assert facts == DataFacts(["cat", "dog"], expected)
    loaded = load_data(data_dir=folder, batch_size=2, val_split=None)
    assert (loaded.class_names, loaded.image_size) == (facts.class_names, facts.image_size)


def test_validation_folder_images_count_too(tmp_path):
    folder = _images(tmp_path / "train", [(16, 16)])
    val = _images(tmp_path / "val", [(24, 24)] * 3)
    assert probe_data(data_dir=folder, val_dir=val).image_size == 24


def test_synthetic_and_tfds_facts(monkeypatch):
    from types import SimpleNamespace

    import tensorflow_datasets as tfds

    assert probe_data("synthetic") == DataFacts([f"class_{i}" for i in range(10)], 32)

    class Unprepared:  # its description is enough: nothing is downloaded
        info = SimpleNamespace(
            supervised_keys=("image", "label"), splits={},
            features={"image": tfds.features.Image(shape=(28, 28, 1)),
                      "label": tfds.features.ClassLabel(names=["a", "b", "c"])})

        def __init__(self, name, data_dir=None):
            pass

        def download_and_prepare(self, **unused):
            raise AssertionError("probing downloaded the dataset")

    monkeypatch.setattr(tfds, "builder", Unprepared)
    assert probe_data("fake") == DataFacts(["a", "b", "c"], 28)
    Unprepared.info.features["image"] = tfds.features.Image(shape=(None, None, 3))
    assert probe_data("fake").image_size == 224
