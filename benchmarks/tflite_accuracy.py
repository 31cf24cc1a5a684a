#!/usr/bin/env python3
"""Top-1, file size and single-image CPU latency of a run's SavedModels and TFLite exports.

    python benchmarks/tflite_accuracy.py /tmp/runs/r20 --data-dir /tmp/cifar/train \\
        --val-split 0.1 --out benchmarks/results/tflite.json

For a training run folder (best.keras, config.json, classes.txt) this exports the
SavedModel (float32, and bfloat16 with `precision="bfloat16"`) and the float32, float16 and int8 TFLite files into --workdir (default: a
temporary folder), and measures each on the run's validation split: the same seeded split
the trainer held out (`load_data` with the config's seed and val_split; --val-split and
--seed override them), eval preprocessing. The TFLite files are the ones `resnet-export
RUN --tflite float32,float16,int8` writes: this script calls the command's own
`resnet_tf.cli.export.prepare_tflite_exports`, so int8 is calibrated as the command
calibrates it (200 images drawn at random from the run's training split, never its
validation images; --data-dir as the command's) and takes int8 input and output.

- Top-1: the SavedModel is fed the validation images as uint8 pixels through its
  `serving_pixels` signature when the pixels can be recovered exactly from the normalized
  images (CIFAR at its native size); otherwise its network, `export.inference_model`, runs
  in Keras. "Agreement" is the fraction of images whose top class equals the SavedModel's.
- Size: the SavedModel version folder, or the .tflite file, in KB (1024 bytes).
- Latency: one image per call, --threads intra-op threads (TFLite `num_threads`), median
  and 90th percentile of --runs calls after a warm-up. The models take turns call by call
  (rotating the order every round) so load from other processes hits all alike.

It prints the table and whether int8 stays within --max-int8-drop points of the
SavedModel's top-1 (the issue's limit: 1 point), and writes them to --out as a result
file (JSON, benchmarks/results_json.py).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="training run folder with best.keras and config.json")
    parser.add_argument("--data-dir", help="training image folder (default: the config's data_dir)")
    parser.add_argument("--val-split", type=float, help="default: the config's val_split")
    parser.add_argument("--seed", type=int, help="validation split seed (default: the config's)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per model first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per model call")
    parser.add_argument("--batch-size", type=int, default=250, help="batch size for top-1")
    parser.add_argument("--max-int8-drop", type=float, default=1.0,
                        help="allowed int8 top-1 loss in points against the SavedModel")
    parser.add_argument("--workdir", help="keep the exported files here (default: a temporary folder)")
    parser.add_argument("--out", help="also write the result file (JSON) here")
    return parser.parse_args(argv)


def _serve_pixels(served, pixels, batch_size):
    """Probabilities from a SavedModel's `serving_pixels` signature, batch by batch."""
    import numpy as np
    import tensorflow as tf

    return np.concatenate([
        served.serve_pixels(tf.constant(pixels[i:i + batch_size]))["probabilities"].numpy()
        for i in range(0, len(pixels), batch_size)])


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    # Before any op runs: the SavedModel's latency is then measured on --threads too.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from resnet_tf import data
    from resnet_tf.cli.export import prepare_tflite_exports
    from resnet_tf.export import (
        QUANTIZATIONS,
        export_serving_model,
        inference_model,
        load_checkpoint,
        predict_tflite,
    )
    from resnet_tf.export.tflite import sidecar_path, single_image_runner
    from resnet_tf.runs import settings_beside

    model, class_names, image_size, preset, _ = load_checkpoint(args.run_dir)
    config = settings_beside(args.run_dir)
    data_dir = args.data_dir or config.get("data_dir")
    val_split = args.val_split if args.val_split is not None else config.get("val_split")
    seed = args.seed if args.seed is not None else config.get("seed", 0)
    loaded = data.load_data(
        config.get("dataset") or "cifar10", data_dir=data_dir, val_dir=config.get("val_dir"),
        val_split=val_split, image_size=image_size, preset=preset, batch_size=args.batch_size,
        seed=seed, deterministic=True, augment=False, cache=False)
    if loaded.val is None:
        sys.exit("tflite_accuracy: the data has no validation split; pass --val-split.")
    if loaded.class_names != class_names:
        print(f"note: data classes {loaded.class_names} differ from the run's {class_names}",
              file=sys.stderr)
    start = time.perf_counter()
    pairs = list(loaded.val.as_numpy_iterator())
    x_val = np.concatenate([p[0] for p in pairs])
    y_val = np.concatenate([p[1] for p in pairs])
    print(f"{len(y_val)} validation images loaded in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)

    workdir = args.workdir or tempfile.mkdtemp(prefix="tflite-bench-")
    rows, runners = {}, {}

    version_dir = export_serving_model(
        model, os.path.join(workdir, "saved_model"), class_names=class_names,
        image_size=image_size, preset=preset)
    served = tf.saved_model.load(version_dir)
    pixels = _pixels(x_val)
    exact = pixels is not None and float(
        np.abs(data.normalize(pixels).numpy() - x_val).max()) < 1e-3
    if exact:
        name = "SavedModel"
        reference = _serve_pixels(served, pixels, args.batch_size)
        one = tf.constant(pixels[:1])
    else:
        name = "SavedModel (its network in Keras)"
        reference = inference_model(model).predict(x_val, batch_size=args.batch_size, verbose=0)
        one = tf.constant(np.zeros((1, image_size, image_size, 3), np.uint8))
    reference_top = reference.argmax(-1)
    rows[name] = _row(reference_top, y_val, reference_top, _folder_bytes(version_dir))
    runners[name] = lambda: served.serve_pixels(one)

    # The same SavedModel computing in bfloat16 (`resnet-export --precision bfloat16`).
    bf16_dir = export_serving_model(
        model, os.path.join(workdir, "saved_model_bfloat16"), class_names=class_names,
        image_size=image_size, preset=preset, precision="bfloat16")
    served_bf16 = tf.saved_model.load(bf16_dir)
    if exact:
        top = _serve_pixels(served_bf16, pixels, args.batch_size).argmax(-1)
    else:
        top = inference_model(model, precision="bfloat16").predict(
            x_val, batch_size=args.batch_size, verbose=0).argmax(-1)
    rows["SavedModel bfloat16"] = _row(top, y_val, reference_top, _folder_bytes(bf16_dir))
    runners["SavedModel bfloat16"] = lambda: served_bf16.serve_pixels(one)

    # Exactly `resnet-export RUN --tflite float32,float16,int8 --export-dir WORKDIR/tflite`.
    if (args.val_split is not None and args.val_split != config.get("val_split")) or (
            args.seed is not None and args.seed != config.get("seed", 0)):
        print("note: int8 is calibrated on the run's own training split (config.json), as "
              "resnet-export does; with --val-split/--seed differing from it, calibration "
              "images may be among the validation images measured here", file=sys.stderr)
    start = time.perf_counter()
    write_tflite = prepare_tflite_exports(
        [list(QUANTIZATIONS)], source=args.run_dir, model=model,
        export_dir=os.path.join(workdir, "tflite"), class_names=class_names,
        image_size=image_size, preset=preset, data_dir=args.data_dir)
    calibrated = 0
    for quantization, path in zip(QUANTIZATIONS, write_tflite()):
        with open(sidecar_path(path)) as f:
            calibrated = max(calibrated, json.load(f).get("calibration_images", 0))
        top = predict_tflite(path, x_val, batch_size=args.batch_size,
                             num_threads=args.threads).argmax(-1)
        label = f"TFLite {quantization}"
        rows[label] = _row(top, y_val, reference_top, os.path.getsize(path))
        runners[label] = single_image_runner(path, num_threads=args.threads)
    print(f"TFLite files written in {time.perf_counter() - start:.1f} s and evaluated",
          file=sys.stderr)

    latencies = _interleaved_latencies(runners, args.runs, args.warmup)
    reference_top1 = rows[name]["top1"]
    notes = (
        f"Run `{args.run_dir}` ({model.name}, {image_size}x{image_size}, {len(class_names)} classes); "
        f"validation: {len(y_val)} images (val_split={val_split}, seed={seed}"
        f"{', ' + data_dir if data_dir else ''}); TFLite files written by `resnet-export "
        f"--tflite` (int8 calibrated on {calibrated} training images, int8 in and out).\n"
        f"Latency: batch 1, {args.threads} thread(s), median and p90 of {args.runs} calls after "
        f"{args.warmup} warm-up, interleaved; {_cpu_name()}; TensorFlow {tf.__version__}.")
    columns = ["Model", "Top-1 (%)", "vs SavedModel (pts)", "Agreement (%)", "Size (KB)",
               "Latency median / p90 (ms)"]
    cells = []
    for label, row in rows.items():
        median, p90 = latencies[label]
        cells.append([label, f"{100 * row['top1']:.2f}", f"{100 * (row['top1'] - reference_top1):+.2f}",
                      f"{100 * row['agreement']:.2f}", f"{row['bytes'] / 1024:,.0f}",
                      f"{median:.3f} / {p90:.3f}"])
    drop = 100 * (reference_top1 - rows["TFLite int8"]["top1"])
    verdict = "within" if drop <= args.max_int8_drop else "EXCEEDS"
    verdict = f"int8 loses {drop:.2f} points of top-1: {verdict} the {args.max_int8_drop:g}-point limit."
    print(notes, "", " | ".join(columns), *(" | ".join(r) for r in cells), "", verdict, sep="\n")
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import results_json

        results_json.write(args.out, results_json.result(
            f"TFLite and SavedModel accuracy, size and latency of {model.name}", "tflite",
            results_json.command_line(), [results_json.table(model.name, columns, cells, verdict)],
            notes, machine=results_json.machine(), date=results_json.today()))
    if not args.workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _pixels(x_val):
    """uint8 pixels whose normalization gives `x_val`, or None where they are not integers."""
    import numpy as np

    from resnet_tf import data

    pixels = x_val * (255 * np.asarray(data.STD, np.float32)) + 255 * np.asarray(data.MEAN, np.float32)
    rounded = np.round(pixels)
    if np.abs(pixels - rounded).max() > 1e-2 or rounded.min() < 0 or rounded.max() > 255:
        return None
    return rounded.astype(np.uint8)


def _row(top, labels, reference_top, size_bytes):
    import numpy as np

    return {"top1": float(np.mean(top == labels)), "agreement": float(np.mean(top == reference_top)),
            "bytes": size_bytes}


def _interleaved_latencies(runners, runs, warmup):
    import numpy as np

    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times = {name: [] for name in names}
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: (float(np.median(t)), float(np.percentile(t, 90))) for name, t in times.items()}


def _folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
