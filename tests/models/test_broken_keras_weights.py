"""A damaged or hostile .keras weights file is one ValueError naming the file (issue 30)."""

import json
import zipfile

import pytest

from resnet_tf import build_resnet


def _archive(path, config):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", b"")
    return str(path)


@pytest.mark.parametrize("config", [
    "{not json",
    json.dumps({"module": "os", "class_name": "system", "config": {"command": "true"}}),
])
def test_a_broken_or_unsafe_keras_file_is_a_value_error_naming_it(tmp_path, config):
    path = _archive(tmp_path / "broken.keras", config)
    with pytest.raises(ValueError, match=r"weights file '.*broken\.keras' cannot be loaded") as caught:
        build_resnet(20, input_shape=(16, 16, 3), classes=3, weights=path)
    assert "\n" not in str(caught.value)
