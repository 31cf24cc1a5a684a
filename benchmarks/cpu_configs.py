"""Which TensorFlow settings train resnet_tf fastest on this CPU, side by side with PyTorch.

    python benchmarks/cpu_configs.py                       # 3 repeats, all three networks
    python benchmarks/cpu_configs.py --reps 5              # more repeats
    python benchmarks/cpu_configs.py --quick --models resnet20 --precisions float32
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_configs.py   # an AVX2-only CPU, emulated

For ResNet-20, ResNet-18 (CIFAR stem) and ResNet-50, in float32 and (on CPUs with
AVX512-BF16 or AMX) mixed_bfloat16, it times one training configuration per worker
process (workers.py `keras_config`: the compiled train function `fit` calls, on one
in-memory batch) and changes one setting at a time from TensorFlow's defaults:

- oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`, which TensorFlow reads when it starts: each
  worker is its own process with its own environment; in mixed_bfloat16 only on
  ResNet-20, as Eigen's emulated bfloat16 kernels are ~40x slower),
- inter-op threads 1, intra-op threads 1 (the defaults are the core count),
- XLA (`compile(jit_compile=True)`),
- `steps_per_execution` > 1,
- half and double the batch size per step,
- NCHW (`channels_first`): TensorFlow's own CPU kernels train NHWC only (without oneDNN
  `Conv2DCustomBackpropFilterOp only supports NHWC`), so it is measured with oneDNN on,

and PyTorch (benchmarks/torch_resnets.py, channels_last, 2 threads) in the same rounds.
Settings that beat the defaults by `--threshold` are then combined and measured again
against the defaults and PyTorch (2 threads and 1: the faster one counts, as in run.py). Batch size and NCHW are reported but never combined:
the batch is a recipe choice, and NCHW would need the data pipeline changed. Finally the
network on which resnet_tf is furthest behind PyTorch (float32) is profiled with the TF
profiler, with oneDNN on and off.

Workers of one network and precision run in groups of a few processes (memory); each
group has its own "TF defaults" worker, and every ratio is the median of per-round
ratios against the defaults of the same group (run.py's interleaving). The report goes
to benchmarks/results/cpu_configs_<machine kind>.json (one file per kind, which a run of
that kind replaces) and ends with the `resnet_tf.training.cpu_tuning.CHOICES` row the
numbers support.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import report
import results_json
import run
from report import BF16, MODEL_TITLE
from run import CACHE, MODES, TRAIN_BATCH, TRAIN_MODELS, log, median

TITLE = "TensorFlow CPU settings for training, side by side"
MODES = {**MODES, "modest": dict(reps=3, warmup=1, target_s=2.0, profile_steps=2)}
GROUP = {"resnet50": 3, "resnet18_cifar": 4, "resnet20": 6}  # processes alive at once
SPE = {"resnet50": 2, "resnet18_cifar": 2, "resnet20": 8}
BASE = "TF defaults"
TORCH = "PyTorch"
TORCH1 = "PyTorch 1 thread"
THREADS = 2


def settings(model, precision):
    """[(label, setting overrides)] of the one-at-a-time comparison."""
    b = TRAIN_BATCH[model]
    # mixed_bfloat16 without oneDNN runs Eigen's emulated bfloat16 kernels: ~40x slower on
    # ResNet-20 (a probe here), minutes per ResNet-50 step; ResNet-20 shows it.
    out = [("oneDNN off", dict(onednn=False))] if precision == "float32" or model == "resnet20" else []
    out += [("inter-op 1", dict(inter_op=1)),
           ("XLA", dict(jit_compile=True)),
           (f"steps_per_execution {SPE[model]}", dict(steps_per_execution=SPE[model]))]
    if model == "resnet20":
        out.append(("intra-op 1", dict(intra_op=1)))
    if precision == "float32":
        out.append((f"batch {b // 2}", dict(batch=b // 2)))
        if model != "resnet50":  # memory: ResNet-50 at 64 needs ~8 GB per process
            out.append((f"batch {2 * b}", dict(batch=2 * b)))
        out.append(("NCHW", dict(data_format="channels_first")))
    return out


COMBINABLE = ("onednn", "inter_op", "intra_op", "jit_compile", "steps_per_execution")


def keras_spec(model, precision, **setting):
    spec = dict(kind="keras_config", model=model, precision=precision,
                batch=setting.get("batch", TRAIN_BATCH[model]),
                jit_compile=setting.get("jit_compile", False),
                steps_per_execution=setting.get("steps_per_execution", 1),
                data_format=setting.get("data_format", "channels_last"),
                inter_op=setting.get("inter_op"), intra_op=setting.get("intra_op"))
    env = {"TF_ENABLE_ONEDNN_OPTS": "1" if setting.get("onednn", True) else "0"}
    return spec, env


def torch_spec(model, precision, threads=THREADS):
    return dict(kind="torch_train", model=model, batch=TRAIN_BATCH[model], threads=threads,
                precision="bf16" if precision == BF16 else "float32"), {}


def faster_torch(rows):
    """The PyTorch row (2 threads or 1) that ran faster: under load from other jobs a
    2-thread OpenMP step waits for whichever thread was pre-empted, 1 thread does not."""
    found = [rows[k] for k in (TORCH, TORCH1) if rows.get(k, {}).get("img_s")]
    return max(found, key=lambda r: r["img_s"]) if found else {}


def start(items, log_dir):
    """Workers for [(label, (spec, env))], two setting up at a time; failures dropped."""
    return run.start_workers({label: spec for label, (spec, _) in items}, log_dir, parallel=2,
                             envs={label: env for label, (_, env) in items})


def measure_group(items, log_dir, mode, model):
    """Interleaved rounds of one group; {label: dict(img_s, spread, times_img, info)}."""
    workers = start(items, log_dir)
    try:
        entries = [(label, workers[label], None) for label, _ in items if label in workers]
        if not entries:
            return {}, None
        times, loads = run.interleaved(entries, mode)
    finally:
        for w in workers.values():
            w.close()
    out = {}
    for label, w, _ in entries:
        images = w.info.get("images_per_unit", TRAIN_BATCH[model])
        per_image = [t / images for t in times[label]]
        out[label] = dict(img_s=1 / median(per_image), spread=run.spread(per_image),
                          times_img=per_image, info=w.info)
    return out, median(loads)


def compare(model, precision, variants, log_dir, mode, torch_threads=(2, 1)):
    """One-at-a-time rows: {label: dict(img_s, spread, vs_base, group)}, in order."""
    items = [(label, keras_spec(model, precision, **setting)) for label, setting in variants]
    # First, so both thread counts share a group.
    items[:0] = [(TORCH if t == THREADS else TORCH1, torch_spec(model, precision, threads=t))
                 for t in torch_threads]
    size = GROUP[model] - 1
    rows, bases, loads = {}, [], []
    for g, first in enumerate(range(0, len(items), size)):
        chunk = items[first:first + size]
        log(f"{MODEL_TITLE[model]} {precision}, group {g + 1}: "
            + ", ".join(label for label, _ in chunk))
        group = [(BASE, keras_spec(model, precision))] + chunk
        results, load = measure_group(group, log_dir, mode, model)
        loads.append(load)
        base = results.get(BASE)
        if base:
            bases.append(base)
        for label, _ in chunk:
            r = results.get(label)
            if r is None:
                rows[label] = dict(failed=True)
                continue
            r["vs_base"] = (run.paired_ratio(r["times_img"], base["times_img"])
                            if base else None)
            r["setting"] = dict(variants).get(label)
            r["group"] = g + 1
            rows[label] = r
    base_img_s = median([b["img_s"] for b in bases]) if bases else None
    base_spread = max((b["spread"] for b in bases), default=0.0)
    return dict(rows=rows, base_img_s=base_img_s, base_spread=base_spread,
                base_first_call_s=bases[0]["info"].get("first_call_s") if bases else None,
                load=median([x for x in loads if x is not None]))


def combine(model, variants, rows, threshold):
    """The winners' settings merged: (label, setting) or None when no setting won."""
    winners = []
    for label, setting in variants:
        r = rows.get(label, {})
        if (r.get("vs_base") or 0) >= 1 + threshold and set(setting) <= set(COMBINABLE):
            winners.append((r["vs_base"], label, setting))
    if not winners:
        return None
    merged, labels = {}, []
    for _, label, setting in sorted(winners, reverse=True):
        if ("inter_op" in setting or "intra_op" in setting) and (
                "inter_op" in merged or "intra_op" in merged):
            continue  # one thread setting: the better one
        merged.update(setting)
        labels.append(label)
    return " + ".join(labels), merged


