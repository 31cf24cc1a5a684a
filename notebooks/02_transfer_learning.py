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
# # Transfer learning: fine-tune pretrained weights on your own images
#
# With few labelled images, start from a network trained on a large dataset: keep its
# convolutional backbone, put a new classifier on top, train the new classifier alone
# for a few epochs (the backbone frozen), then fine-tune everything at a lower
# learning rate with the BatchNorm statistics kept frozen.
#
# 1. **Pretrained weights**: the registry of published ImageNet weights, and the
#    preprocessing that travels with them.
# 2. **Fine-tuning with the trainer**: `TrainConfig(weights=..., freeze_epochs=...)`, the
#    same code as `python train.py --weights ... --freeze-epochs ...`, compared with
#    training from scratch on the same few images.
# 3. **By hand in Keras**: `build_resnet(include_top=False, weights=...)` and
#    `freeze_batchnorm`, for your own training loop.
#
# The notebook runs offline on a CPU in about a minute. Instead of downloading ImageNet
# weights, it trains its own small "pretrained" network on generated images (four
# patterns), then transfers it to four *other* patterns with twenty training images
# each. Everything is written to a temporary folder, printed below.

# %%
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import resnet_tf
from resnet_tf import build_resnet, freeze_batchnorm, list_weights
from resnet_tf.data import load_data, normalize
from resnet_tf.data.patterns import make_pattern_folder
from resnet_tf.training import RunOptions, TrainConfig, train

WORK = tempfile.mkdtemp(prefix="resnet_tf_transfer_")
print("Working folder:", WORK)

# %% [markdown]
# ## 1. Pretrained weights
#
# `resnet_tf.list_weights(depth=None)` lists the published weights `build_resnet` and
# `train.py` load by name: torchvision's and timm's ImageNet checkpoints and
# keras.applications' files. Each entry records where the file lives (and its hash),
# the licence, the `build_resnet` arguments it fits, the published ImageNet top-1 and
# the preprocessing that accuracy was measured with. The ResNet-50-sized ones:

# %%
def preprocessing_text(p):
    if p.mode == "caffe":
        scale = "caffe (BGR, 0-255, mean subtracted)"
    elif p.mean == (0.485, 0.456, 0.406):
        scale = "ImageNet mean/std"
    else:
        scale = f"mean {p.mean[0]:g}, std {p.std[0]:g}"
    resize = f"resize {p.resize}, " if p.resize else ""
    return f"{scale}, {resize}crop {p.crop}" + (f", {p.interpolation}" if p.interpolation else "")


def build_text(build):
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in build.items() if k != "depth") or "-"


print(f"{len(list_weights())} registered weights, {len(list_weights(50))} for depth 50:\n")
print(f"{'name':<42} {'top-1':>6}  {'extra build_resnet arguments':<30} preprocessing")
for entry in list_weights(50):
    top1 = f"{entry.top1:.2f}" if entry.top1 else "-"
    print(f"{entry.name:<42} {top1:>6}  {build_text(entry.build):<30} "
          f"{preprocessing_text(entry.preprocessing)}")
print("\nLicences:", "; ".join(sorted({f"{e.source}: {e.licence}" for e in list_weights()})))

# %% [markdown]
# **Preprocessing travels with the weights.** Every resnet_tf model takes RGB images
# scaled `(pixel / 255 - mean) / std` with ImageNet's mean and std
# (`resnet_tf.data.normalize`), which is what torchvision and most timm weights were
# trained on. Weights trained on another input scale get a `WeightsNormalization`
# layer right after the input that converts to theirs, so the trainer, `resnet-evaluate`,
# the SavedModel and TFLite all feed the same images and each model still sees what its
# weights expect; the layer is saved in `.keras` files. `build_resnet` adds it from the
# entry (its `preprocessing="auto"` default); here without the download, for
# keras.applications' ResNet-50 ("caffe": BGR, 0-255, ImageNet means subtracted):

# %%
entry = next(e for e in list_weights(50) if e.name == "keras:resnet50.imagenet")
print(entry.name, "->", entry.url)
print("  build_resnet arguments:", entry.build)
print("  preprocessing:", entry.preprocessing)
caffe = build_resnet(50, variant="v1", include_top=False, input_shape=(224, 224, 3),
                     preprocessing=entry.preprocessing)
print("  first layers:", [layer.name for layer in caffe.layers[:3]])
# A pure red pixel on resnet_tf's scale, converted to the caffe scale the weights expect:
red = normalize(np.array([[[255, 0, 0]]], np.uint8))
print("  red pixel, normalized:", np.round(keras.ops.convert_to_numpy(red)[0, 0], 3),
      "-> caffe (B, G, R):",
      np.round(keras.ops.convert_to_numpy(caffe.get_layer("weights_normalization")(red))[0, 0], 2))
del caffe

