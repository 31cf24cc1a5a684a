"""Accuracy over seeds and arms: train.py once per (arm, seed), then one result file.

    python benchmarks/accuracy.py --seeds 0,1,2,3 --arm "pad 4=--crop-padding 4" \\
        --arm "pad 2=--crop-padding 2" --runs-dir runs/crop_padding \\
        --out benchmarks/results/cifar_crop_padding.json -- --data-dir /tmp/cifar/train

Each arm is a name and the train.py flags that set it apart; the flags after `--` are
common to every run. A run is `python train.py COMMON ARM --seed S --out RUNS/ARM/seed_S`,
so the trainer, its recipe and its hold-out split are the ones users get (no second
trainer here), and re-running the same command resumes unfinished runs and skips
finished ones (train.py's own rule). Each run's metrics.json is collected into two
tables, runs and arms (mean, min and max over seeds), written to --out in the docs'
result schema (benchmarks/results_json.py).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

import results_json

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(os.path.dirname(HERE), "train.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] -- [train.py flags for every run]")
    parser.add_argument("--seeds", default="0", help="comma-separated --seed values (default: 0)")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=FLAGS",
                        help="an arm: its name and its train.py flags (repeatable; default: one "
                             "arm 'default' with no flags of its own)")
    parser.add_argument("--runs-dir", default=os.path.join("runs", "accuracy"),
                        help="run folders go to RUNS_DIR/<arm>/seed_<seed> (default: runs/accuracy)")
    parser.add_argument("--title", default="Validation accuracy over seeds",
                        help="the result file's title")
    parser.add_argument("--out", help="result file (JSON), e.g. benchmarks/results/<study>.json")
    parser.add_argument("--dry-run", action="store_true", help="print the train.py commands only")
    argv = sys.argv[1:] if argv is None else list(argv)
    common = []
    if "--" in argv:
        at = argv.index("--")
        argv, common = argv[:at], argv[at + 1:]
    args = parser.parse_args(argv)
    args.common = common
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers such as 0,1,2; received {args.seeds!r}")
    arms = {}
    for text in args.arm or ["default="]:
        name, sep, flags = text.partition("=")
        if not sep or not name.strip():
            parser.error(f"--arm: expected NAME=FLAGS such as 'pad 2=--crop-padding 2'; received {text!r}")
        arms[name.strip()] = shlex.split(flags)
    args.arms = arms
    for flag in ("--seed", "--out"):
        if flag in common or any(flag in flags for flags in arms.values()):
            parser.error(f"{flag} is set per run by this script; remove it from the train.py flags")
    return args


def run_dir(runs_dir, arm, seed):
    return os.path.join(runs_dir, results_json.slug(arm) or "default", f"seed_{seed}")


def train_command(args, arm, seed):
    return [sys.executable, TRAIN, *args.common, *args.arms[arm], "--seed", str(seed),
            "--out", run_dir(args.runs_dir, arm, seed)]


def collect(args):
    """The runs table and the arms table from each run's metrics.json."""
    runs, arms = [], []
    for arm in args.arms:
        top1 = []
        for seed in args.seeds:
            with open(os.path.join(run_dir(args.runs_dir, arm, seed), "metrics.json")) as f:
                m = json.load(f)
            single = (m.get("single_view") or {}).get("top1", m["top1"])
            top1.append(100 * m["top1"])
            runs.append([arm, seed, m.get("epochs"), round(100 * m["top1"], 2), round(100 * single, 2),
                         m.get("best_epoch"), m.get("examples")])
        arms.append([arm, len(top1), round(statistics.mean(top1), 3), round(min(top1), 2),
                     round(max(top1), 2)])
    return [
        results_json.table("Mean over seeds, final validation top-1 (%)",
                           ["arm", "runs", "mean", "min", "max"], arms),
        results_json.table("Every run (metrics.json)",
                           ["arm", "seed", "epochs", "top-1 (%)", "single-view top-1 (%)",
                            "best epoch", "validation images"], runs),
    ]


def main(argv=None):
    args = parse_args(argv)
    commands = [train_command(args, arm, seed) for arm in args.arms for seed in args.seeds]
    for command in commands:
        print(shlex.join(command), flush=True)
        if not args.dry_run:
            subprocess.run(command, check=True)
    if args.dry_run:
        return 0
    tables = collect(args)
    for t in tables:
        print(f"\n{t['caption']}\n" + "\n".join(" | ".join(map(str, r)) for r in [t["columns"], *t["rows"]]))
    if args.out:
        notes = ("Common train.py flags: `" + (shlex.join(args.common) or "(none)") + "`; arms: "
                 + "; ".join(f"{a}: `{shlex.join(f) or '(none)'}`" for a, f in args.arms.items()) + ".")
        results_json.write(args.out, results_json.result(
            args.title, "accuracy", results_json.command_line(), tables, notes,
            machine=results_json.machine(), date=results_json.today()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