def profile(model, precision, log_dir, mode):
    """TF profiler summaries of TF defaults and oneDNN off, one step each after warm-up."""
    out = {}
    for label, setting in ((BASE, {}), ("oneDNN off", dict(onednn=False))):
        workers = start([(label, keras_spec(model, precision, **setting))], log_dir)
        if label not in workers:
            continue
        w = workers[label]
        try:
            w.run(1)
            logdir = os.path.join(log_dir, "profile", f"{model}_{label.replace(' ', '_')}")
            log(f"  TF profiler: {MODEL_TITLE[model]} {precision} {label} -> {logdir}")
            out[label] = w.call(cmd="profile", logdir=logdir,
                                steps=mode["profile_steps"])["profile"]
        finally:
            w.close()
    return out


# --- report -------------------------------------------------------------------------------


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def render(results):
    m = results["machine"]
    lines = [
        f"{m['cpu']} (vendor {m.get('vendor_id', '?')}, family {m.get('cpu family', '?')}, model "
        f"{m.get('model', '?')}), {m['cores']} cores, {m['memory_gb']} GiB. Measured "
        f"{results['date']} in {results['seconds'] / 60:.0f} min, {results['mode']} mode "
        f"({results['reps']} interleaved repeats after a warm-up, each one step or more, "
        f"about {results['target_s']:g} s of work where a step is shorter; `±` is half the "
        "min-max range).",
        *(["", f"**{results['note']}**"] if results.get("note") else []),
        "",
        f"- lscpu model name: {m['cpu']}",
        *([f"- **emulated**: ONEDNN_MAX_CPU_ISA={results['isa_cap']} and ATEN_CPU_CAPABILITY="
           f"{run.aten_capability(results['isa_cap'])}, so TensorFlow's and PyTorch's kernels use "
           "no instructions above that level; the flags below are the ones left"]
          if results.get("isa_cap") else []),
        f"- CPU flags that matter here: {' '.join(results['flags_shown']) or 'none'} "
        f"(absent: {' '.join(results['flags_absent']) or 'none'})",
        *([f"- all CPU flags (/proc/cpuinfo, as lscpu shows them): {' '.join(results['flags_all'])}"]
          if results.get("flags_all") else []),
        "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- 1-min load average: {results['load_start']:.1f} at the start, "
        f"{results['load_end']:.1f} at the end, on {m['cores']} cores"
        + (f" (the highest over its {results['joined']} runs)" if results.get("joined", 1) > 1 else "")
        + (" (other jobs were running: ratios within a group still pair round by round)"
           if results["load_start"] > 1.0 else ""),
        "",
        "Each row changes one setting from TensorFlow's defaults (oneDNN on, inter- and "
        "intra-op threads = cores, no XLA, `steps_per_execution=1`, NHWC, the batch in the "
        "title). `vs defaults` is the median per-round ratio against the defaults worker of "
        "the same group; PyTorch is torch_resnets.py, channels_last, 2 threads and 1 thread "
        "(under load from other jobs its 2-thread step waits for pre-empted threads; the faster "
        "one is the comparison), bf16 by `torch.autocast` for mixed_bfloat16.",
    ]
    for key, c in results["comparisons"].items():
        model, precision = key.split(" | ")
        load = f" (1-min load average during its rounds: {c['load']:.1f})" if c.get("load") else ""
        lines += ["", f"### {MODEL_TITLE[model]}, batch {c.get('batch', TRAIN_BATCH[model])}, "
                      f"{precision}", "",
                  f"{c.get('reps', results['reps'])} repeats{load}.", "",
                  "| setting | img/s | vs defaults | group |", "|---|---:|---:|---:|",
                  f"| {BASE} | {c['base_img_s']:.1f} ±{100 * c['base_spread']:.0f}% | 1.00x | all |"
                  if c["base_img_s"] else f"| {BASE} | failed | - | - |"]
        for label, r in c["rows"].items():
            if r.get("failed"):
                lines.append(f"| {label} | failed (see the worker log) | - | - |")
                continue
            note = " (resnet_tf / this: {})".format(_x(1 / r["vs_base"])) if (
                label in (TORCH, TORCH1) and r.get("vs_base")) else ""
            lines.append(f"| {label} | {r['img_s']:.1f} ±{100 * r['spread']:.0f}% | "
                         f"{_x(r.get('vs_base'))}{note} | {r.get('group', '-')} |")
        best = c.get("combined")
        if best:
            how = ("its own row above" if best.get("single") else
                   "the winners combined and measured again with the defaults and PyTorch")
            lines += ["", f"Fastest: **{best['label']}** ({how}): {best['img_s']:.1f} img/s, "
                          f"{_x(best['vs_base'])} the defaults, {_x(best.get('vs_torch'))} "
                          "PyTorch (its faster thread count)."]
        elif c.get("combined_label") is None:
            lines += ["", f"No setting beat the defaults by {100 * results['threshold']:.0f} % "
                          "or more: the defaults stay."]
        first = c.get("base_first_call_s")
        xla = c["rows"].get("XLA", {}).get("info", {}).get("first_call_s")
        if first and xla:
            lines += ["", f"First call (tracing; with XLA also compiling): defaults {first} s, "
                          f"XLA {xla} s."]
    p = results.get("profile")
    if p:
        lines += ["", f"### Where the time goes: {MODEL_TITLE[p['model']]}, {p['precision']}", "",
                  f"The network on which resnet_tf is furthest behind PyTorch here "
                  f"(resnet_tf / PyTorch {_x(p['vs_torch'])} with the defaults), profiled with "
                  "the TF profiler (op self times; benchmarks/profile_summary.py)."]
        lines += report.profile_section({"profiles": {
            f"{MODEL_TITLE[p['model']]} | {label}": s for label, s in p["summaries"].items()}})
    lines += ["", "### The choice for this machine kind", "", "```python",
              f"CHOICES[{results['kind']!r}] = {results['choice']!r}", "```", "",
              results["choice_note"]]
    return "\n".join(lines) + "\n"


