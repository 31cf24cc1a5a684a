"""Train/test resolution (FixRes): training crops of one size, validation at another."""

import pytest

from resnet_tf.data import load_data
from resnet_tf.errors import DataError


@pytest.mark.parametrize("preset, cache", [("cifar", True), ("cifar", False), ("imagenet", False)])
def test_training_crops_and_validation_images_have_their_own_sizes(image_folder_factory, preset,
                                                                   cache):
    root = image_folder_factory(per_class=6, size=24)
    data = load_data(data_dir=root, val_split=0.25, batch_size=4, image_size=24, train_size=16,
                     preset=preset, cache=cache)
    train_images, _ = next(iter(data.train))
    val_images, _ = next(iter(data.val))
    assert train_images.shape[1:] == (16, 16, 3) and val_images.shape[1:] == (24, 24, 3)
    assert (data.train_size, data.image_size) == (16, 24)


def test_sizes_default_to_the_images_own(image_folder_factory):
    data = load_data(data_dir=image_folder_factory(per_class=6, size=12), val_split=0.25,
                     batch_size=4)
    assert (data.train_size, data.image_size) == (12, 12)


def test_a_training_size_larger_than_the_images_is_one_line(image_folder_factory):
    root = image_folder_factory(per_class=6, size=12)
    with pytest.raises(DataError, match=r"^train_size is larger than the images. Received: "
                                        r"train_size=20 for images of 12x12; expected at most 12\.$"):
        load_data(data_dir=root, val_split=0.25, batch_size=4, train_size=20)
