"""Writes the example notebooks from the cell sources below, without outputs.

    python notebooks/make_notebooks.py           # (re)write notebooks/*.ipynb
    python notebooks/make_notebooks.py --check   # exit 1 if a stored notebook differs

Edit the notebooks here, not in Jupyter, so that reviews see plain Python and Markdown
and the stored files never carry outputs. Cell ids are fixed, so the output is stable.
tests/test_notebooks.py executes every notebook and checks that this script reproduces
the stored files.
"""

import argparse
import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

# --- shared cells -----------------------------------------------------------------------

# The generated data: each class is a pattern drawn in random colours, so a model must
# learn shapes, not colours; the frequency, phase, position and noise vary per image.
PATTERN_FOLDER = '''
import os

import numpy as np
from PIL import Image


def pattern_mask(name, x, y, rng):
    """A boolean image of pattern `name` with a random frequency, phase and position."""
    f, phase = rng.uniform(2, 4), rng.uniform(0, 1)
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
    wave = lambda t, level=0.0: np.sin(2 * np.pi * (f * t + phase)) > level
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
'''

# --- 01 quickstart ----------------------------------------------------------------------

QUICKSTART = [
    ("md", """
    # Quickstart: build, train and evaluate a ResNet

    This notebook shows the three things most users do with `resnet_tf`:

    1. **Build** a ResNet (or your own network from the residual blocks) as a plain
       `keras.Model`, and inspect it.
    2. **Train** it on a folder of images with the library's trainer, the same code
       `python train.py` runs.
    3. **Evaluate** the trained model on held-out images.

    By default it trains on a small generated image folder, so it runs on a laptop CPU in
    about a minute; section 3 shows how to point it at real data. Everything it writes
    goes to a temporary folder, printed below.
    """),
    ("code", """
    import os
    import tempfile

    import keras
    import numpy as np

    import resnet_tf
    from resnet_tf import build_resnet, bottleneck_block, feature_extractor, residual_block

    print(f"resnet_tf {resnet_tf.__version__}, Keras {keras.__version__} "
          f"({keras.backend.backend()} backend)")
    WORK = tempfile.mkdtemp(prefix="resnet_tf_quickstart_")
    print("Working folder:", WORK)
    """),
    ("md", """
    ## 1. Build a ResNet

    `build_resnet(depth, ...)` returns an ordinary functional `keras.Model`. Its arguments
    are the ones `keras.applications.ResNet50` users know (`include_top`, `weights`,
    `input_shape`, `pooling`, `classes`, `classifier_activation`).

    Depths 20, 32, 44, 56, 110 are the CIFAR networks of the ResNet paper: a 3x3 stem and
    three stages of 16/32/64 filters, for small images. Layer names follow
    keras.applications (`conv2_block1_1_conv`, ...), which keeps weight files portable.
    """),
    ("code", """
    resnet20 = build_resnet(20, input_shape=(32, 32, 3), classes=10)
    resnet20.summary(line_length=100)
    """),
    ("md", """
    Each depth is one row of `resnet_tf.SPECS` (block type, blocks per stage, family);
    variants such as ResNeXt, Wide ResNet and squeeze-and-excitation are arguments, not
    new functions. Trainable parameters equal torchvision's counts (ResNet-50:
    25,557,032); Keras' total adds BatchNorm's moving means and variances.
    """),
    ("code", """
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
    """),
    ("md", """
    For detection or segmentation, `feature_extractor` turns a backbone into a model that
    returns the output of every stage (`C2`..`C5`, at strides 4, 8, 16 and 32 with the
    ImageNet stem), sharing the backbone's weights.
    """),
    ("code", """
    backbone = feature_extractor(build_resnet(18, include_top=False))
    features = backbone(np.zeros((1, 128, 128, 3), "float32"))
    for name, tensor in features.items():
        print(name, tuple(tensor.shape))
    """),
    ("md", """
    ## 2. Your own network from the residual blocks

    `residual_block` (two 3x3 convolutions, as in ResNet-18/34) and `bottleneck_block`
    (1x1-3x3-1x1, as in ResNet-50) take a Keras tensor and return one, so they compose
    with any Keras layers. `stride=2` halves the resolution; the shortcut projects when
    the shape changes. The bottleneck below is a ResNeXt block (8 groups) with
    squeeze-and-excitation.
    """),
    ("code", """
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
    """),
    ("md", """
    ## 3. Data: a folder with one sub-folder per class

    The trainer reads any folder laid out as `DATA_DIR/<class name>/<image>.jpg` (JPEG,
    PNG, BMP or GIF; class `i` is the `i`-th folder name in sorted order). It holds out a
    fixed fraction of every class for validation, decodes small datasets into memory
    once, and augments with CIFAR-style pad-and-crop and flips for images of 64 px or
    less.

    **To use real data**, set `DATA_DIR` (and optionally `TEST_DIR`) below, e.g. to
    CIFAR-10 as image folders (`cifar10/train/airplane/0000.jpg`, ...), and raise
    `EPOCHS` (the CIFAR recipe trains for 40).
    Left at `None`, the next cell generates four classes of patterns (stripes, discs,
    checkerboards) in random colours: small enough to train in seconds, hard enough
    that the accuracy means something.
    """),
    ("code", """
    DATA_DIR = None  # e.g. "/data/cifar10/train": one sub-folder of images per class
    TEST_DIR = None  # held-out images with the same class sub-folders
    IMAGE_SIZE = 32
    EPOCHS = 3
    """),
    ("code", [PATTERN_FOLDER, """
    CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
    if DATA_DIR is None:
        DATA_DIR = make_pattern_folder(os.path.join(WORK, "train"), CLASSES, per_class=80, seed=0)
        TEST_DIR = make_pattern_folder(os.path.join(WORK, "test"), CLASSES, per_class=25, seed=1)
    print("Training images from", DATA_DIR)
    """]),
    ("code", """
    import matplotlib.pyplot as plt

    from resnet_tf.data import list_image_folder

    files, labels, class_names = list_image_folder(DATA_DIR)
    print(f"{len(files)} images in {len(class_names)} classes: {', '.join(class_names)}")
    fig, axes = plt.subplots(len(class_names), 8, figsize=(8, len(class_names)))
    for label, row in enumerate(axes):
        examples = [f for f, l in zip(files, labels) if l == label][:8]
        for ax, path in zip(row, examples):
            ax.imshow(Image.open(path))
        for ax in row:
            ax.set_axis_off()
        row[0].set_title(class_names[label], fontsize=8, loc="left")
    plt.show()
    """),
    ("md", """
    ## 4. Train

    `train(TrainConfig(...), RunOptions(...))` is the whole `train.py` command:
    `TrainConfig` holds what defines the result, `RunOptions` where and how it runs.
    Unset fields take the recipe for the image size (for 64 px or less: ResNet-20,
    SGD with Nesterov momentum, 0.4 per 256 images scaled to the batch size, cosine
    decay, weight decay 5e-4 on kernels only, label smoothing 0.1). Here we shorten it to a few epochs and
    skip the warmup. `precision="float32"` keeps this demo in float32 on every machine;
    the default `"auto"` picks mixed precision on recent GPUs and bfloat16-capable CPUs.

    The same run from the command line:

    ```bash
    python train.py --depth 20 --data-dir DATA_DIR --image-size 32 --val-split 0.2 \\
        --epochs 3 --batch-size 32 --warmup-epochs 0 --precision float32 --out RUN_DIR \\
        --no-export
    ```

    The run folder gets `best.keras` (best validation accuracy), `history.csv`,
    `curves.png`, `metrics.json`, `classes.txt` and `config.json`; rerunning the same
    command resumes an interrupted run.
    """),
    ("code", """
    from resnet_tf.training import RunOptions, TrainConfig, train

    RUN_DIR = os.path.join(WORK, "run")
    config = TrainConfig(depth=20, data_dir=DATA_DIR, image_size=IMAGE_SIZE, val_split=0.2,
                         epochs=EPOCHS, batch_size=32, warmup_epochs=0, precision="float32")
    metrics = train(config, RunOptions(out=RUN_DIR, export=False, verbose=2))
    print(sorted(os.listdir(RUN_DIR)))
    """),
    ("md", """
    ## 5. Training curves

    `history.csv` has one row per epoch (the learning rate, and training and validation
    loss and accuracy); the trainer also draws it to `curves.png`.
    """),
    ("code", """
    import csv

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
    """),
    ("md", """
    ## 6. Evaluate on held-out images

    `load_classifier` accepts a run folder (its `best.keras`, class names, image size and
    preprocessing), a `.keras` file or an exported SavedModel; `evaluate` scores it on an
    image folder with the exact preprocessing of validation. This is the
    `resnet-evaluate RUN_DIR --data-dir TEST_DIR` command.
    """),
    ("code", """
    from resnet_tf.evaluate import evaluate, format_metrics, load_classifier

    classifier = load_classifier(RUN_DIR)
    test_metrics = evaluate(classifier, data_dir=TEST_DIR or DATA_DIR)
    print(format_metrics(test_metrics))
    """),
    ("md", """
    The same classifier predicts single files from their encoded bytes (what
    `resnet-predict RUN_DIR image.jpg` prints):
    """),
    ("code", """
    from resnet_tf.evaluate import format_predictions, predict_files

    test_files, _, _ = list_image_folder(TEST_DIR or DATA_DIR)
    results, failures = predict_files(classifier, test_files[::25][:4], top_k=2)
    for result in results:
        result["file"] = os.path.relpath(result["file"], TEST_DIR or DATA_DIR)
    print(format_predictions(results))
    """),
    ("code", """
    chance = 1 / len(test_metrics["class_names"])
    print(f"Validation top-1 accuracy: {metrics['top1']:.3f}")
    print(f"Test top-1 accuracy: {test_metrics['top1']:.3f} (chance: {chance:.3f})")
    assert test_metrics["top1"] > chance, "the model did not learn: check the data and the LR"
    """),
    ("md", """
    Next: `02_transfer_learning.ipynb` reuses a trained backbone for a new task, and
    `03_export_and_serve.ipynb` exports a model for TensorFlow Serving and TFLite.
    The working folder above is left in place for you to inspect; delete it when done.
    """),
]

