"""argparse types for numeric flags: every one has a range, upper bound included, so an
absurd value is a one-line usage error (exit 2) before any work, never an overflow or an
out-of-memory deep inside TensorFlow."""

import argparse
import math

from resnet_tf.training.recipes import MAX_IMAGE_SIZE

# TF Serving reads version folder names as int64.
MAX_INT64 = 2**63 - 1
# More than any model here has classes (top-k) or a stage has channels; images per batch.
MAX_TOP_K = 100_000
MAX_CHANNELS = 100_000
MAX_BATCH_SIZE = 65_536
__all__ = ["MAX_BATCH_SIZE", "MAX_CHANNELS", "MAX_IMAGE_SIZE", "MAX_INT64", "MAX_TOP_K",
           "float_in", "int_in"]


def int_in(low, high):
    """An argparse `type`: an integer from `low` to `high`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}; received {text!r}")
        return value

    parse.numeric = int  # for the tests that feed every numeric flag absurd values
    return parse


def float_in(low, high):
    """An argparse `type`: a finite number from `low` to `high`."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # nan fails both comparisons
            raise argparse.ArgumentTypeError(
                f"expected a number from {low:g} to {high:g}; received {text!r}")
        return value

    parse.numeric = float
    return parse