def choose(results, threshold):
    """The settings for resnet_tf.training.cpu_tuning.CHOICES, from the one-at-a-time rows.

    A combinable setting is chosen when it beat the defaults by `threshold` on at least one
    network and precision and was never slower by more than `threshold` on another (the
    table is keyed on the CPU alone, not on the network or precision).
    """
    seen = {}
    for key, c in results["comparisons"].items():
        for label, r in c["rows"].items():
            setting = r.get("setting")
            if r.get("vs_base") and setting and set(setting) <= set(COMBINABLE):
                seen.setdefault(label, (setting, {}))[1][key] = r["vs_base"]
    chosen, lines = {}, []
    for label, (setting, ratios) in sorted(seen.items(), key=lambda kv: -max(kv[1][1].values())):
        won = max(ratios.values()) >= 1 + threshold
        safe = min(ratios.values()) >= 1 - threshold
        shown = ", ".join(f"{k.replace(' | ', ' ')} {_x(v)}" for k, v in ratios.items())
        threads = {"inter_op", "intra_op"}
        taken = set(setting) & set(chosen) or (set(setting) & threads and set(chosen) & threads)
        verdict = "chosen" if won and safe and not taken else (
            "not chosen (a better value of it was)" if won and safe else
            "not chosen (slower elsewhere)" if won else "not chosen (no gain)")
        if verdict == "chosen":
            chosen.update(setting)
        lines.append(f"- {label}: {shown}: {verdict}")
    env = {} if chosen.get("onednn", True) else {"TF_ENABLE_ONEDNN_OPTS": "0"}
    choice = dict(env=env, inter_op=chosen.get("inter_op"), intra_op=chosen.get("intra_op"),
                  steps_per_execution=chosen.get("steps_per_execution", 1))
    note = (f"A setting is chosen when it beat the defaults by {100 * threshold:.0f} % or more "
            f"on some network and precision and lost more than {100 * threshold:.0f} % on none "
            "(one-at-a-time ratios; the table is keyed on the CPU alone):\n\n" + "\n".join(lines))
    if chosen.get("jit_compile"):
        note += "\n\nXLA qualified too; the table has no XLA key (it would be the trainer's --jit)."
    return choice, note