# --- 02 transfer learning ---------------------------------------------------------------

TRANSFER = [
    ("md", """
    # Transfer learning: a new head on a trained backbone, then fine-tuning

    With few labelled images, start from a network trained on a larger dataset: keep its
    convolutional backbone, put a new classifier on top, and train in two phases:

    1. **Frozen backbone**: only the new head learns. The backbone's BatchNorm layers
       stay in inference mode, so their statistics from the original data are kept.
    2. **Fine-tuning**: unfreeze the backbone (but not its BatchNorm layers) and continue
       at a much lower learning rate, so the pretrained features adapt without being
       destroyed.

    Here the "large" dataset is a generated source task (four patterns) and the target
    task is four *other* patterns with only 30 training images each. The notebook trains
    the source backbone itself in about half a minute; set `BACKBONE_WEIGHTS` to use one
    you already have. Everything is written to a temporary folder.
    """),
    ("code", """
    import os
    import tempfile

    import keras
    import numpy as np

    from resnet_tf import build_resnet
    from resnet_tf.data import load_data

    WORK = tempfile.mkdtemp(prefix="resnet_tf_transfer_")
    print("Working folder:", WORK)
    """),
    ("md", """
    ## 1. Data

    Source task: four patterns (checkerboards, discs, horizontal and vertical stripes),
    80 images each. Target task: crosses, dot grids, rings and diagonal stripes, with 30
    training and 40 validation images per class. Every pattern comes in random colours,
    so the classes differ only in shape. Replace the folders with your own: any folder
    with one sub-folder of images per class works.
    """),
    ("code", [PATTERN_FOLDER, """
    SOURCE_CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
    TARGET_CLASSES = ["cross", "dots", "ring", "stripes_d"]
    SOURCE_DIR = make_pattern_folder(os.path.join(WORK, "source"), SOURCE_CLASSES, 80, seed=0)
    TARGET_DIR = make_pattern_folder(os.path.join(WORK, "target_train"), TARGET_CLASSES, 30, seed=1)
    TARGET_VAL_DIR = make_pattern_folder(os.path.join(WORK, "target_val"), TARGET_CLASSES, 40,
                                         seed=2)
    """]),
    ("md", """
    ## 2. A trained backbone

    `BACKBONE_WEIGHTS` can be any weights file `build_resnet` loads: a `.keras` or
    `.weights.h5` file saved by this library (e.g. `runs/<name>/best.keras` from
    `train.py`), or, for ResNet-50 with `variant="v1"`, keras.applications' ImageNet
    file (then use its preprocessing and 224 px images). Left at `None`, the next cell
    trains a ResNet-20 on the source task with the library's trainer.
    """),
    ("code", """
    BACKBONE_WEIGHTS = None  # e.g. "runs/resnet20_cifar10/best.keras"
    DEPTH, IMAGE_SIZE = 20, 32
    """),
    ("code", """
    if BACKBONE_WEIGHTS is None:
        from resnet_tf.training import RunOptions, TrainConfig, train

        source_run = os.path.join(WORK, "source_run")
        source_metrics = train(
            TrainConfig(depth=DEPTH, data_dir=SOURCE_DIR, image_size=IMAGE_SIZE, val_split=0.2,
                        epochs=8, batch_size=32, warmup_epochs=0, precision="float32"),
            RunOptions(out=source_run, export=False, verbose=0))
        BACKBONE_WEIGHTS = os.path.join(source_run, "best.keras")
        print(f"Source task validation accuracy: {source_metrics['top1']:.3f}")
    """),
    ("md", """
    ## 3. New head on the frozen backbone

    `include_top=False, pooling="avg"` builds the backbone without its classifier and
    ends in a feature vector; a weights file that has a classifier loads into it (the
    classifier is skipped), as long as the other arguments match the trained model.

    `base.trainable = False` freezes the weights **and** runs every BatchNorm layer in
    inference mode: the moving mean and variance from the source data are used, not
    updated. The cell after the next checks that.
    """),
    ("code", """
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
    """),
    ("md", """
    `load_data` returns batched `tf.data` pipelines of normalized images and integer
    labels (augmented for training, fixed order for validation), so the loss is
    `sparse_categorical_crossentropy`. Before any training the new head is guessing:
    """),
    ("code", """
    def val_accuracy(model):
        return model.evaluate(target.val, verbose=0, return_dict=True)["accuracy"]

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    accuracy = {"before training": val_accuracy(model)}
    bn = base.get_layer("conv1_bn")
    moving_mean = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    print(f"Validation accuracy before training: {accuracy['before training']:.3f}")
    """),
    ("code", """
    # load_data's pipelines are already shuffled; shuffle=False only silences a warning.
    model.fit(target.train, validation_data=target.val, epochs=10, shuffle=False, verbose=2)
    accuracy["new head, frozen base"] = val_accuracy(model)
    assert np.array_equal(keras.ops.convert_to_numpy(bn.moving_mean), moving_mean)
    print("BatchNorm moving statistics unchanged.")
    """),
    ("md", """
    ## 4. Fine-tune the backbone at a low learning rate

    Unfreeze the base but keep its BatchNorm layers frozen, then **recompile** (the
    trainable state is captured at compile time) with a learning rate a hundred times
    lower than the head's: large steps on a few examples would undo the pretrained
    features. Frozen BatchNorm layers keep normalizing with the source statistics;
    letting them update from small batches of new data would shift every feature the
    head was just trained on.

    Note: in Keras 3, building the model with `base(inputs, training=False)` does *not*
    achieve this. `fit` calls the outer model with `training=True`, which is passed on
    to every layer and overrides the `False` (keras-team/keras#20285), so once the base
    is trainable its BatchNorm statistics would update. Freeze the BatchNorm layers
    themselves, as here.
    """),
    ("code", """
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
    """),
    ("md", """
    ## 5. Before and after
    """),
    ("code", """
    import matplotlib.pyplot as plt

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
    """),
    ("md", """
    The model saves like any other (`model.save("transfer.keras")`) and exports for
    serving with `resnet_tf.export.export_serving_model`, as `03_export_and_serve.ipynb`
    shows.
    """),
]

