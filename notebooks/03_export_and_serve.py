# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Export and serve: SavedModel, TF Serving, TFLite
#
# A trained model leaves the library in one of two forms:
#
# - a **SavedModel** for TensorFlow Serving (or any TensorFlow program). It takes the
#   encoded image files and decodes and preprocesses them in the graph, so clients
#   send JPEG bytes and need no preprocessing code of their own;
# - a **TFLite** file for phones and microcontrollers, in float32 or full-integer int8.
#
# This notebook trains a small model for half a minute, exports it both ways, calls
# the SavedModel with TensorFlow alone, builds a TF Serving REST request from real JPEG
# bytes together with its response, and compares int8 with float. Everything is
# written to a temporary folder.

# %%
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from resnet_tf.data import decode_image, list_image_folder, preprocess_for_eval
from resnet_tf.data.patterns import make_pattern_folder
from resnet_tf.export import (
    calibration_images,
    evaluate_tflite,
    export_serving_model,
    export_tflite,
    load_checkpoint,
    predict_tflite,
)
from resnet_tf.training import RunOptions, TrainConfig, train

WORK = tempfile.mkdtemp(prefix="resnet_tf_serving_")
print("Working folder:", WORK)

# %% [markdown]
# ## 0. A trained model
#
# Any `.keras` file or `train.py` run folder works below; here we train a ResNet-20 for
# a few epochs on generated patterns (four classes that differ only in shape).

# %%
CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
TRAIN_DIR = make_pattern_folder(os.path.join(WORK, "train"), CLASSES, per_class=60, seed=0)
TEST_DIR = make_pattern_folder(os.path.join(WORK, "test"), CLASSES, per_class=10, seed=1)
RUN_DIR = os.path.join(WORK, "run")
run_metrics = train(
    TrainConfig(depth=20, data_dir=TRAIN_DIR, image_size=32, val_split=0.2, epochs=4,
                batch_size=32, warmup_epochs=0, precision="float32"),
    RunOptions(out=RUN_DIR, verbose=0))

# %% [markdown]
# ## 1. Export a SavedModel
#
# `load_checkpoint` reads a run folder: the best model, its class names, image size and
# preprocessing preset. `export_serving_model` writes the next numbered version under
# a *model base path*, the folder TF Serving watches (`--model_base_path`); a version
# appears atomically and is never overwritten.
#
# The exported network is a float32 copy with every BatchNorm folded into the
# convolution before it. From the command line: `resnet-export RUN_DIR --export-dir
# EXPORT_BASE`. `train.py` also exports at the end of a run unless given `--no-export`,
# with `resnet_tf.export.export_run(RUN_DIR)`, which exports a run's final model
# (`last.keras`) once; the `train()` function only trains.

# %%
model, class_names, image_size, preset, _ = load_checkpoint(RUN_DIR)
EXPORT_BASE = os.path.join(WORK, "models", "patterns")
version_dir = export_serving_model(model, EXPORT_BASE, class_names=class_names,
                                   image_size=image_size, preset=preset)
print("Exported", version_dir)
for root, _, files in sorted(os.walk(EXPORT_BASE)):
    for name in sorted(files):
        path = os.path.join(root, name)
        print(f"  {os.path.relpath(path, EXPORT_BASE):<50} {os.path.getsize(path):>10,} bytes")

# %% [markdown]
# ## 2. Signatures
#
# A SavedModel is called through named *signatures* with typed inputs and outputs.
# `serving_default` takes a batch of encoded images (JPEG, PNG, GIF, BMP or WebP, any
# size); `serving_pixels` takes uint8 pixels already at the model's input size. Both
# return the probabilities and the top classes with their names and scores.
# `saved_model_cli show --dir VERSION_DIR --all` prints the same from a shell.

# %%
loaded = tf.saved_model.load(version_dir)
for name, function in loaded.signatures.items():
    _, inputs = function.structured_input_signature
    print(name)
    for key, spec in inputs.items():
        print(f"  input   {key:<14} {spec.dtype.name:<8} {spec.shape}")
    for key, spec in function.structured_outputs.items():
        print(f"  output  {key:<14} {spec.dtype.name:<8} {spec.shape}")