# --- main ---------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 short repeats")
    parser.add_argument("--reps", type=int, help="repeats (default 3; --quick 2)")
    parser.add_argument("--models", default=",".join(TRAIN_MODELS))
    parser.add_argument("--precisions", help="default: float32, plus mixed_bfloat16 where the "
                        "CPU has AVX512-BF16 or AMX")
    parser.add_argument("--batch", action="append", default=[], metavar="MODEL=N",
                        help="batch per step instead of run.py's (e.g. resnet50=8, for a "
                             "loaded machine); repeatable")
    parser.add_argument("--torch-threads", default="2,1",
                        help="PyTorch thread counts to time (2 and/or 1; default both)")
    parser.add_argument("--group", type=int, help="processes alive at once, defaults worker "
                        f"included (default {GROUP}; memory: ResNet-50 at batch 32 ~4 GB each)")
    parser.add_argument("--only", help="comma-separated setting labels to measure (e.g. "
                        "'oneDNN off,XLA'; default all)")
    parser.add_argument("--threshold", type=float, default=0.03,
                        help="a setting wins when it is this much faster than the defaults")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--out", help="result file, JSON (default: benchmarks/results/"
                        "cpu_configs_<machine kind>.json; --quick: the cache folder)")
    parser.add_argument("--note", help="a paragraph for the report (how the run was made)")
    parser.add_argument("--render", metavar="RESULTS_JSON", action="append",
                        help="only write the report from a run's results.json (also a run "
                             "stopped part-way: it is saved after each network and "
                             "precision); repeat it to join runs made one network at a time")
    args = parser.parse_args(argv)
    if args.render:
        results = joined(args.render)
        if args.note:
            results["note"] = args.note
        results["choice"], results["choice_note"] = choose(results, results["threshold"])
        write(results, args.out or run.result_path("cpu_configs", results))
        return 0
    mode_name = "quick" if args.quick else "modest"
    mode = dict(MODES[mode_name])
    if args.reps:
        mode["reps"] = args.reps
    models = [m for m in args.models.split(",") if m]
    if args.group:
        GROUP.update({m: max(2, args.group) for m in GROUP})
    torch_threads = [int(t) for t in args.torch_threads.split(",") if t.strip()]
    for item in args.batch:
        name, _, size = item.partition("=")
        if name not in TRAIN_BATCH or not size.isdigit():
            parser.error(f"--batch: expected MODEL=N with MODEL one of {', '.join(TRAIN_MODELS)}; "
                         f"received {item!r}")
        TRAIN_BATCH[name] = int(size)  # run.py's dict: every spec below reads it
    bad = [m for m in models if m not in TRAIN_MODELS]
    if bad:
        parser.error(f"--models: unknown {bad}; expected some of {', '.join(TRAIN_MODELS)}")
    cap = run.emulate_isa_cap()
    machine = run.machine()
    from resnet_tf.training.distribute import cap_cpu_flags

    flags = cap_cpu_flags(_cpu_flag_list(), cap)  # as oneDNN uses them: ONEDNN_MAX_CPU_ISA counts
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    precisions = (args.precisions.split(",") if args.precisions
                  else ["float32"] + ([BF16] if bf16 else []))
    os.makedirs(CACHE, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix=f"configs_{time.strftime('%Y%m%d_%H%M%S')}_", dir=CACHE)
    log(f"{mode_name} run, {mode['reps']} repeats; worker logs and raw results in {log_dir}")
    begin = time.time()
    shown = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    results = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine,
                   kind=machine.get("kind", "?"),
                   load_start=os.getloadavg()[0],
                   flags_shown=[f for f in shown if f in flags],
                   flags_absent=[f for f in shown if f not in flags],
                   flags_all=_cpu_flag_list(),
                   mode=mode_name, reps=mode["reps"], target_s=mode["target_s"],
                   threshold=args.threshold, comparisons={}, note=args.note, isa_cap=cap,
                   command=results_json.command_line())
    for model in models:
        for precision in precisions:
            variants = settings(model, precision)
            if args.only:
                wanted = {label.strip() for label in args.only.split(",")}
                variants = [(label, s) for label, s in variants if label in wanted]
            c = compare(model, precision, variants, log_dir, mode, torch_threads)
            c["reps"], c["batch"] = mode["reps"], TRAIN_BATCH[model]
            found = combine(model, variants, c["rows"], args.threshold)
            c["combined_label"] = found and found[0]
            if found:
                label, setting = found
                single = next((lab for lab, s in variants if s == setting), None)
                if single is not None:  # one setting won alone: its row is the answer
                    r = c["rows"][single]
                    torch = faster_torch(c["rows"])
                    same_group = torch.get("group") == r.get("group")
                    c["combined"] = dict(label=label, setting=setting, img_s=r["img_s"], single=True,
                                         vs_base=r["vs_base"],
                                         vs_torch=run.paired_ratio(r["times_img"], torch["times_img"])
                                         if same_group else (r["img_s"] / torch["img_s"]
                                                             if torch.get("img_s") else None))
                else:
                    log(f"{MODEL_TITLE[model]} {precision}: combined {label}")
                    final, _ = measure_group(
                        [(BASE, keras_spec(model, precision)),
                         (label, keras_spec(model, precision, **setting)),
                         *[(TORCH if t == THREADS else TORCH1,
                            torch_spec(model, precision, threads=t)) for t in torch_threads]],
                        log_dir, mode, model)
                    if label in final and BASE in final:
                        r, torch = final[label], faster_torch(final)
                        c["combined"] = dict(
                            label=label, setting=setting, img_s=r["img_s"],
                            vs_base=run.paired_ratio(r["times_img"], final[BASE]["times_img"]),
                            vs_torch=run.paired_ratio(r["times_img"], torch["times_img"])
                            if torch else None)
            results["comparisons"][f"{model} | {precision}"] = c
            _save(results, log_dir)
    if args.profile and "float32" in precisions:
        behind = {m: faster_torch(results["comparisons"][f"{m} | float32"]["rows"]).get("vs_base")
                  for m in models if f"{m} | float32" in results["comparisons"]}
        behind = {m: r for m, r in behind.items() if r}
        if behind:
            # vs_base of the PyTorch row = PyTorch / resnet_tf: the largest is furthest behind.
            model = max(behind, key=behind.get)
            results["profile"] = dict(model=model, precision="float32", vs_torch=1 / behind[model],
                                      summaries=profile(model, "float32", log_dir, mode))
    results["choice"], results["choice_note"] = choose(results, args.threshold)
    results.update(load_end=os.getloadavg()[0], seconds=time.time() - begin)
    _save(results, log_dir)
    out = args.out or (os.path.join(log_dir, "cpu_configs-quick.json") if args.quick
                       else run.result_path("cpu_configs", results))
    write(results, out)
    log(f"wrote {out} ({(time.time() - begin) / 60:.1f} min)")
    return 0


