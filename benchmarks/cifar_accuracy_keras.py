#!/usr/bin/env python3
"""CIFAR-10 accuracy check for `resnet_tf.build_resnet` with Keras 3 (JAX backend).

A standalone script: it imports the installed `resnet_tf` (`pip install -e .`; on a
machine with JAX and Keras only, `pip install -e . --no-deps`) and only its model layer,
which never imports TensorFlow on another backend, so it runs with `KERAS_BACKEND=jax`
(the default it sets). It is not `train.py`.

Data
    `--data` is a tar.gz of JPEGs laid out as `train/<class>/NNNN.jpg` (the CIFAR-10
    training split, 5000 32x32 images per class). Images are decoded with PIL in a
    multiprocessing pool. Labels are the class folder names in sorted order
    (airplane=0, automobile=1, bird=2, cat=3, deer=4, dog=5, frog=6, horse=7,
    ship=8, truck=9: the usual CIFAR-10 order).

Validation split (reproducible)
    rng = numpy.random.default_rng(seed)      # one generator, --split-seed, default 0
    for class in sorted(class names):
        names = sorted(file names of that class)
        order = rng.permutation(len(names))
        val   = names[order[:round(0.1 * len(names))]]   # 500 per class
        train = names[order[round(0.1 * len(names)):]]   # 4500 per class
    With --limit N, each class first keeps only its first ceil(N / 10) file names
    (sorted), then the same split is applied.

Recipe (defaults)
    pixels / 255, normalised with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225);
    training augmentation on the accelerator, per image: zero-pad 4, random 32x32
    crop, random horizontal flip (layer `CropFlip`, active only in training);
    SGD, Nesterov momentum 0.9, batch 512, peak learning rate 0.1 * batch / 128,
    linear warmup (--warmup-epochs 3) then cosine decay to 0 over the remaining steps;
    weight decay: `--weight-decay` is the coupled (PyTorch-style L2) value, 5e-4.
    Keras' SGD decays decoupled (`w -= lr * wd * w`, outside the momentum buffer),
    while L2 goes through the momentum buffer, which multiplies it by
    1 / (1 - momentum) in steady state, so Keras gets weight_decay = 5e-4 / (1 - 0.9)
    = 5e-3 (pass --literal-weight-decay to hand the value to Keras unchanged);
    BatchNorm gamma/beta and biases are excluded from decay;
    mixed_bfloat16 policy; categorical cross-entropy (--label-smoothing, default 0).
    Each training epoch is a fresh permutation of the training images with the last
    partial batch dropped (one compiled shape); validation uses batch 1000.

Output
    One line per epoch (train loss/acc on augmented batches, val loss/top-1, lr, wall
    time), the history as JSON at --history and as CSV beside it, then the final and
    best validation top-1.

    KERAS_BACKEND=jax python benchmarks/cifar_accuracy_keras.py \
        --data train.tar.gz --depth 18 --epochs 60 --history out/r18.json
"""

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import tarfile
import time
from multiprocessing import Pool

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="tar.gz of train/<class>/*.jpg")
    p.add_argument("--history", required=True, help="JSON history path (CSV written beside it)")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--base-lr", type=float, default=0.1, help="learning rate per 128 images")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--warmup-epochs", type=float, default=3.0)
    p.add_argument("--weight-decay", type=float, default=5e-4,
                   help="coupled (L2, PyTorch-style) weight decay; see --literal-weight-decay")
    p.add_argument("--literal-weight-decay", action="store_true",
                   help="pass --weight-decay to Keras' decoupled SGD weight_decay unchanged")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--precision", default="mixed_bfloat16",
                   help="Keras dtype policy (mixed_bfloat16, float32, ...)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=1, help="weights init / shuffling / augmentation")
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first ceil(limit/10) files (by name) of each class")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="JPEG decode processes")
    p.add_argument("--val-batch-size", type=int, default=1000)
    p.add_argument("--steps-per-execution", type=int, default=1)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data


