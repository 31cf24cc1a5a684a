"""Cost of the weight EMA (issue 13): `resnet_tf.training.callbacks.ModelEMA` averages
every weight, BatchNorm statistics included, with one compiled update per training step.

    python benchmarks/ema_overhead.py      # ResNet-20 @32 batch 128, ResNet-50 @224 batch 16

For each network: the time of one training step (`fit` on one fixed synthetic batch,
train.py's auto precision, median of --rounds calls of --steps steps) and, between
those calls, the time of one EMA update and of one swap (median over the same rounds).
Overhead = update / step: what a run with `--ema` pays per step on top of training.
"""

import argparse
import os
import statistics
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed fit steps per call")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from resnet_tf import build_resnet
    from resnet_tf.training import resolve_precision
    from resnet_tf.training.callbacks import ModelEMA

    precision = resolve_precision("auto")[0]
    keras.mixed_precision.set_global_policy(precision)
    cpu = os.popen("lscpu | grep 'Model name'").read().split(":")[-1].strip()
    print(f"{cpu}, {os.cpu_count()} CPUs, {precision}, median of {args.rounds} rounds\n")
    print("| network | batch | step (ms) | EMA update (ms) | swap (ms) | update / step |")
    print("|---|---|---|---|---|---|")
    for depth, size, batch, steps in ((20, 32, 128, args.steps), (50, 224, 16, 3)):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(batch, size, size, 3)).astype("float32"))
        data = tf.data.Dataset.from_tensors((x, tf.one_hot(rng.integers(0, 10, batch), 10)))
        model = build_resnet(depth, input_shape=(size, size, 3), classes=10)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "categorical_crossentropy")
        model.fit(data.repeat(), steps_per_epoch=2, epochs=1, verbose=0)  # builds everything
        ema = ModelEMA(0.999, tempfile.mkdtemp())
        ema.set_model(model)
        ema.on_train_begin()
        ema._reset()
        ema._update(), ema._swap(), ema._swap()  # traces
        step, update, swap = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            model.fit(data.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
            step.append((time.perf_counter() - start) / steps)
            start = time.perf_counter()
            for _ in range(20):
                ema._update()
            update.append((time.perf_counter() - start) / 20)
            start = time.perf_counter()
            for _ in range(10):
                ema._swap()
            swap.append((time.perf_counter() - start) / 10)
        s, u, w = (1e3 * statistics.median(v) for v in (step, update, swap))
        print(f"| ResNet-{depth} @{size} | {batch} | {s:.0f} | {u:.2f} | {w:.2f} | "
              f"{100 * u / s:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
