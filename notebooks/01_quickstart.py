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
# # Quickstart: build, train and evaluate a ResNet
#
# This notebook shows the three things most users do with `resnet_tf`:
#
# 1. **Build** a ResNet (or your own network from the residual blocks) as a plain
#    `keras.Model`, and inspect it.
# 2. **Train** it on a folder of images with the library's trainer, the same code
#    `python train.py` runs.
# 3. **Evaluate** the trained model on held-out images.
#
# By default it trains on a small generated image folder, so it runs on a laptop CPU in
# about a minute; section 3 shows how to point it at real data. Everything it writes
# goes to a temporary folder, printed below.

# %%
import csv
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import resnet_tf
from resnet_tf import bottleneck_block, build_resnet, feature_extractor, residual_block
from resnet_tf.data import list_image_folder, normalize
from resnet_tf.data.patterns import make_pattern_folder
from resnet_tf.evaluation import (
    evaluate,
    format_metrics,
    format_predictions,
    grad_cam,
    load_classifier,
    overlay,
    predict_files,
)
from resnet_tf.training import RunOptions, TrainConfig, train

print(f"resnet_tf {resnet_tf.__version__}, Keras {keras.__version__} "
      f"({keras.backend.backend()} backend)")
WORK = tempfile.mkdtemp(prefix="resnet_tf_quickstart_")
print("Working folder:", WORK)

# %% [markdown]
# ## 1. Build a ResNet
#
# `build_resnet(depth, ...)` returns an ordinary functional `keras.Model`. Its arguments
# are the ones `keras.applications.ResNet50` users know (`include_top`, `weights`,
# `input_shape`, `pooling`, `classes`, `classifier_activation`).
#
# Depths 20, 32, 44, 56, 110 are the CIFAR networks of the ResNet paper: a 3x3 stem and
# three stages of 16/32/64 filters, for small images. Layer names follow
# keras.applications (`conv2_block1_1_conv`, ...), which keeps weight files portable.

# %%
resnet20 = build_resnet(20, input_shape=(32, 32, 3), classes=10)
resnet20.summary(line_length=100)

# %% [markdown]
# Each depth is one row of `resnet_tf.SPECS` (block type, blocks per stage, family);
# variants such as ResNeXt, Wide ResNet and squeeze-and-excitation are arguments, not
# new functions. Trainable parameters equal torchvision's counts (ResNet-50:
# 25,557,032); Keras' total adds BatchNorm's moving means and variances.

# %%
print("ResNet-50 spec:", resnet_tf.SPECS[50])
variants = {
    "ResNet-20 (CIFAR)": dict(depth=20, classes=10),
    "ResNet-56 (CIFAR)": dict(depth=56, classes=10),
    "ResNet-18": dict(depth=18),
    "ResNet-50": dict(depth=50),
    "ResNeXt-50 32x4d": dict(depth=50, groups=32, width_per_group=4),
    "SE-ResNet-50": dict(depth=50, se_ratio=1 / 16),
}
print(f"{'':<20} {'trainable':>12} {'total':>12}")
for label, kwargs in variants.items():
    model = build_resnet(**kwargs)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"{label:<20} {trainable:>12,} {model.count_params():>12,}")
keras.backend.clear_session()  # free the graphs we no longer need

# %% [markdown]
# For detection or segmentation, `feature_extractor` turns a backbone into a model that
# returns the output of every stage (`C2`..`C5`, at strides 4, 8, 16 and 32 with the
# ImageNet stem), sharing the backbone's weights.

# %%
backbone = feature_extractor(build_resnet(18, include_top=False))
features = backbone(np.zeros((1, 128, 128, 3), "float32"))
for name, tensor in features.items():
    print(name, tuple(tensor.shape))

# %% [markdown]
# ## 2. Your own network from the residual blocks
#
# `residual_block` (two 3x3 convolutions, as in ResNet-18/34) and `bottleneck_block`
# (1x1-3x3-1x1, as in ResNet-50) take a Keras tensor and return one, so they compose
# with any Keras layers. `stride=2` halves the resolution; the shortcut projects when
# the shape changes. The bottleneck below is a ResNeXt block (8 groups) with
# squeeze-and-excitation.