# %% [markdown]
# ## 3. Call it with JPEG bytes, with TensorFlow alone
#
# The SavedModel holds no Keras objects and no `resnet_tf` code, so a client needs only
# TensorFlow. To show it, the client below runs in a fresh Python process in which
# importing `resnet_tf` is made impossible; it sends the raw bytes of the test JPEGs.

# %%
CLIENT = '''
import json
import sys

sys.modules["resnet_tf"] = None  # any import of resnet_tf now fails
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = tf.constant([open(path, "rb").read() for path in sys.argv[2:]])
outputs = serve(image_bytes=images)
print(json.dumps({
    "probabilities": outputs["probabilities"].numpy().tolist(),
    "top_class": [row[0].decode() for row in outputs["class_names"].numpy()],
}))
'''
client_path = os.path.join(WORK, "client.py")
with open(client_path, "w") as f:
    f.write(CLIENT)

test_files, test_labels, _ = list_image_folder(TEST_DIR)
env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
result = subprocess.run([sys.executable, client_path, version_dir, *test_files],
                        capture_output=True, text=True, env=env, cwd=WORK)
if result.returncode:
    raise RuntimeError(result.stderr[-2000:])
served = json.loads(result.stdout.strip().splitlines()[-1])
served_probabilities = np.array(served["probabilities"], np.float32)
for path, label, top in list(zip(test_files, test_labels, served["top_class"]))[::10]:
    print(f"{os.path.relpath(path, TEST_DIR):<24} true {class_names[label]:<13} served {top}")
served_accuracy = np.mean(served_probabilities.argmax(1) == np.array(test_labels))
print(f"Served top-1 accuracy on {len(test_files)} test images: {served_accuracy:.3f}")

# %% [markdown]
# The served probabilities equal the Keras model's on the same files decoded and
# preprocessed in Python by `resnet_tf.data` (folding BatchNorm changes only float
# rounding):

# %%
test_images = np.stack([
    preprocess_for_eval(decode_image(tf.io.read_file(path)), image_size, preset).numpy()
    for path in test_files
])
keras_probabilities = model.predict(test_images, verbose=0)
difference = np.abs(served_probabilities - keras_probabilities).max()
print(f"Largest difference, SavedModel vs Keras: {difference:.2e}")
assert difference < 1e-4

# %% [markdown]
# ## 4. TensorFlow Serving's REST API
#
# TF Serving serves the newest version folder under the model base path:
#
# ```bash
# docker run -p 8501:8501 -v EXPORT_BASE:/models/patterns -e MODEL_NAME=patterns \
#     tensorflow/serving
# curl -d @request.json http://localhost:8501/v1/models/patterns:predict
# ```
#
# JSON cannot carry raw bytes, so binary inputs travel base64-encoded as
# `{"b64": "..."}` and the server turns them back into the string tensor
# `image_bytes`. This is the body for two of the test JPEGs, written to
# `request.json` for the `curl` above:

# %%
request_files = test_files[:2]
request = {
    "signature_name": "serving_default",
    "instances": [
        {"image_bytes": {"b64": base64.b64encode(Path(path).read_bytes()).decode("ascii")}}
        for path in request_files
    ],
}
body = json.dumps(request)
with open(os.path.join(WORK, "request.json"), "w") as f:
    f.write(body)
print(f"{len(body):,} bytes: {body[:150]}...")


# %% [markdown]
# Docker cannot run here, so the next cell does what the server does with that body,
# on the SavedModel loaded by TensorFlow: decode the base64 inputs, run the signature,
# and answer in the row format, one object per instance holding every output (string
# outputs come back as text).