# %% [markdown]
# The registry's resize, crop and interpolation describe how the published accuracy was
# measured; they are not part of the model. `train.py --weights NAME` takes the entry's
# crop (224) as its image size; resnet_tf's own evaluation resizes to `size / 0.875` and
# crops the centre.
#
# A registered name downloads the file once into the Keras cache (`~/.keras/models`),
# checks its hash and loads it (`"torchvision:IMAGENET1K_V1"` works too when the depth
# is given). Offline, as when this notebook is tested, it stops at once with one line
# that says which file to fetch elsewhere and how to pass it. (Online, the cell below
# downloads ResNet-18's 45 MB file.)

# %%
try:
    imagenet18 = build_resnet(18, include_top=False, weights="torchvision:resnet18.IMAGENET1K_V1")
    print("Loaded:", imagenet18.name, f"{imagenet18.count_params():,} parameters")
except resnet_tf.WeightsDownloadError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# ## 2. Data: a source task and a small target task
#
# The source task stands in for ImageNet: four patterns (checkerboards, discs,
# horizontal and vertical stripes), 150 images each. The target task is four *other*
# patterns (crosses, dot grids, rings, diagonal stripes) with only 20 training images
# per class, and 40 per class for validation. Every pattern comes in random colours, so
# the classes differ only in shape. The images are 16 px, to keep the notebook fast.
# With your own data, point `TARGET_DIR` and `TARGET_VAL_DIR` at folders with one
# sub-folder of images per class.

# %%
IMAGE_SIZE = 16
SOURCE_CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
TARGET_CLASSES = ["cross", "dots", "ring", "stripes_d"]
SOURCE_DIR = make_pattern_folder(os.path.join(WORK, "source"), SOURCE_CLASSES, 150,
                                 size=IMAGE_SIZE, seed=0)
TARGET_DIR = make_pattern_folder(os.path.join(WORK, "target_train"), TARGET_CLASSES, 20,
                                 size=IMAGE_SIZE, seed=1)
TARGET_VAL_DIR = make_pattern_folder(os.path.join(WORK, "target_val"), TARGET_CLASSES, 40,
                                     size=IMAGE_SIZE, seed=2)

fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for row, (folder, classes) in zip(axes, ((SOURCE_DIR, SOURCE_CLASSES),
                                         (TARGET_DIR, TARGET_CLASSES))):
    for ax, (name, i) in zip(row, [(c, i) for c in classes for i in range(2)]):
        ax.imshow(Image.open(os.path.join(folder, name, f"{i:04d}.jpg")))
        ax.set_title(name, fontsize=7)
        ax.set_axis_off()
plt.show()

# %% [markdown]
# ## 3. A "pretrained" source network
#
# A ResNet-20 trained on the source task with the library's trainer stands in for
# ImageNet weights. Its run folder (`best.keras`, `config.json`, `classes.txt`, ...) is
# itself a valid `weights=` argument; so are a registered name, a torchvision, timm or
# keras.applications file, and a `.keras` file.

# %%
SOURCE_RUN = os.path.join(WORK, "source_run")
source_metrics = train(
    TrainConfig(depth=20, data_dir=SOURCE_DIR, image_size=IMAGE_SIZE, val_split=0.2,
                epochs=5, batch_size=32, warmup_epochs=0, precision="float32"),
    RunOptions(out=SOURCE_RUN, verbose=0, export=False))
print(f"Source task validation accuracy: {source_metrics['top1']:.3f}")

# %% [markdown]
# ## 4. Fine-tune with the trainer: `TrainConfig(weights=..., freeze_epochs=...)`
#
# With `weights` set, `train` builds the network from the weights and puts a new
# classifier on it, sized for the target's classes. The architecture (here depth 20,
# CIFAR stem), the image size and the input preprocessing follow the weights unless the
# config sets them. Then it trains in two phases:
#
# 1. **Epochs 1 to `freeze_epochs`**: only the new classifier learns. The backbone is
#    frozen, its BatchNorm layers included (they normalize with the source statistics).
# 2. **The remaining epochs**: everything but BatchNorm trains at `finetune_lr` (per
#    256 images like `lr`; default a tenth of `lr`), low enough that a few images
#    adapt the pretrained features rather than overwrite them. `train_batchnorm=True`
#    lets BatchNorm train too, which only pays off with large batches of new data.
#
# For comparison, the same network trains from scratch on the same twenty images per
# class for the same number of epochs. `verbose=2` prints one line per epoch: the
# fine-tuning run shows its two phases (epochs 1-2, then 3-8).

# %%
EPOCHS, FREEZE_EPOCHS = 8, 2
FINETUNE_RUN, SCRATCH_RUN = os.path.join(WORK, "finetune_run"), os.path.join(WORK, "scratch_run")
finetuned = train(
    # finetune_lr=0.04 per 256 images is the default, a tenth of the recipe's lr (0.4)
    TrainConfig(weights=SOURCE_RUN, freeze_epochs=FREEZE_EPOCHS, finetune_lr=0.04,
                train_batchnorm=False, data_dir=TARGET_DIR, val_dir=TARGET_VAL_DIR,
                epochs=EPOCHS, batch_size=8, warmup_epochs=0, precision="float32"),
    RunOptions(out=FINETUNE_RUN, verbose=2, export=False))