def _decode_chunk(blobs):
    from PIL import Image

    out = np.empty((len(blobs), 32, 32, 3), np.uint8)
    for i, b in enumerate(blobs):
        with Image.open(io.BytesIO(b)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if arr.shape != (32, 32, 3):
            raise ValueError(f"expected a 32x32 RGB image, got {arr.shape}")
        out[i] = arr
    return out


def read_tar(path):
    """{class_name: {file_name: jpeg_bytes}} from train/<class>/<file>.jpg members."""
    files = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = m.name.strip("./").split("/")
            if len(parts) != 3 or parts[0] != "train" or not parts[2].lower().endswith(".jpg"):
                continue
            files.setdefault(parts[1], {})[parts[2]] = tar.extractfile(m).read()
    if not files:
        raise ValueError(f"no train/<class>/*.jpg members in {path}")
    return files


def split_names(files, val_fraction, seed, limit=0):
    """The documented stratified split: lists of (class_index, file_name)."""
    rng = np.random.default_rng(seed)
    classes = sorted(files)
    per_class_limit = math.ceil(limit / len(classes)) if limit else 0
    train, val = [], []
    for label, cls in enumerate(classes):
        names = sorted(files[cls])
        if per_class_limit:
            names = names[:per_class_limit]
        order = rng.permutation(len(names))
        n_val = int(round(val_fraction * len(names)))
        val += [(label, names[i]) for i in order[:n_val]]
        train += [(label, names[i]) for i in order[n_val:]]
    return classes, train, val


def decode(files, classes, items, workers, pool):
    blobs = [files[classes[label]][name] for label, name in items]
    labels = np.array([label for label, _ in items], np.int32)
    chunk = max(1, min(1000, math.ceil(len(blobs) / max(1, workers))))
    chunks = [blobs[i:i + chunk] for i in range(0, len(blobs), chunk)]
    parts = pool.map(_decode_chunk, chunks) if pool is not None else map(_decode_chunk, chunks)
    images = np.concatenate(list(parts)) if chunks else np.empty((0, 32, 32, 3), np.uint8)
    return images, labels


def load_data(args):
    t0 = time.time()
    files = read_tar(args.data)
    t_read = time.time() - t0
    classes, train_items, val_items = split_names(files, args.val_fraction, args.split_seed,
                                                  args.limit)
    pool = Pool(args.workers) if args.workers > 1 else None
    try:
        x_train, y_train = decode(files, classes, train_items, args.workers, pool)
        x_val, y_val = decode(files, classes, val_items, args.workers, pool)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    print(f"data: {len(x_train)} train / {len(x_val)} val images, {len(classes)} classes "
          f"({', '.join(classes)}); read {t_read:.1f}s, total {time.time() - t0:.1f}s "
          f"with {args.workers} decode processes", flush=True)
    return classes, x_train, y_train, x_val, y_val


# ---------------------------------------------------------------------------- model


def make_keras_parts():
    """Keras-dependent classes, defined after the data is decoded (no fork after JAX)."""
    import keras
    from keras import ops

    class CropFlip(keras.layers.Layer):
        """Per-image zero-pad + random crop + random horizontal flip, training only.

        Done as two one-hot matrix products, so it runs on the accelerator on any
        backend; it works on raw 0..255 values, which every matmul precision
        (bf16/tf32/f32) represents exactly, so the crop is exact.
        """

        def __init__(self, pad=4, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.pad = pad
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, x, training=None):
            x = ops.cast(x, "float32")
            if not training:
                return x
            p = self.pad
            n = ops.shape(x)[0]
            h, w = x.shape[1], x.shape[2]
            xp = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
            oy = keras.random.randint((n,), 0, 2 * p + 1, seed=self.seed_generator)
            ox = keras.random.randint((n,), 0, 2 * p + 1, seed=self.seed_generator)
            flip = keras.random.randint((n,), 0, 2, seed=self.seed_generator)
            rows = ops.arange(h, dtype="int32")[None, :] + oy[:, None]  # (n, h)
            cols = ops.arange(w, dtype="int32")[None, :]
            cols = ops.where(flip[:, None] == 1, (w - 1) - cols, cols) + ox[:, None]  # (n, w)
            sy = ops.one_hot(rows, h + 2 * p, dtype="float32")  # (n, h, H)
            sx = ops.one_hot(cols, w + 2 * p, dtype="float32")  # (n, w, W)
            x = ops.einsum("nih,nhwc->niwc", sy, xp)
            return ops.einsum("njw,niwc->nijc", sx, x)

        def compute_output_shape(self, input_shape):
            return input_shape

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak, warmup_steps, total_steps):
            self.peak = float(peak)
            self.warmup_steps = int(warmup_steps)
            self.total_steps = int(total_steps)

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = float(max(self.warmup_steps, 1))
            decay = float(max(self.total_steps - self.warmup_steps, 1))
            warm_lr = self.peak * (step + 1.0) / warm
            t = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
            cos_lr = self.peak * 0.5 * (1.0 + ops.cos(math.pi * t))
            return ops.where(step < self.warmup_steps, warm_lr, cos_lr)

        def get_config(self):
            return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                    "total_steps": self.total_steps}

    class TrainData(keras.utils.PyDataset):
        """A new permutation every epoch; the last partial batch is dropped."""

        def __init__(self, x, y, batch_size, seed):
            super().__init__()
            self.x, self.y, self.batch_size = x, y, batch_size
            self.rng = np.random.default_rng(seed)
            self.perm = self.rng.permutation(len(x))

        def __len__(self):
            return len(self.x) // self.batch_size

        def __getitem__(self, i):
            idx = np.sort(self.perm[i * self.batch_size:(i + 1) * self.batch_size])
            return self.x[idx], self.y[idx]

        def on_epoch_end(self):
            self.perm = self.rng.permutation(len(self.x))

    return keras, CropFlip, WarmupCosine, TrainData