# %%
inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
x = residual_block(x, 32, name="stage1")
x = residual_block(x, 64, stride=2, name="stage2")
x = bottleneck_block(x, 32, stride=2, groups=8, width_per_group=8, se_ratio=0.25,
                     name="stage3")
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(10, activation="softmax")(x)
custom = keras.Model(inputs, outputs, name="custom_resnet")
print(f"{custom.name}: {custom.count_params():,} parameters")
for stage in ("stage1", "stage2", "stage3"):
    print(f"  {stage} output {tuple(custom.get_layer(f'{stage}_out').output.shape[1:])}")

# %% [markdown]
# ## 3. Data: a folder with one sub-folder per class
#
# The trainer reads any folder laid out as `DATA_DIR/<class name>/<image>.jpg` (JPEG,
# PNG, BMP or GIF; class `i` is the `i`-th folder name in sorted order). It holds out a
# fixed fraction of every class for validation, decodes small datasets into memory
# once, and augments with CIFAR-style pad-and-crop and flips for images of 64 px or
# less.
#
# **To use real data**, set `DATA_DIR` (and optionally `TEST_DIR`) below, e.g. to
# CIFAR-10 as image folders (`cifar10/train/airplane/0000.jpg`, ...), and raise
# `EPOCHS` (the CIFAR recipe trains for 40).
# Left at `None`, the next cell generates four classes of patterns (stripes, discs,
# checkerboards; `resnet_tf.data.patterns.make_pattern_folder`) in random colours: small
# enough to train in seconds, hard enough that the accuracy means something.

# %%
DATA_DIR = None  # e.g. "/data/cifar10/train": one sub-folder of images per class
TEST_DIR = None  # held-out images with the same class sub-folders
IMAGE_SIZE = 32
EPOCHS = 5

# %%
CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
if DATA_DIR is None:
    DATA_DIR = make_pattern_folder(os.path.join(WORK, "train"), CLASSES, per_class=80, seed=0)
    TEST_DIR = make_pattern_folder(os.path.join(WORK, "test"), CLASSES, per_class=25, seed=1)
print("Training images from", DATA_DIR)

# %%
files, labels, class_names = list_image_folder(DATA_DIR)
print(f"{len(files)} images in {len(class_names)} classes: {', '.join(class_names)}")
fig, axes = plt.subplots(len(class_names), 8, figsize=(8, len(class_names)))
for label, row in enumerate(axes):
    examples = [f for f, y in zip(files, labels) if y == label][:8]
    for ax, path in zip(row, examples):
        ax.imshow(Image.open(path))
    for ax in row:
        ax.set_axis_off()
    row[0].set_title(class_names[label], fontsize=8, loc="left")
plt.show()

# %% [markdown]
# ## 4. Train
#
# `train(TrainConfig(...), RunOptions(...))` (all three from `resnet_tf.training`) is
# the whole `train.py` command:
# `TrainConfig` holds what defines the result, `RunOptions` where and how it runs.
# Unset fields take the recipe for the image size (for 64 px or less: ResNet-20,
# SGD with Nesterov momentum, 0.4 per 256 images scaled to the batch size, cosine
# decay, weight decay 5e-4 on kernels only, label smoothing 0.1). Here we shorten it to a few epochs and
# skip the warmup. `precision="float32"` keeps this demo in float32 on every machine;
# the default `"auto"` picks mixed precision on recent GPUs and bfloat16-capable CPUs.
#
# The same run from the command line:
#
# ```bash
# python train.py --depth 20 --data-dir DATA_DIR --image-size 32 --val-split 0.2 \
#     --epochs 5 --batch-size 32 --warmup-epochs 0 --precision float32 --out RUN_DIR \
#     --no-export
# ```
#
# The run folder gets `best.keras` (best validation accuracy), `history.csv`,
# `curves.png`, `metrics.json`, `classes.txt` and `config.json`; rerunning the same
# command resumes an interrupted run.

# %%
RUN_DIR = os.path.join(WORK, "run")
config = TrainConfig(depth=20, data_dir=DATA_DIR, image_size=IMAGE_SIZE, val_split=0.2,
                     epochs=EPOCHS, batch_size=32, warmup_epochs=0, precision="float32")
metrics = train(config, RunOptions(out=RUN_DIR, verbose=2))
print(sorted(os.listdir(RUN_DIR)))

# %% [markdown]
# ## 5. Training curves
#
# `history.csv` has one row per epoch (the learning rate, and training and validation
# loss and accuracy); the trainer also draws it to `curves.png`.

# %%
with open(os.path.join(RUN_DIR, "history.csv")) as f:
    history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
