"""The data layer: image folders, TFDS and synthetic data as `tf.data` pipelines, and the
preprocessing that training, evaluation and the serving export share.

    from resnet_tf.data import load_data
    data = load_data(data_dir="images/", val_split=0.1, batch_size=128)
"""

from resnet_tf.data.examples import Data
from resnet_tf.data.folders import IMAGE_EXTENSIONS, image_files, list_image_folder
from resnet_tf.data.pipeline import DataFacts, load_data, probe_data
from resnet_tf.data.preprocessing import (
    MEAN,
    PRESETS,
    STD,
    decode_image,
    default_preset,
    normalize,
    preprocess_for_eval,
    preprocess_for_train,
)
from resnet_tf.errors import DataError

__all__ = [
    "Data",
    "DataError",
    "DataFacts",
    "IMAGE_EXTENSIONS",
    "MEAN",
    "PRESETS",
    "STD",
    "decode_image",
    "default_preset",
    "image_files",
    "list_image_folder",
    "load_data",
    "normalize",
    "preprocess_for_eval",
    "preprocess_for_train",
    "probe_data",
]