def build_model(keras, CropFlip, args, classes):
    import resnet_tf

    inputs = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = CropFlip(4, seed=args.seed, dtype="float32", name="crop_flip")(inputs)
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale")(x)
    x = keras.layers.Normalization(mean=list(MEAN), variance=[s * s for s in STD],
                                   dtype="float32", name="normalize")(x)
    backbone = resnet_tf.build_resnet(args.depth, stem="cifar", input_shape=(32, 32, 3),
                                      classes=classes)
    outputs = backbone(x)
    return keras.Model(inputs, outputs, name=f"cifar_{backbone.name}"), backbone


# ----------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    classes, x_train, y_train, x_val, y_val = load_data(args)
    num_classes = len(classes)

    keras, CropFlip, WarmupCosine, TrainData = make_keras_parts()
    backend = keras.backend.backend()
    versions = {"keras": keras.__version__, "backend": backend,
                "python": platform.python_version(), "numpy": np.__version__}
    if backend == "jax":
        import jax

        versions["jax"] = jax.__version__
        versions["devices"] = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    print("versions:", json.dumps(versions), flush=True)

    keras.utils.set_random_seed(args.seed)
    keras.config.set_dtype_policy(args.precision)

    model, backbone = build_model(keras, CropFlip, args, num_classes)
    eye = np.eye(num_classes, dtype="float32")
    train_data = TrainData(x_train, eye[y_train], args.batch_size, args.seed)
    steps_per_epoch = len(train_data)
    if steps_per_epoch == 0:
        raise ValueError("fewer training images than one batch")
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))
    peak_lr = args.base_lr * args.batch_size / 128.0
    keras_wd = args.weight_decay if args.literal_weight_decay else (
        args.weight_decay / (1.0 - args.momentum))
    schedule = WarmupCosine(peak_lr, warmup_steps, total_steps)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=args.momentum,
                                     nesterov=True, weight_decay=keras_wd)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
        steps_per_execution=args.steps_per_execution,
    )
    config = {**vars(args), "model": backbone.name, "params": int(backbone.count_params()),
              "train_images": int(len(x_train)), "val_images": int(len(x_val)),
              "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
              "warmup_steps": warmup_steps, "peak_lr": peak_lr,
              "keras_weight_decay": keras_wd, "versions": versions}
    print("config:", json.dumps(config), flush=True)

    history = []
    csv_path = os.path.splitext(args.history)[0] + ".csv"
    os.makedirs(os.path.dirname(os.path.abspath(args.history)), exist_ok=True)
    start = time.time()

    def dump():
        best = max(history, key=lambda r: r["val_acc"]) if history else None
        with open(args.history, "w") as f:
            json.dump({"config": config, "epochs": history,
                       "final_val_acc": history[-1]["val_acc"] if history else None,
                       "best_val_acc": best["val_acc"] if best else None,
                       "best_epoch": best["epoch"] if best else None,
                       "wall_s": time.time() - start}, f, indent=1)
        if history:
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(history[0]))
                w.writeheader()
                w.writerows(history)

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            step = (epoch + 1) * steps_per_epoch - 1
            row = {
                "epoch": epoch + 1,
                "train_loss": round(float(logs.get("loss", float("nan"))), 5),
                "train_acc": round(float(logs.get("acc", float("nan"))), 5),
                "val_loss": round(float(logs.get("val_loss", float("nan"))), 5),
                "val_acc": round(float(logs.get("val_acc", float("nan"))), 5),
                "lr_end": round(float(schedule(step)), 6),
                "epoch_s": round(time.time() - self.t0, 2),
                "elapsed_s": round(time.time() - start, 1),
            }
            history.append(row)
            print(f"epoch {row['epoch']:3d}/{args.epochs}  loss {row['train_loss']:.4f}  "
                  f"acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  "
                  f"val_acc {row['val_acc']:.4f}  lr {row['lr_end']:.4f}  "
                  f"{row['epoch_s']:.1f}s  (total {row['elapsed_s']:.0f}s)", flush=True)
            dump()

    model.fit(
        train_data,
        epochs=args.epochs,
        validation_data=(x_val, eye[y_val]),
        validation_batch_size=args.val_batch_size,
        callbacks=[EpochLog()],
        verbose=0,
    )
    dump()
    best = max(history, key=lambda r: r["val_acc"])
    print(f"final val top-1 {history[-1]['val_acc']:.4f} (epoch {history[-1]['epoch']}); "
          f"best {best['val_acc']:.4f} (epoch {best['epoch']}); "
          f"wall {time.time() - start:.0f}s for {len(history)} epochs", flush=True)
    if "tensorflow" in sys.modules:
        print("warning: tensorflow was imported by a dependency", flush=True)
    return history


if __name__ == "__main__":
    main()
