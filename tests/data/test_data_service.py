"""The tf.data service: a dispatcher and workers on localhost run the training pipeline."""

import time

import numpy as np
import pytest
import tensorflow as tf

from resnet_tf.cli import main as cli_main
from resnet_tf.data import load_data
from resnet_tf.data.service import distribute, start_servers
from resnet_tf.errors import DataError


@pytest.fixture(scope="module")
def service():
    target, servers = start_servers(0, 2)
    yield target.split("://", 1)[1]
    del servers


def _labels_and_sums(dataset):
    return sorted((int(y), round(float(x.sum()), 3)) for xs, ys in dataset
                  for x, y in zip(np.asarray(xs), np.asarray(ys)))


def test_two_workers_serve_each_training_image_at_most_once_per_epoch(service, image_folder_factory):
    root = image_folder_factory(per_class=12, size=12)
    data = load_data(data_dir=root, val_split=0.25, batch_size=3, image_size=12, augment="none")
    local = _labels_and_sums(data.train)
    served = _labels_and_sums(distribute(data.train, service))
    assert len(local) == data.train_examples == 27
    # Each worker drops its own incomplete last batch: at most (workers - 1) batches fewer.
    assert 27 - 2 * 3 <= len(served) <= 27 and set(served) <= set(local)
    assert len(set(served)) == len(served)


def test_an_unreachable_dispatcher_fails_in_seconds_with_one_line():
    start = time.monotonic()
    with pytest.raises(DataError, match=r"No tf.data service dispatcher answers at "
                                        r"localhost:1 .*python -m resnet_tf data-service"):
        distribute(tf.data.Dataset.range(3), "localhost:1")
    assert time.monotonic() - start < 30  # a bound on hanging, not a speed measurement
    with pytest.raises(DataError, match="Received: --data-service 'nohost'; expected e.g."):
        distribute(tf.data.Dataset.range(3), "nohost")


def test_data_service_workers_need_a_dispatcher_to_join(capsys):
    # Absurd ports and worker counts: tests/test_bad_numbers.py walks every numeric flag.
    assert cli_main(["data-service", "--workers", "0", "--dispatcher", "localhost:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Received: --workers 0" in err[0], err