# --- 03 export and serve ----------------------------------------------------------------

SERVE = [
    ("md", """
    # Export and serve: SavedModel, TF Serving, TFLite

    A trained model leaves the library in one of two forms:

    - a **SavedModel** for TensorFlow Serving (or any TensorFlow program). It takes the
      encoded image files and decodes and preprocesses them in the graph, so clients
      send JPEG bytes and need no preprocessing code of their own;
    - a **TFLite** file for phones and microcontrollers, in float32 or full-integer int8.

    This notebook trains a small model for half a minute, exports it both ways, calls
    the SavedModel with TensorFlow alone, builds a TF Serving REST request from real JPEG
    bytes together with its response, and compares int8 with float. Everything is
    written to a temporary folder.
    """),
    ("code", """
    import base64
    import json
    import os
    import subprocess
    import sys
    import tempfile

    import numpy as np
    import tensorflow as tf

    WORK = tempfile.mkdtemp(prefix="resnet_tf_serving_")
    print("Working folder:", WORK)
    """),
    ("md", """
    ## 0. A trained model

    Any `.keras` file or `train.py` run folder works below; here we train a ResNet-20 for
    a few epochs on generated patterns (four classes that differ only in shape).
    """),
    ("code", [PATTERN_FOLDER, """
    from resnet_tf.training import RunOptions, TrainConfig, train

    CLASSES = ["checkerboard", "disc", "stripes_h", "stripes_v"]
    TRAIN_DIR = make_pattern_folder(os.path.join(WORK, "train"), CLASSES, per_class=60, seed=0)
    TEST_DIR = make_pattern_folder(os.path.join(WORK, "test"), CLASSES, per_class=10, seed=1)
    RUN_DIR = os.path.join(WORK, "run")
    run_metrics = train(
        TrainConfig(depth=20, data_dir=TRAIN_DIR, image_size=32, val_split=0.2, epochs=4,
                    batch_size=32, warmup_epochs=0, precision="float32"),
        RunOptions(out=RUN_DIR, export=False, verbose=0))
    """]),
    ("md", """
    ## 1. Export a SavedModel

    `load_checkpoint` reads a run folder: the best model, its class names, image size and
    preprocessing preset. `export_serving_model` writes the next numbered version under
    a *model base path*, the folder TF Serving watches (`--model_base_path`); a version
    appears atomically and is never overwritten.

    The exported network is a float32 copy with every BatchNorm folded into the
    convolution before it. From the command line: `resnet-export RUN_DIR --export-dir
    EXPORT_BASE`; `train.py` also exports at the end of a run unless given `--no-export`.
    """),
    ("code", """
    from resnet_tf.export import export_serving_model, load_checkpoint

    model, class_names, image_size, preset, _ = load_checkpoint(RUN_DIR)
    EXPORT_BASE = os.path.join(WORK, "models", "patterns")
    version_dir = export_serving_model(model, EXPORT_BASE, class_names=class_names,
                                       image_size=image_size, preset=preset)
    print("Exported", version_dir)
    for root, _, files in sorted(os.walk(EXPORT_BASE)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print(f"  {os.path.relpath(path, EXPORT_BASE):<50} {os.path.getsize(path):>10,} bytes")
    """),
    ("md", """
    ## 2. Signatures

    A SavedModel is called through named *signatures* with typed inputs and outputs.
    `serving_default` takes a batch of encoded images (JPEG, PNG, GIF, BMP or WebP, any
    size); `serving_pixels` takes uint8 pixels already at the model's input size. Both
    return the probabilities and the top classes with their names and scores.
    `saved_model_cli show --dir VERSION_DIR --all` prints the same from a shell.
    """),
    ("code", """
    loaded = tf.saved_model.load(version_dir)
    for name, function in loaded.signatures.items():
        _, inputs = function.structured_input_signature
        print(name)
        for key, spec in inputs.items():
            print(f"  input   {key:<14} {spec.dtype.name:<8} {spec.shape}")
        for key, spec in function.structured_outputs.items():
            print(f"  output  {key:<14} {spec.dtype.name:<8} {spec.shape}")
    """),
    ("md", """
    ## 3. Call it with JPEG bytes, with TensorFlow alone

    The SavedModel holds no Keras objects and no `resnet_tf` code, so a client needs only
    TensorFlow. To show it, the client below runs in a fresh Python process in which
    importing `resnet_tf` is made impossible; it sends the raw bytes of the test JPEGs.
    """),
    ("code", """
    from resnet_tf.data import list_image_folder

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
    """),
    ("md", """
    The served probabilities equal the Keras model's on the same files decoded and
    preprocessed in Python by `resnet_tf.data` (folding BatchNorm changes only float
    rounding):
    """),
    ("code", """
    from resnet_tf.data import decode_image, preprocess_for_eval

    test_images = np.stack([
        preprocess_for_eval(decode_image(tf.io.read_file(path)), image_size, preset).numpy()
        for path in test_files
    ])
    keras_probabilities = model.predict(test_images, verbose=0)
    difference = np.abs(served_probabilities - keras_probabilities).max()
    print(f"Largest difference, SavedModel vs Keras: {difference:.2e}")
    assert difference < 1e-4
    """),
    ("md", """
    ## 4. TensorFlow Serving's REST API

    TF Serving serves the newest version folder under the model base path:

    ```bash
    docker run -p 8501:8501 -v EXPORT_BASE:/models/patterns -e MODEL_NAME=patterns \\
        tensorflow/serving
    curl -d @request.json http://localhost:8501/v1/models/patterns:predict
    ```

    JSON cannot carry raw bytes, so binary inputs travel base64-encoded as
    `{"b64": "..."}` and the server turns them back into the string tensor
    `image_bytes`. This is the body for two of the test JPEGs, written to
    `request.json` for the `curl` above:
    """),
    ("code", """
    request_files = test_files[:2]
    request = {
        "signature_name": "serving_default",
        "instances": [
            {"image_bytes": {"b64": base64.b64encode(open(path, "rb").read()).decode("ascii")}}
            for path in request_files
        ],
    }
    body = json.dumps(request)
    with open(os.path.join(WORK, "request.json"), "w") as f:
        f.write(body)
    print(f"{len(body):,} bytes: {body[:150]}...")
    """),
    ("md", """
    Docker cannot run here, so the next cell does what the server does with that body,
    on the SavedModel loaded by TensorFlow: decode the base64 inputs, run the signature,
    and answer in the row format, one object per instance holding every output (string
    outputs come back as text).
    """),
    ("code", """
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
    rows = ",\\n  ".join(json.dumps(prediction) for prediction in response["predictions"])
    print('{"predictions": [\\n  ' + rows + "\\n]}")
    """),
    ("md", """
    ## 5. TFLite: float32 and int8

    `resnet_tf.tflite.export_tflite` converts the same folded float32 network. A TFLite
    file takes images already preprocessed (as `preprocess_for_eval` does), and a `.json`
    sidecar records what a client needs for that: class names, size, mean and std, and
    the input and output tensors' quantization.

    `int8` is full-integer quantization: int8 weights, activations, input and output, so
    the file runs on integer-only accelerators at about a quarter of the float size. The
    activation ranges are calibrated on *training* images (`calibration_images` leaves
    out the run's validation split); accuracy is measured on the separate test images.
    """),
    ("code", """
    from resnet_tf.tflite import calibration_images, evaluate_tflite, export_tflite, predict_tflite

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
    """),
    ("md", """
    `predict_tflite` quantizes the normalized images with the input's scale and zero
    point and dequantizes the output, so both files are called the same way:
    """),
    ("code", """
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
    """),
    ("code", """
    float_accuracy = evaluate_tflite(tflite_files["float32"], (test_images, labels))
    int8_accuracy = evaluate_tflite(tflite_files["int8"], (test_images, labels))
    agreement = np.mean(probabilities["TFLite int8"].argmax(1)
                        == probabilities["TFLite float32"].argmax(1))
    print(f"SavedModel top-1 accuracy: {served_accuracy:.3f}")
    print(f"TFLite top-1 accuracy: float32 {float_accuracy:.3f}, int8 {int8_accuracy:.3f}")
    print(f"int8 and float32 predict the same class for {agreement:.1%} of the test images")
    assert np.abs(probabilities["TFLite float32"] - keras_probabilities).max() < 1e-4
    """),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_transfer_learning.ipynb": TRANSFER,
    "03_export_and_serve.ipynb": SERVE,
}


# --- writing ----------------------------------------------------------------------------


def build(cells, stem):
    """A v4 notebook with the given `(kind, source)` cells, no outputs and fixed cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        parts = [source] if isinstance(source, str) else source
        source = "\n\n\n".join(textwrap.dedent(p).strip("\n") for p in parts)
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "md"
                else nbformat.v4.new_code_cell(source))
        cell.id = f"{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name):
    return nbformat.writes(build(NOTEBOOKS[name], name.split("_")[0]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="report notebooks that differ from this script; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = os.path.join(HERE, name)
        text = render(name)
        if args.check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print(f"Out of date (run python {os.path.relpath(__file__)}): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