# %%
def predict_like_tf_serving(signature, body):
    # What TF Serving's REST `:predict` returns for a row-format ("instances") request.
    instances = json.loads(body)["instances"]
    inputs = {name: tf.constant([base64.b64decode(row[name]["b64"]) for row in instances])
              for name in instances[0]}
    outputs = {name: value.numpy() for name, value in signature(**inputs).items()}

    def to_json(value):
        return [v.decode() for v in value] if value.dtype == object else value.tolist()

    predictions = [{name: to_json(value[i]) for name, value in outputs.items()}
                   for i in range(len(instances))]
    return json.dumps({"predictions": predictions})

response = json.loads(predict_like_tf_serving(loaded.signatures["serving_default"], body))
served_rows = served_probabilities[:len(request_files)]  # the subprocess client's answer
assert np.allclose([p["probabilities"] for p in response["predictions"]], served_rows,
                   atol=1e-6)
for prediction in response["predictions"]:  # rounded for display only
    for key in ("probabilities", "scores"):
        prediction[key] = [round(p, 4) for p in prediction[key]]
rows = ",\n  ".join(json.dumps(prediction) for prediction in response["predictions"])
print('{"predictions": [\n  ' + rows + "\n]}")

# %% [markdown]
# ## 5. TFLite: float32 and int8
#
# `resnet_tf.export.export_tflite` converts the same folded float32 network. A TFLite
# file takes images already preprocessed (as `preprocess_for_eval` does), and a `.json`
# sidecar records what a client needs for that: class names, size, mean and std, and
# the input and output tensors' quantization.
#
# `int8` is full-integer quantization: int8 weights, activations, input and output, so
# the file runs on integer-only accelerators at about a quarter of the float size. The
# activation ranges are calibrated on *training* images (`calibration_images` leaves
# out the run's validation split); accuracy is measured on the separate test images.

# %%
calibration = calibration_images(TRAIN_DIR, image_size=image_size, preset=preset,
                                 val_split=0.2, seed=0, count=100)
tflite_files = {}
for quantization in ("float32", "int8"):
    tflite_files[quantization] = export_tflite(
        model, os.path.join(WORK, "tflite", f"patterns_{quantization}.tflite"),
        quantization=quantization, representative_images=calibration,
        class_names=class_names, image_size=image_size, preset=preset)
with open(tflite_files["int8"].replace(".tflite", ".json")) as f:
    sidecar = json.load(f)
print("int8 input: ", sidecar["input"])
print("int8 output:", sidecar["output"])

# %% [markdown]
# `predict_tflite` quantizes the normalized images with the input's scale and zero
# point and dequantizes the output, so both files are called the same way:

# %%
labels = np.array(test_labels)
probabilities = {"Keras": keras_probabilities}
probabilities.update({f"TFLite {q}": predict_tflite(path, test_images)
                      for q, path in tflite_files.items()})
print(f"{'model':<15} {'file size':>10} {'top-1':>6} {'same top-1 as Keras':>20} "
      f"{'max |p - p_keras|':>18}")
for name, p in probabilities.items():
    path = tflite_files.get(name.split()[-1])
    size = f"{os.path.getsize(path) / 1024:.0f} KB" if path else ""
    print(f"{name:<15} {size:>10} {np.mean(p.argmax(1) == labels):>6.3f} "
          f"{np.mean(p.argmax(1) == keras_probabilities.argmax(1)):>20.3f} "
          f"{np.abs(p - keras_probabilities).max():>18.4f}")

# %%
float_accuracy = evaluate_tflite(tflite_files["float32"], (test_images, labels))
int8_accuracy = evaluate_tflite(tflite_files["int8"], (test_images, labels))
agreement = np.mean(probabilities["TFLite int8"].argmax(1)
                    == probabilities["TFLite float32"].argmax(1))
print(f"SavedModel top-1 accuracy: {served_accuracy:.3f}")
print(f"TFLite top-1 accuracy: float32 {float_accuracy:.3f}, int8 {int8_accuracy:.3f}")
print(f"int8 and float32 predict the same class for {agreement:.1%} of the test images")
assert np.abs(probabilities["TFLite float32"] - keras_probabilities).max() < 1e-4
