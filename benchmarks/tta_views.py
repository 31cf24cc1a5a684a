"""Validation top-1 of finished runs under each test-time augmentation (issue 13).

    python benchmarks/tta_views.py runs/seed0 runs/seed1 runs/seed2 runs/seed3

Each run folder's `last.keras` (the final model: the EMA weights when the run had
`--ema`) is evaluated on the run's own hold-out (its data folder, `--val-split` and
`--split-seed` from config.json) with every `--tta` choice, through
`resnet_tf.metrics.evaluate_model`, the function that writes metrics.json. It prints a
Markdown table, one row per run, and the mean. Runs with a `--val-dir` are evaluated on it.
"""

import argparse
import os
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished train.py run folders")
    args = parser.parse_args()

    import keras

    from resnet_tf.data import load_data
    from resnet_tf.metrics import TTA, evaluate_model
    from resnet_tf.runs import RunDirectory, hold_out_seed

    cpu = os.popen("lscpu | grep 'Model name'").read().split(":")[-1].strip()
    print(f"{cpu}, {os.cpu_count()} CPUs\n")
    print("| run | split seed | " + " | ".join(TTA) + " |")
    print("|---|---:|" + "---:|" * len(TTA))
    table = {tta: [] for tta in TTA}
    for path in args.runs:
        run = RunDirectory(path)
        stored = (run.read_config() or {}).get("config")
        if not stored or not stored.get("data_dir"):
            raise SystemExit(f"tta_views.py: {path} is not a finished run on an image folder "
                             "(no config.json with data_dir); expected a train.py --data-dir run.")
        data = load_data(data_dir=stored["data_dir"], val_dir=stored.get("val_dir"),
                         val_split=stored["val_split"], split_seed=hold_out_seed(stored),
                         image_size=stored["image_size"], batch_size=500, augment=False)
        model = keras.models.load_model(run.file("last.keras"), compile=False)
        row = []
        for tta in TTA:
            top1 = evaluate_model(model, data.val, data.class_names, tta=tta)["top1"]
            table[tta].append(top1)
            row.append(f"{100 * top1:.2f} %")
        print(f"| {path} | {hold_out_seed(stored)} | " + " | ".join(row) + " |", flush=True)
    print("| mean | | " + " | ".join(f"{100 * statistics.mean(v):.2f} %"
                                      for v in table.values()) + " |")


if __name__ == "__main__":
    main()
