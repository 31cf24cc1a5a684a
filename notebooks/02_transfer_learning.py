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
# # Transfer learning: a new head on a trained backbone, then fine-tuning
#
# With few labelled images, start from a network trained on a larger dataset: keep its
# convolutional backbone, put a new classifier on top, and train in two phases:
#
# 1. **Frozen backbone**: only the new head learns. The backbone's BatchNorm layers
#    stay in inference mode, so their statistics from the original data are kept.
# 2. **Fine-tuning**: unfreeze the backbone (but not its BatchNorm layers) and continue
#    at a much lower learning rate, so the pretrained features adapt without being
#    destroyed.
#
# Here the "large" dataset is a generated source task (four patterns) and the target
# task is four *other* patterns with only 30 training images each. The notebook trains
# the source backbone itself in about half a minute; set `BACKBONE_WEIGHTS` to use one
# you already have. Everything is written to a temporary folder.

# %%
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from resnet_tf import build_resnet
from resnet_tf.data import load_data

WORK = tempfile.mkdtemp(prefix="resnet_tf_transfer_")
print("Working folder:", WORK)

# %% [markdown]
# ## 1. Data
#
# Source task: four patterns (checkerboards, discs, horizontal and vertical stripes),
# 80 images each. Target task: crosses, dot grids, rings and diagonal stripes, with 30
# training and 40 validation images per class. Every pattern comes in random colours,
# so the classes differ only in shape. Replace the folders with your own: any folder
# with one sub-folder of images per class works.

# %%
def pattern_mask(name, x, y, rng):
    """A boolean image of pattern `name` with a random frequency, phase and position."""
    f, phase = rng.uniform(2, 4), rng.uniform(0, 1)
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)

    def wave(t, level=0.0):
        return np.sin(2 * np.pi * (f * t + phase)) > level

    masks = {
        "stripes_h": lambda: wave(y),
        "stripes_v": lambda: wave(x),
        "stripes_d": lambda: wave((x + y) / 1.4),
        "checkerboard": lambda: wave(x) ^ wave(y),
        "disc": lambda: (x - cx) ** 2 + (y - cy) ** 2 < r**2,
        "ring": lambda: np.abs(np.hypot(x - cx, y - cy) - r) < 0.06,
        "cross": lambda: (np.abs(x - cx) < 0.08) | (np.abs(y - cy) < 0.08),
        "dots": lambda: wave(x, 0.6) & wave(y, 0.6),
    }
    return masks[name]()


