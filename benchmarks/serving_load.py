#!/usr/bin/env python3
"""Throughput and latency of an exported SavedModel's `serving_default` under concurrent load.

    python benchmarks/serving_load.py                      # ResNet-20 @32 and ResNet-50 @224
    python benchmarks/serving_load.py --requests 100 --threads 1,8 --models resnet20
    python benchmarks/serving_load.py --out benchmarks/results/serving.json
    python benchmarks/serving_load.py --tta none,flip,flip-shift --threads 1,8   # TTA's cost

For each model (random weights, BatchNorm statistics randomised so folding is real work)
this exports the SavedModel with `export_serving_model`, loads it with
`tf.saved_model.load` in this process, and sends it --requests requests from each number
of client threads in --threads: one encoded JPEG per request, a photo-like image larger
than the model's input (so every request pays decoding, resizing and the network, as a
TF Serving request would), with --bad-fraction of the requests undecodable (they must
fail with InvalidArgument and are timed too). Each thread loops over its share of the
requests back to back; a request's latency is its own call, end to end.

It prints a table (and writes it to --out as a result file, JSON): requests per second over the whole run, p50 and p99 latency
(ms) of the good requests, and how many requests were rejected (must equal the bad ones).
TensorFlow's intra- and inter-op thread pools keep their defaults (all cores), as in a
server; the machine line of the report says how many cores that was.
"""

import argparse
import concurrent.futures
import io
import os
import platform
import sys
import tempfile
import time

MODELS = {
    # name: (depth, input size, photo height, photo width)
    "resnet20": (20, 32, 48, 64),
    "resnet50": (50, 224, 375, 500),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20,resnet50",
                        help=f"comma list of {', '.join(MODELS)} (default: both)")
    parser.add_argument("--requests", type=int, default=400,
                        help="timed requests per model and thread count (default: 400)")
    parser.add_argument("--threads", default="1,4,8", help="client thread counts (default: 1,4,8)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first (default: 10)")
    parser.add_argument("--bad-fraction", type=float, default=0.1,
                        help="share of undecodable requests (default: 0.1)")
    parser.add_argument("--tta", default="none",
                        help="comma list of the exports' test-time augmentation: none, flip, "
                             "flip-shift (default: none)")
    parser.add_argument("--out", help="also write the result file (JSON) here")
    return parser.parse_args(argv)


def _photo(height, width, seed):
    """A smooth random RGB image as JPEG bytes: compresses like a photo, unlike noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def export_model(name, workdir, tta="none"):
    import keras
    import numpy as np

    from resnet_tf import build_resnet
    from resnet_tf.export import export_serving_model

    depth, size, _, _ = MODELS[name]
    keras.utils.set_random_seed(0)
    model = build_resnet(depth, input_shape=(size, size, 3), classes=10)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
    return export_serving_model(model, os.path.join(workdir, f"{name}_{tta}"),
                                class_names=[str(i) for i in range(10)], image_size=size,
                                preset="cifar" if size <= 64 else "imagenet", tta=tta)


def run_load(serve, requests, threads):
    """Sends `requests` (list of (bytes, is_bad)) from `threads` threads; returns the stats."""
    import numpy as np
    import tensorflow as tf

    shares = [requests[t::threads] for t in range(threads)]

    def client(share):
        latencies, rejected, wrong = [], 0, 0
        for encoded, is_bad in share:
            start = time.perf_counter()
            try:
                serve(image_bytes=tf.constant([encoded]))["probabilities"].numpy()
            except tf.errors.InvalidArgumentError:
                rejected += 1
                wrong += not is_bad
                continue
            wrong += is_bad
            if not is_bad:
                latencies.append(time.perf_counter() - start)
        return latencies, rejected, wrong

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(client, shares))
    elapsed = time.perf_counter() - start
    latencies = np.concatenate([r[0] for r in results]) * 1000
    return {
        "throughput": len(requests) / elapsed,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "rejected": sum(r[1] for r in results),
        "wrong": sum(r[2] for r in results),
        "elapsed": elapsed,
    }


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"serving_load.py: error: unknown model(s) {unknown}; expected {list(MODELS)}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    ttas = [t.strip() for t in args.tta.split(",") if t.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, tta in ((n, t) for n in names for t in ttas):
            _, size, height, width = MODELS[name]
            version = export_model(name, workdir, tta)
            serve = tf.saved_model.load(version).signatures["serving_default"]
            photos = [_photo(height, width, seed) for seed in range(16)]
            bad = [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""]
            rng = np.random.default_rng(0)
            requests = [(bad[rng.integers(len(bad))], True) if rng.random() < args.bad_fraction
                        else (photos[rng.integers(len(photos))], False)
                        for _ in range(args.requests)]
            for encoded in photos[: args.warmup]:
                serve(image_bytes=tf.constant([encoded]))
            for threads in thread_counts:
                stats = run_load(serve, requests, threads)
                print(f"{name} tta={tta} threads={threads}: {stats}", file=sys.stderr, flush=True)
                rows.append((name, tta, size, f"{height}x{width}", threads, stats,
                             sum(is_bad for _, is_bad in requests)))

    setup = (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow "
             f"{tf.__version__}; {args.requests} requests per row, one JPEG each, "
             f"{args.bad_fraction:.0%} undecodable.")
    columns = ["model", "TTA", "input", "JPEG", "client threads", "requests/s", "p50 ms",
               "p99 ms", "rejected (bad sent)"]
    cells = []
    for name, tta, size, photo, threads, stats, bad_sent in rows:
        rejected = f"{stats['rejected']} ({bad_sent})" + (" MISMATCH" if stats["wrong"] else "")
        cells.append([name, tta, size, photo, threads, round(stats["throughput"], 1),
                      round(stats["p50"], 1), round(stats["p99"], 1), rejected])
    print(setup, "", " | ".join(columns), *(" | ".join(map(str, r)) for r in cells), sep="\n")
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import results_json

        results_json.write(args.out, results_json.result(
            "SavedModel serving_default under concurrent JPEG requests", "serving",
            results_json.command_line(), [results_json.table("Requests per client thread count", columns, cells)],
            setup, machine=results_json.machine(), date=results_json.today()))
    return 1 if any(stats["wrong"] for *_, stats, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
