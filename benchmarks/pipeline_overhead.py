"""Input-pipeline overhead of each training augmentation policy (issue 13).

    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10/train.tar.gz -C /tmp/cifar
    python benchmarks/pipeline_overhead.py                      # 60 steps x 3 rounds
    python benchmarks/pipeline_overhead.py --steps 20 --rounds 2 --policies basic,randaugment
    python benchmarks/pipeline_overhead.py --out benchmarks/results/pipeline.json

What it measures, as benchmarks/run.py's input-pipeline part does: `model.fit` of ResNet-20
(batch 128, train.py's auto precision, categorical cross-entropy on one-hot labels) on
`load_data(data_dir=...)` with each policy (the CIFAR-10 JPEG folder, decoded into memory,
45,000 training images after train.py's 10 % validation split) against
`load_data("synthetic")` (one fixed batch, so the input costs nothing). Each `fit` call
times the steps after its first one. Every policy is timed right next to a synthetic run
(synthetic first in every other pair), the policies rotating round by round, so load
from other processes, which drifts within minutes on a shared machine, hits both sides
of a pair alike. Overhead = 1 - (real img/s / synthetic img/s), the median over rounds of
each pair's ratio, from wall time and, less sensitive to other processes, from this
process's CPU time. Then each pipeline alone, without a model: the images per second it
produces on the whole machine and its CPU cost per image, which gives an estimate of
the overhead that needs no pairing: pipeline CPU / (pipeline CPU + model CPU) per image,
the share of the cores it takes from the model when both are busy. For reference,
`keras.layers.RandAugment` on the basic pipeline's batches (pipeline alone only, unless
`--keras-reference-training`).
"""

import argparse
import os
import statistics
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CIFAR_TAR = os.path.join(REPO, "..", "shared", "data", "cifar10", "train.tar.gz")
DEFAULT_DATA = "/tmp/cifar/train"

# label -> load_data keyword arguments
POLICIES = {
    "basic": dict(augment="basic"),
    "randaugment": dict(augment="randaugment"),
    "augmix": dict(augment="augmix"),
    "basic+mixup/cutmix": dict(augment="basic", mixup=0.2, cutmix=1.0),
    "basic+random erasing": dict(augment="basic", random_erasing=0.25),
}
KERAS_REFERENCE = "keras.layers.RandAugment (reference)"


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def cifar_folder(path):
    if os.path.isdir(path):
        return path
    if path != DEFAULT_DATA or not os.path.exists(CIFAR_TAR):
        raise SystemExit(f"No image folder at {path}.")
    log(f"Extracting {os.path.normpath(CIFAR_TAR)} into /tmp/cifar")
    os.makedirs("/tmp/cifar", exist_ok=True)
    with tarfile.open(CIFAR_TAR) as tar:
        tar.extractall("/tmp/cifar", filter="data")
    return path


