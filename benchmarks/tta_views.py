"""Validation top-1 of finished runs under each test-time augmentation (issue 13).

    python benchmarks/tta_views.py runs/seed0 runs/seed1 runs/seed2 runs/seed3

Each run folder's `last.keras` (the final model: the EMA weights when the run had
`--ema`) is evaluated on the run's own hold-out with every `--tta` choice, as
`resnet-evaluate RUN/last.keras --hold-out --tta T` would (the function that writes
metrics.json computes the figures). It prints a Markdown table, one row per run, and the
mean.
"""

import argparse
import os
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished train.py run folders")
    args = parser.parse_args()

    from resnet_tf.evaluation import evaluate, load_classifier
    from resnet_tf.metrics import TTA

    cpu = os.popen("lscpu | grep 'Model name'").read().split(":")[-1].strip()
    print(f"{cpu}, {os.cpu_count()} CPUs\n")
    print("| run | hold-out | " + " | ".join(TTA) + " |")
    print("|---|---|" + "---:|" * len(TTA))
    table = {tta: [] for tta in TTA}
    for path in args.runs:
        row = []
        try:
            classifier = load_classifier(os.path.join(path, "last.keras"))
            for tta in TTA:
                metrics = evaluate(classifier, hold_out=True, batch_size=500, tta=tta)
                table[tta].append(metrics["top1"])
                row.append(f"{100 * metrics['top1']:.2f} %")
        except ValueError as error:  # resnet_tf's errors: not a finished run, no hold-out
            raise SystemExit(f"tta_views.py: {error}") from None
        print(f"| {path} | {metrics['data']} | " + " | ".join(row) + " |", flush=True)
    print("| mean | | " + " | ".join(f"{100 * statistics.mean(v):.2f} %"
                                      for v in table.values()) + " |")


if __name__ == "__main__":
    main()
