"""Issue 30: class folders that cannot be classes are refused before training, in one line.

A name with a newline or only spaces cannot survive classes.txt (one name per line) or
the served model's class names; a link to the data folder, a folder above it or another
class would make a class of other classes' images.
"""

import os

import pytest
from conftest import write_class_images

from resnet_tf.data import list_image_folder
from resnet_tf.errors import DataError


@pytest.mark.parametrize("name", ["two\nlines", "   ", "tab\there"], ids=["newline", "spaces", "tab"])
def test_class_folder_names_with_a_newline_or_only_spaces_are_refused(tmp_path, name):
    root = write_class_images(tmp_path / "data", classes=("cat", name), per_class=1, size=4)
    with pytest.raises(DataError, match=r"Class folder names must be printable text on one "
                                        r"line\. Received: " + repr(name).replace("\\", "\\\\")):
        list_image_folder(root)


@pytest.mark.parametrize("target", ["..", ".", "cat"], ids=["parent", "itself", "another-class"])
def test_class_folder_that_is_a_link_to_dotdot_or_another_class_is_refused(tmp_path, target):
    root = write_class_images(tmp_path / "data", classes=("cat", "dog"), per_class=1, size=4)
    os.symlink(target, os.path.join(root, "zlink"))
    with pytest.raises(DataError, match=r"Class folder 'zlink' in .* is a link to "):
        list_image_folder(root)


def test_a_linked_class_folder_elsewhere_is_a_class(tmp_path):
    elsewhere = write_class_images(tmp_path / "other", classes=("bird",), per_class=2, size=4)
    root = write_class_images(tmp_path / "data", classes=("cat", "dog"), per_class=1, size=4)
    os.symlink(os.path.join(elsewhere, "bird"), os.path.join(root, "bird"))
    files, labels, names = list_image_folder(root)
    assert names == ["bird", "cat", "dog"] and labels == [0, 0, 1, 2]