def keras_randaugment(dataset):
    """The basic pipeline's batches through `keras.layers.RandAugment` (on 0..255 pixels)."""
    import keras
    import tensorflow as tf

    from resnet_tf.data import MEAN, STD, normalize

    layer = keras.layers.RandAugment(value_range=(0, 255), dtype="float32")
    mean = tf.constant([255 * m for m in MEAN])
    std = tf.constant([255 * s for s in STD])

    def apply(images, labels):
        pixels = tf.clip_by_value(images * std + mean, 0, 255)
        return normalize(layer(pixels, training=True)), labels

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=60, help="timed fit steps per call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pipeline-batches", type=int, default=40,
                        help="batches timed per pipeline-alone call")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated, from: {', '.join(POLICIES)}")
    parser.add_argument("--no-keras-reference", action="store_true",
                        help="skip keras.layers.RandAugment's pipeline-alone reference")
    parser.add_argument("--keras-reference-training", action="store_true",
                        help="also train on keras.layers.RandAugment's pipeline")
    parser.add_argument("--out", help="also write the result file (JSON) here, e.g. "
                        "benchmarks/results/pipeline.json")
    args = parser.parse_args()
    unknown = set(args.policies.split(",")) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; expected some of {list(POLICIES)}")
    data_dir = cifar_folder(args.data_dir)

    import keras
    import tensorflow as tf

    from resnet_tf import build_resnet
    from resnet_tf.data import load_data
    from resnet_tf.training import DEFAULT_VAL_SPLIT, resolve_precision

    precision = resolve_precision("auto")[0]
    log(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"precision {precision}, batch {args.batch}, data {data_dir}")

    datasets, info = {}, {}

    def one_hot(data):
        if data.one_hot_labels:
            return data.train
        classes = len(data.class_names)
        return data.train.map(lambda x, y: (x, tf.one_hot(y, classes)),
                              num_parallel_calls=tf.data.AUTOTUNE)

    for label in args.policies.split(","):
        start = time.perf_counter()
        data = load_data(data_dir=data_dir, batch_size=args.batch, val_split=DEFAULT_VAL_SPLIT,
                         **POLICIES[label])
        datasets[label] = one_hot(data).repeat()
        info[label] = dict(kwargs=POLICIES[label], load_s=round(time.perf_counter() - start, 1),
                           train_examples=data.train_examples)
        log(f"  {label}: loaded in {info[label]['load_s']} s")
        if label == "basic" and not args.no_keras_reference:
            datasets[KERAS_REFERENCE] = keras_randaugment(one_hot(data)).repeat()
    synthetic = load_data("synthetic", image_size=32, batch_size=args.batch,
                          synthetic_classes=10)
    datasets["synthetic"] = one_hot(synthetic).repeat()

    keras.config.set_dtype_policy(precision)
    model = build_resnet(20, input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=False)

    def fit_seconds(label, steps):
        """(wall, CPU) seconds per step, the steps after the first."""
        ends = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                ends.append((time.perf_counter(), time.process_time()))

        model.fit(datasets[label], epochs=1, steps_per_epoch=steps + 1, verbose=0,
                  callbacks=[Clock()])
        return tuple((b - a) / steps for a, b in zip(ends[0], ends[-1]))

    def pipeline_seconds(label, batches):
        """(wall, CPU) seconds per batch of the pipeline alone."""
        iterator = iter(datasets[label])
        next(iterator)
        start = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(iterator)
        return ((time.perf_counter() - start[0]) / batches,
                (time.process_time() - start[1]) / batches)

    trained = [label for label in datasets
               if label != KERAS_REFERENCE or args.keras_reference_training]
    log("Warm-up (traces the train step and every pipeline)")
    for label in trained:
        fit_seconds(label, 2)

    policies = [label for label in trained if label != "synthetic"]
    log(f"Training: {args.rounds} rounds x {len(policies)} (policy, synthetic) pairs x "
        f"{args.steps} steps")
    times = {label: [] for label in policies}  # [(policy (wall, cpu), synthetic (wall, cpu))]
    loads = []
    for r in range(args.rounds):
        shift = r % len(policies)
        for i, label in enumerate(policies[shift:] + policies[:shift]):
            if (r + i) % 2:
                pair = fit_seconds(label, args.steps), fit_seconds("synthetic", args.steps)
            else:
                pair = tuple(reversed((fit_seconds("synthetic", args.steps),
                                       fit_seconds(label, args.steps))))
            times[label].append(pair)
        loads.append(os.getloadavg()[0])
        log(f"  round {r + 1}/{args.rounds} (load {loads[-1]:.1f}): " + ", ".join(
            f"{label} {args.batch / times[label][-1][0][0]:.0f} vs "
            f"{args.batch / times[label][-1][1][0]:.0f} img/s" for label in policies))

    log(f"Pipelines alone: {args.rounds} rounds x {args.pipeline_batches} batches")
    alone = {label: [] for label in datasets if label != "synthetic"}
    for r in range(args.rounds):
        order = list(alone)
        shift = r % len(order)
        for label in order[shift:] + order[:shift]:
            alone[label].append(pipeline_seconds(label, args.pipeline_batches))
        log(f"  round {r + 1}/{args.rounds}: " + ", ".join(
            f"{label} {args.batch / alone[label][-1][0]:.0f} img/s" for label in alone))

    median = statistics.median
    synthetic = [pair[1] for label in policies for pair in times[label]]
    synthetic_ips = args.batch / median(s[0] for s in synthetic)
    model_cpu = median(s[1] for s in synthetic) / args.batch  # CPU s per image, no input cost
    rows = []
    for label in alone:
        row = dict(info.get(label, {}))
        row["alone_img_s"] = args.batch / median(a[0] for a in alone[label])
        pipeline_cpu = median(a[1] for a in alone[label]) / args.batch
        row["pipeline_cpu_ms_per_img"] = 1e3 * pipeline_cpu
        row["estimated_overhead"] = pipeline_cpu / (pipeline_cpu + model_cpu)
        if label in times:
            # Per pair: real img/s / synthetic img/s = synthetic s/step / real s/step.
            wall = [s[0] / p[0] for p, s in times[label]]
            cpu = [s[1] / p[1] for p, s in times[label]]
            row.update(train_img_s=args.batch / median(p[0] for p, _ in times[label]),
                       throughput_ratio=median(wall), overhead=1 - median(wall),
                       ratio_range=(min(wall), max(wall)), cpu_overhead=1 - median(cpu))
        rows.append((label, row))

    setup = (f"ResNet-20 @32, batch {args.batch}, {precision}, {os.cpu_count()} CPUs, load "
             f"average {median(loads):.1f}; synthetic in memory: {synthetic_ips:.0f} img/s, "
             f"{1e3 * model_cpu:.2f} CPU ms per image (medians of {args.rounds} rounds of "
             f"{args.steps} steps).")
    columns = ["policy", "training img/s", "real / synthetic (range)", "overhead, wall",
               "overhead, CPU time", "pipeline alone img/s", "pipeline CPU ms/img",
               "estimated overhead"]
    cells = []
    for label, row in rows:
        tail = [f"{row['alone_img_s']:.0f}", f"{row['pipeline_cpu_ms_per_img']:.3f}",
                f"{100 * row['estimated_overhead']:.1f} %"]
        if "train_img_s" in row:
            lo, hi = row["ratio_range"]
            cells.append([label, f"{row['train_img_s']:.0f}",
                          f"{row['throughput_ratio']:.3f} ({lo:.3f}-{hi:.3f})",
                          f"{100 * row['overhead']:+.1f} %", f"{100 * row['cpu_overhead']:+.1f} %", *tail])
        else:
            cells.append([label, "-", "-", "-", "-", *tail])
    print("", setup, "", " | ".join(columns), *(" | ".join(r) for r in cells), sep="\n")
    if args.out:
        import results_json

        results_json.write(args.out, results_json.result(
            "Input-pipeline overhead of each augmentation policy", "pipeline",
            results_json.command_line(), [results_json.table("Overhead of each policy", columns, cells)],
            setup, machine=results_json.machine(), date=results_json.today()))


if __name__ == "__main__":
    main()