epochs = [row["epoch"] for row in history]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, metric in zip(axes, ("loss", "accuracy")):
    ax.plot(epochs, [row[metric] for row in history], marker="o", label="train")
    ax.plot(epochs, [row["val_" + metric] for row in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_title(metric)
    ax.legend()
plt.show()

# %% [markdown]
# ## 6. Evaluate on held-out images
#
# `resnet_tf.evaluation.load_classifier` accepts a run folder (its `best.keras`, class
# names, image size and preprocessing), a `.keras` file or an exported SavedModel;
# `evaluate` scores it on an image folder with the exact preprocessing of validation.
# This is the `resnet-evaluate RUN_DIR --data-dir TEST_DIR` command.

# %%
classifier = load_classifier(RUN_DIR)
test_metrics = evaluate(classifier, data_dir=TEST_DIR or DATA_DIR)
print(format_metrics(test_metrics))

# %% [markdown]
# The same classifier predicts single files from their encoded bytes (what
# `resnet-predict RUN_DIR image.jpg` prints):

# %%
test_files, _, _ = list_image_folder(TEST_DIR or DATA_DIR)
results, failures = predict_files(classifier, test_files[::25][:4], top_k=2)
for result in results:
    result["file"] = os.path.relpath(result["file"], TEST_DIR or DATA_DIR)
print(format_predictions(results))

# %%
chance = 1 / len(test_metrics["class_names"])
print(f"Validation top-1 accuracy: {metrics['top1']:.3f}")
print(f"Test top-1 accuracy: {test_metrics['top1']:.3f} (chance: {chance:.3f})")
assert test_metrics["top1"] > chance, "the model did not learn: check the data and the LR"

# %% [markdown]
# ## 7. What does the network look at?
#
# Grad-CAM (`resnet_tf.evaluation.grad_cam`) weighs the channels of a stage's output by
# the gradient of a class score and returns one heat map per image, in [0, 1], on that
# stage's grid (8x8 here: ResNet-20's last stage on 32 px images). It takes images
# normalized as the model expects (`resnet_tf.data.normalize` on 0..255 RGB pixels);
# `overlay` resizes a map to the picture and blends it in the "jet" colormap. Below, one
# held-out image per class (top, with its true class) and the heat map of the class the
# model predicts (bottom, with its probability). The maps are coarse and come from a
# model trained for five epochs: they show where the evidence for the prediction lies,
# which need not be where a person would look (around a disc rather than on it, say),
# and for a wrong prediction, what misled it.

# %%
model = classifier.keras_model
test_files, test_labels, _ = list_image_folder(TEST_DIR or DATA_DIR)
examples = [test_files[test_labels.index(c)] for c in range(len(class_names))]
size = classifier.image_size
pictures = np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size)))
                     for path in examples])
inputs = normalize(pictures)
probabilities = keras.ops.convert_to_numpy(model(inputs, training=False))
heatmaps = grad_cam(model, inputs)  # the top class of each image, at the last stage
print(f"Heat maps: {heatmaps.shape[0]} of {heatmaps.shape[1]}x{heatmaps.shape[2]}")

fig, axes = plt.subplots(2, len(examples), figsize=(2 * len(examples), 4.4), squeeze=False)
for i, path in enumerate(examples):
    predicted = int(np.argmax(probabilities[i]))
    axes[0, i].imshow(pictures[i])
    axes[0, i].set_title(os.path.basename(os.path.dirname(path)), fontsize=9)
    axes[1, i].imshow(overlay(pictures[i], heatmaps[i]))
    axes[1, i].set_title(f"{class_names[predicted]} {probabilities[i, predicted]:.2f}",
                         fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# `grad_cam(model, images, class_index=2)` explains a chosen class instead of the top
# one, and `layer="C3"` (or any layer name) reads an earlier, finer stage. The same from
# the command line, for any images and a run folder, `.keras` file or keras.applications
# ResNet:
#
# ```bash
# resnet-explain RUN_DIR photo.jpg more_photos/ --out explain/ --features C3
# ```
#
# writes one PNG per image (the picture, the Grad-CAM of the top class, the top-k
# scores and, with `--features`, a grid of that stage's strongest channels) and an
# `explain/index.html` showing them all; `resnet-evaluate RUN_DIR --data-dir TEST_DIR
# --explain` adds the Grad-CAM of the most confidently wrong images to `errors.png`.

# %% [markdown]
# Next: `02_transfer_learning.ipynb` fine-tunes pretrained weights on a new task, and
# `03_export_and_serve.ipynb` exports a model for TensorFlow Serving and TFLite.
# The working folder above is left in place for you to inspect; delete it when done.