def joined(paths):
    """One results dict from the results.json of one or more runs on the same machine."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    results = dict(runs[0])
    results["comparisons"] = {}
    for r in runs:
        for key, c in r["comparisons"].items():
            c.setdefault("reps", r["reps"])
            results["comparisons"][key] = c
        if r.get("profile"):
            results["profile"] = r["profile"]
    results["load_start"] = max(r["load_start"] for r in runs)
    results["load_end"] = max(r.get("load_end", r["load_start"]) for r in runs)
    results["seconds"] = sum(r.get("seconds", 0) for r in runs)
    results["joined"] = len(runs)
    if len(runs) > 1:
        results["date"] = f"{runs[0]['date']} to {runs[-1]['date']}"
        results["reps"] = "/".join(sorted({str(r["reps"]) for r in runs}))
    return results


def write(results, out):
    """The markdown report, printed and written to `out` as a result file (JSON)."""
    body = render(results)
    kind = run.section_kind(results["kind"], results.get("isa_cap"))
    _, tables, notes = results_json.from_markdown(body)
    m = results["machine"]
    results_json.write(out, results_json.result(
        f"{TITLE}: {kind}", "speed", results.get("command", "python benchmarks/cpu_configs.py"),
        tables, notes, machine=f"{m['cpu']}, {m['cores']} cores ({kind})", date=results["date"]))
    print(body)


def _cpu_flag_list():
    """The `flags` line of /proc/cpuinfo, in its order (what lscpu prints as Flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def _save(results, log_dir):
    with open(os.path.join(log_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