# %%
scratch = train(
    TrainConfig(depth=20, image_size=IMAGE_SIZE, data_dir=TARGET_DIR, val_dir=TARGET_VAL_DIR,
                epochs=EPOCHS, batch_size=8, warmup_epochs=0, precision="float32"),
    RunOptions(out=SCRATCH_RUN, verbose=0, export=False))

# %%
chance = 1 / len(TARGET_CLASSES)
print(f"Target task: {len(TARGET_CLASSES)} classes, chance {chance:.2f}")
print(f"From scratch:                 validation top-1 {scratch['top1']:.3f}")
print(f"Fine-tuned from the source:   validation top-1 {finetuned['top1']:.3f}")

# %% [markdown]
# With twenty images per class and eight epochs, both numbers move by several points
# from one seed to the next; which wins depends on how close the source task is to
# yours. On real photographs with ImageNet weights, fine-tuning typically wins by a
# wide margin. The fine-tuned run folder is like any other: `resnet-evaluate`,
# `resnet-predict` and `resnet-explain` take it, and
# `resnet_tf.export.export_run(FINETUNE_RUN)` exports it for TensorFlow Serving (the
# trainer does that itself unless `RunOptions(export=False)`, as here).
#
# ## 5. The same from the command line
#
# `TrainConfig`'s fields are `train.py`'s flags:
#
# ```bash
# # the source network
# python train.py --depth 20 --data-dir SOURCE_DIR --image-size 16 --val-split 0.2 \
#     --epochs 5 --batch-size 32 --warmup-epochs 0 --precision float32 --out SOURCE_RUN \
#     --no-export
# # fine-tuning it: 2 epochs of the new head alone, then 6 of everything but BatchNorm
# python train.py --weights SOURCE_RUN --freeze-epochs 2 --finetune-lr 0.04 \
#     --data-dir TARGET_DIR --val-dir TARGET_VAL_DIR --epochs 8 --batch-size 8 \
#     --warmup-epochs 0 --precision float32 --out FINETUNE_RUN --no-export
# # from published ImageNet weights (downloaded once; 224 px, the entry's crop)
# python train.py --weights torchvision:resnet50.IMAGENET1K_V2 --data-dir my_images/ \
#     --freeze-epochs 3 --epochs 15
# ```
#
# An interrupted run resumes where it stopped, in either phase, when the same command
# is run again.

# %% [markdown]
# ## 6. By hand in Keras: `build_resnet(include_top=False, weights=...)` + `freeze_batchnorm`
#
# In your own code the pieces are `build_resnet(..., include_top=False, weights=...)`,
# which loads a backbone from any of the weights above (a `.keras` or `.weights.h5`
# file of this library, a torchvision, timm or keras.applications file, or a registered
# name; the classifier in the file is skipped), and `freeze_batchnorm`.
#
# `base.trainable = False` freezes the weights **and** runs every BatchNorm layer in
# inference mode: the moving mean and variance from the source data are used, not
# updated. The cell after the next checks that.

# %%
keras.utils.set_random_seed(0)
base = build_resnet(20, include_top=False, pooling="avg",
                    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                    weights=os.path.join(SOURCE_RUN, "best.keras"))
base.trainable = False

target = load_data(data_dir=TARGET_DIR, val_dir=TARGET_VAL_DIR, image_size=IMAGE_SIZE,
                   batch_size=8)
inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
x = keras.layers.Dropout(0.2)(base(inputs))
# A zero kernel: until it trains, the head gives every class the same probability.
outputs = keras.layers.Dense(len(target.class_names), activation="softmax",
                             kernel_initializer="zeros")(x)
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
# `sparse_categorical_crossentropy`. Before any training the new head, all zeros, scores
# every class alike (the first one wins the ties): chance.

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
# Now unfreeze the base but keep its BatchNorm layers frozen with `freeze_batchnorm`
# (it returns how many it froze), then **recompile** (the trainable state is captured
# at compile time) with a learning rate a hundred times lower than the head's.
#
# Note: in Keras 3, building the model with `base(inputs, training=False)` does *not*
# keep BatchNorm in inference mode. `fit` calls the outer model with `training=True`,
# which is passed on to every layer and overrides the `False` (keras-team/keras#20285),
# so once the base is trainable its BatchNorm statistics would update on every small
# batch. Freeze the BatchNorm layers themselves, as here.

# %%
base.trainable = True
print("BatchNorm layers frozen:", freeze_batchnorm(base))
model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
print(f"Trainable parameters: {trainable_count(model):,}")
model.fit(target.train, validation_data=target.val, epochs=6, shuffle=False, verbose=2)
accuracy["fine-tuned"] = val_accuracy(model)
assert np.array_equal(keras.ops.convert_to_numpy(bn.moving_mean), moving_mean)

# %% [markdown]
# ## 7. Before and after
#
# The by-hand phases, with the two trainer runs of section 4 on the same validation
# images.

# %%
for phase, value in accuracy.items():
    print(f"{phase:<24} validation accuracy {value:.3f}")
results = {**{f"by hand: {k}": v for k, v in accuracy.items()},
           "train(): from scratch": scratch["top1"],
           "train(): fine-tuned": finetuned["top1"]}
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(results), list(results.values()))
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