def make_pattern_folder(root, classes, per_class, size=32, seed=0):
    """Writes `per_class` JPEG images of each pattern to `root/<class>/`; returns `root`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            mask = pattern_mask(name, x, y, rng)[..., None]
            foreground = rng.integers(0, 256, 3)
            background = (foreground + rng.integers(80, 177, 3)) % 256  # always contrasting
            image = np.where(mask, foreground, background) + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                os.path.join(root, name, f"{i:04d}.jpg"), quality=90)
    return root


SOURCE_CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
TARGET_CLASSES = ["cross", "dots", "ring", "stripes_d"]
SOURCE_DIR = make_pattern_folder(os.path.join(WORK, "source"), SOURCE_CLASSES, 80, seed=0)
TARGET_DIR = make_pattern_folder(os.path.join(WORK, "target_train"), TARGET_CLASSES, 30, seed=1)
TARGET_VAL_DIR = make_pattern_folder(os.path.join(WORK, "target_val"), TARGET_CLASSES, 40,
                                     seed=2)

# %% [markdown]
# ## 2. A trained backbone
#
# `BACKBONE_WEIGHTS` can be any weights file `build_resnet` loads: a `.keras` or
# `.weights.h5` file saved by this library (e.g. `runs/<name>/best.keras` from
# `train.py`), or, for ResNet-50 with `variant="v1"`, keras.applications' ImageNet
# file (then use its preprocessing and 224 px images). Left at `None`, the next cell
# trains a ResNet-20 on the source task with the library's trainer.

# %%
BACKBONE_WEIGHTS = None  # e.g. "runs/resnet20_cifar10/best.keras"
DEPTH, IMAGE_SIZE = 20, 32

# %%
if BACKBONE_WEIGHTS is None:
    from resnet_tf.training import RunOptions, TrainConfig, train

    source_run = os.path.join(WORK, "source_run")
    source_metrics = train(
        TrainConfig(depth=DEPTH, data_dir=SOURCE_DIR, image_size=IMAGE_SIZE, val_split=0.2,
                    epochs=8, batch_size=32, warmup_epochs=0, precision="float32"),
        RunOptions(out=source_run, verbose=0))
    BACKBONE_WEIGHTS = os.path.join(source_run, "best.keras")
    print(f"Source task validation accuracy: {source_metrics['top1']:.3f}")

# %% [markdown]
# ## 3. New head on the frozen backbone
#
# `include_top=False, pooling="avg"` builds the backbone without its classifier and
# ends in a feature vector; a weights file that has a classifier loads into it (the
# classifier is skipped), as long as the other arguments match the trained model.
#
# `base.trainable = False` freezes the weights **and** runs every BatchNorm layer in
# inference mode: the moving mean and variance from the source data are used, not
# updated. The cell after the next checks that.

# %%
keras.utils.set_random_seed(0)
base = build_resnet(DEPTH, include_top=False, pooling="avg",
                    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), weights=BACKBONE_WEIGHTS)
base.trainable = False

target = load_data(data_dir=TARGET_DIR, val_dir=TARGET_VAL_DIR, image_size=IMAGE_SIZE,
                   batch_size=16)
inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
x = keras.layers.Dropout(0.2)(base(inputs))
outputs = keras.layers.Dense(len(target.class_names), activation="softmax")(x)
model = keras.Model(inputs, outputs)

def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)

print(f"{target.train_examples} training and {target.val_examples} validation images; "
      f"classes {target.class_names}")
print(f"Trainable parameters with the base frozen: {trainable_count(model):,} "
      f"of {model.count_params():,}")


# %% [markdown]
# `load_data` returns batched `tf.data` pipelines of normalized images and integer
# labels (augmented for training, fixed order for validation), so the loss is
# `sparse_categorical_crossentropy`. Before any training the new head is guessing:

# %%
def val_accuracy(model):
    return model.evaluate(target.val, verbose=0, return_dict=True)["accuracy"]

model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
accuracy = {"before training": val_accuracy(model)}
bn = base.get_layer("conv1_bn")
moving_mean = keras.ops.convert_to_numpy(bn.moving_mean).copy()
print(f"Validation accuracy before training: {accuracy['before training']:.3f}")

# %%
# load_data's pipelines are already shuffled; shuffle=False only silences a warning.
model.fit(target.train, validation_data=target.val, epochs=10, shuffle=False, verbose=2)
accuracy["new head, frozen base"] = val_accuracy(model)
assert np.array_equal(keras.ops.convert_to_numpy(bn.moving_mean), moving_mean)
print("BatchNorm moving statistics unchanged.")

# %% [markdown]
# ## 4. Fine-tune the backbone at a low learning rate
#
# Unfreeze the base but keep its BatchNorm layers frozen, then **recompile** (the
# trainable state is captured at compile time) with a learning rate a hundred times
# lower than the head's: large steps on a few examples would undo the pretrained
# features. Frozen BatchNorm layers keep normalizing with the source statistics;
# letting them update from small batches of new data would shift every feature the
# head was just trained on.
#
# Note: in Keras 3, building the model with `base(inputs, training=False)` does *not*
# achieve this. `fit` calls the outer model with `training=True`, which is passed on
# to every layer and overrides the `False` (keras-team/keras#20285), so once the base
# is trainable its BatchNorm statistics would update. Freeze the BatchNorm layers
# themselves, as here.

# %%
base.trainable = True
for layer in base.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False  # inference mode: normalize with the source statistics
model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
print(f"Trainable parameters: {trainable_count(model):,}")
model.fit(target.train, validation_data=target.val, epochs=6, shuffle=False, verbose=2)
accuracy["fine-tuned"] = val_accuracy(model)
assert np.array_equal(keras.ops.convert_to_numpy(bn.moving_mean), moving_mean)

# %% [markdown]
# ## 5. Before and after

# %%
chance = 1 / len(target.class_names)
for phase, value in accuracy.items():
    print(f"{phase:<24} validation accuracy {value:.3f}")
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.barh(list(accuracy), list(accuracy.values()))
ax.axvline(chance, color="gray", linestyle="--", label="chance")
ax.set_xlim(0, 1)
ax.set_xlabel("validation accuracy on the target task")
ax.invert_yaxis()
ax.legend()
plt.show()
assert accuracy["new head, frozen base"] > chance and accuracy["fine-tuned"] > chance

# %% [markdown]
# The model saves like any other (`model.save("transfer.keras")`) and exports for
# serving with `resnet_tf.export.export_serving_model`, as `03_export_and_serve.ipynb`
# shows.
