"""Loading `.keras` files with one clear error for the ones that cannot be loaded."""

import os
import zipfile

import keras


def load_keras_file(path, error=ValueError):
    """`keras.saving.load_model(path, compile=False)`, raising `error` in one clear line for
    a file that is cut short, of another format or not loadable."""
    if not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        raise error(f"'{path}' is not a complete .keras file ({size} bytes, not a zip "
                    "archive: cut short or another format); expected a file saved by "
                    "model.save or written by train.py.")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as problem:
        first = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
        raise error(f"Could not load '{path}': {first}") from problem
