"""resnet_tf speed benchmarks: one command, one result file, results/speed_<machine kind>.json.

    python benchmarks/run.py            # full run (~25 min on a quiet 2-core CPU)
    python benchmarks/run.py --quick    # smoke test: 2 repeats, short warm-up
    python benchmarks/run.py --parts train,import --data-dir /tmp/cifar/train

Every configuration runs in its own long-lived worker process (workers.py): built,
traced and warmed up once, then timed on request. A comparison alternates its
workers round by round (A B C, B C A, ...), so machine noise hits every side alike;
a number is the median of the repeats, warm-up excluded, and a ratio is the median of
the per-round ratios. See README.md for what is measured and how to read it.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import report
import results_json
from report import BF16, INFER_BATCHES, MODEL_TITLE

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                     "resnet_tf_bench")
CIFAR_TAR = os.path.join(REPO, "..", "shared", "data", "cifar10", "train.tar.gz")
PARTS = ("train", "infer", "pipeline", "import")
TRAIN_MODELS = ("resnet50", "resnet18_cifar", "resnet20")
TRAIN_BATCH = {"resnet50": 32, "resnet18_cifar": 256, "resnet20": 128}

MODES = {
    # repeats, warm-up units, seconds a repeat aims at, profile steps, int8 calibration
    "full": dict(reps=5, warmup=1, target_s=3.0, profile_steps=2, calibration=8),
    "quick": dict(reps=2, warmup=1, target_s=0.5, profile_steps=1, calibration=2),
}


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


# --- workers ------------------------------------------------------------------------------


class Worker:
    """A workers.py process: set up on start, then `run(n, arg)` -> seconds."""

    def __init__(self, label, spec, log_dir, env=None):
        self.label, self.spec = label, spec
        self.log_path = os.path.join(log_dir, label.replace(" ", "_").replace("/", "-") + ".log")
        self.info, self.error = None, None
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "workers.py"), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),  # noqa: SIM115 (the worker's log, open for its life)
            text=True, bufsize=1, cwd=REPO, env={**os.environ, **(env or {})},
        )

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        return {"error": f"worker exited (status {self.proc.wait()}); see {self.log_path}"}

    def wait_ready(self):
        if self.info is None and self.error is None:
            reply = self._read()
            self.error = reply.get("error")
            self.info = None if self.error else reply
            if self.error:
                log(f"  {self.label}: FAILED ({self.error}); log: {self.log_path}")
            else:
                log(f"  {self.label}: ready in {reply['setup_s']} s")
        return self.error is None

    def call(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"{self.label}: {reply['error']} (log: {self.log_path})")
        return reply

    def run(self, n, arg=None):
        return self.call(cmd="run", n=n, arg=arg)["s"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def start_workers(specs, log_dir, parallel, env=None, envs=None):
    """Start {label: spec} workers, at most `parallel` setting up at once; the failed are dropped.

    `env` adds variables to every worker's environment, `envs` ({label: env}) to one's.
    """
    pending, workers, running = list(specs.items()), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            label, spec = pending.pop(0)
            running.append(Worker(label, spec, log_dir, {**(env or {}),
                                                         **(envs or {}).get(label, {})}))
        worker = running.pop(0)
        if worker.wait_ready():
            workers[worker.label] = worker
        else:
            worker.close()
    return {label: workers[label] for label in specs if label in workers}


def interleaved(entries, mode, fixed_units=None):
    """Time each entry (label, worker, arg) round-robin; returns {label: [seconds per unit]}.

    Warm-up calls (not recorded) also estimate how many units make one repeat last
    about `target_s`, unless `fixed_units` is given.
    """
    units = {}
    for _ in range(mode["warmup"]):
        for label, worker, arg in entries:
            units[label] = worker.run(1, arg)
    for label in units:
        units[label] = fixed_units or max(1, round(mode["target_s"] / units[label]))
    times = {label: [] for label, _, _ in entries}
    loads = []
    for r in range(mode["reps"]):
        shift = r % len(entries)
        for label, worker, arg in entries[shift:] + entries[:shift]:
            times[label].append(worker.run(units[label], arg) / units[label])
        loads.append(os.getloadavg()[0])
        log(f"    round {r + 1}/{mode['reps']}: " + ", ".join(
            f"{label} {1e3 * times[label][-1]:.1f} ms" for label, _, _ in entries))
    return times, loads


def median(values):
    return statistics.median(values) if values else None


def spread(values):
    """Half the min-max range, relative to the median."""
    if not values or len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / 2 / median(values)


def paired_ratio(times_a, times_b):
    """Median over rounds of time_b / time_a: how many times faster A is than B."""
    if not times_a or not times_b:
        return None
    return median([b / a for a, b in zip(times_a, times_b)])


# --- part 1: training ---------------------------------------------------------------------


def train_groups(models, precisions=(BF16, "float32")):
    """Comparison groups: (title, model, {worker label: spec}, [(entry, worker label, arg)]).

    A group holds at most three big-network processes (about 3-4 GB each). The PyTorch bf16
    worker is also timed with one thread (arg 1): under load from other jobs its
    two-thread OpenMP loop can be many times slower than one thread, and the target
    compares against PyTorch's faster setting.
    """
    groups = []
    for model in models:
        batch = TRAIN_BATCH[model]
        def keras(impl, precision, model=model, batch=batch):
            return dict(kind="keras_train", impl=impl, model=model, precision=precision,
                        batch=batch)

        def torch(precision, model=model, batch=batch):
            return dict(kind="torch_train", model=model, precision=precision, batch=batch)

        torch_entries = [("torch bf16", "torch bf16", None), ("torch bf16 1 thread", "torch bf16", 1)]
        if model in ("resnet50", "resnet18_cifar"):
            # One group per precision keeps the big networks' memory in check;
            # keras.applications' ResNet-50 joins at each precision.
            for precision, torch_precision in ((BF16, "bf16"), ("float32", "float32")):
                if precision not in precisions:
                    continue
                specs = {f"resnet_tf {precision}": keras("ours", precision)}
                if model == "resnet50":
                    specs[f"keras.applications {precision}"] = keras("keras_apps", precision)
                    if importlib.util.find_spec("keras_hub"):
                        specs[f"keras-hub {precision}"] = keras("keras_hub", precision)
                specs[f"torch {torch_precision}"] = torch(torch_precision)
                entries = [(label, label, None) for label in specs]
                if torch_precision == "bf16":
                    entries = entries[:-1] + torch_entries
                groups.append((f"{MODEL_TITLE[model]}, batch {batch}, {precision}", model,
                               specs, entries))
        elif BF16 not in precisions:
            specs = {"resnet_tf float32": keras("ours", "float32"),
                     "torch float32": torch("float32")}
            entries = [(label, label, None) for label in specs]
        else:
            specs = {f"resnet_tf {BF16}": keras("ours", BF16),
                     "resnet_tf float32": keras("ours", "float32"),
                     "torch bf16": torch("bf16"),
                     "torch float32": torch("float32")}
            entries = ([(label, label, None) for label in list(specs)[:2]] + torch_entries
                       + [("torch float32", "torch float32", None)])
            groups.append((f"{MODEL_TITLE[model]}, batch {batch}", model, specs, entries))
    return groups


def part_train(args, mode, log_dir, results):
    rows, profiles = [], {}
    # bfloat16 only where the CPU (as oneDNN sees it: ONEDNN_MAX_CPU_ISA counts) has it.
    precisions = (BF16, "float32") if results.get("auto") == BF16 else ("float32",)
    for title, model, specs, entry_specs in train_groups(args.models, precisions):
        log(f"Training: {title}")
        workers = start_workers(specs, log_dir, parallel=3)
        try:
            entries = [(label, workers[w], arg) for label, w, arg in entry_specs if w in workers]
            times, loads = interleaved(entries, mode)
            batch = TRAIN_BATCH[model]
            for label, w, _ in entries:
                rows.append(dict(group=title, model=model, batch=batch, label=label,
                                 img_s=batch / median(times[label]), spread=spread(times[label]),
                                 times=times[label], params=w.info.get("params"),
                                 fwd_flops=w.info.get("fwd_flops"), load=median(loads)))
            for a in times:  # paired ratios within the group
                for b in times:
                    if a != b:
                        results["train_ratios"][f"{title} | {a} / {b}"] = paired_ratio(
                            times[a], times[b])
            if model in ("resnet50", "resnet20") and args.profile:
                for label in (f"resnet_tf {BF16}", f"keras.applications {BF16}"):
                    if label in workers:
                        logdir = os.path.join(log_dir, "profile", f"{model}_{label.split()[0]}")
                        log(f"  TF profiler: {label} ({mode['profile_steps']} steps) -> {logdir}")
                        profiles[f"{model} | {label}"] = workers[label].call(
                            cmd="profile", logdir=logdir, steps=mode["profile_steps"])["profile"]
        finally:
            for w in workers.values():
                w.close()
        if model == "resnet50" and args.profile and f"resnet_tf {BF16}" in specs:
            results["onednn"] = onednn_profile(specs[f"resnet_tf {BF16}"], log_dir)
    results["train"], results["profiles"] = rows, profiles


def onednn_profile(spec, log_dir):
    """oneDNN kernels of one training step (ONEDNN_VERBOSE=1, a worker of its own)."""
    log("  oneDNN kernels (ONEDNN_VERBOSE=1, 1 step)")
    workers = start_workers({"onednn verbose": spec}, log_dir, parallel=1,
                            env={"ONEDNN_VERBOSE": "1"})
    if not workers:
        return None
    w = workers["onednn verbose"]
    try:
        w.run(1)
        seconds = w.run(1, "marked")
    finally:
        w.close()
    import profile_summary

    summary = profile_summary.onednn_kernels(w.log_path)
    summary["wall_ms_per_step"] = round(1e3 * seconds, 1)
    return summary


def part_gemm(args, mode, log_dir, results):
    specs = {f"{lib} {dtype}": dict(kind="gemm", lib=lib, dtype=dtype)
             for lib in ("tensorflow", "torch") for dtype in ("bfloat16", "float32")}
    log("GEMM ceiling (2048^3 matmul)")
    workers = start_workers(specs, log_dir, parallel=1)
    try:
        times, _ = interleaved([(label, w, None) for label, w in workers.items()], mode)
        results["gemm"] = {label: w.info["flops_per_call"] / min(times[label]) / 1e9
                           for label, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()


# --- part 2: inference --------------------------------------------------------------------


def part_infer(args, mode, log_dir, results):
    specs = {
        "resnet_tf SavedModel (export_serving_model)":
            dict(kind="savedmodel", impl="ours", how="serving", batches=INFER_BATCHES),
        "keras.applications SavedModel (export_serving_model)":
            dict(kind="savedmodel", impl="keras_apps", how="serving", batches=INFER_BATCHES),
        "resnet_tf SavedModel (model.export)":
            dict(kind="savedmodel", impl="ours", how="keras_export", batches=INFER_BATCHES),
        "keras.applications SavedModel (model.export)":
            dict(kind="savedmodel", impl="keras_apps", how="keras_export", batches=INFER_BATCHES),
        "resnet_tf SavedModel bfloat16 (export_serving_model)":
            dict(kind="savedmodel", impl="ours", how="serving", batches=INFER_BATCHES,
                 export_precision="bfloat16"),
        "resnet_tf TFLite float32":
            dict(kind="tflite", quantization="float32", batches=INFER_BATCHES),
        "resnet_tf TFLite int8": dict(kind="tflite", quantization="int8", batches=INFER_BATCHES,
                                      calibration_steps=mode["calibration"]),
    }
    log("Inference: ResNet-50 @224, float32 unless int8")
    workers = start_workers(specs, log_dir, parallel=3)
    rows = []
    try:
        for batch in INFER_BATCHES:
            log(f"  batch {batch}")
            entries = [(label, w, batch) for label, w in workers.items()]
            times, loads = interleaved(entries, mode)
            for label, w in workers.items():
                rows.append(dict(label=label, batch=batch, img_s=batch / median(times[label]),
                                 ms=1e3 * median(times[label]), spread=spread(times[label]),
                                 times=times[label], info=w.info, load=median(loads)))
            pairs = [("resnet_tf SavedModel (export_serving_model)",
                      "keras.applications SavedModel (export_serving_model)"),
                     ("resnet_tf SavedModel (export_serving_model)",
                      "keras.applications SavedModel (model.export)"),
                     ("resnet_tf SavedModel (model.export)",
                      "keras.applications SavedModel (model.export)"),
                     ("resnet_tf SavedModel bfloat16 (export_serving_model)",
                      "resnet_tf SavedModel (export_serving_model)"),
                     ("resnet_tf SavedModel bfloat16 (export_serving_model)",
                      "keras.applications SavedModel (model.export)"),
                     ("resnet_tf TFLite int8", "resnet_tf TFLite float32")]
            for a, b in pairs:
                if a in times and b in times:
                    results["infer_ratios"][f"batch {batch} | {a} / {b}"] = paired_ratio(
                        times[a], times[b])
    finally:
        for w in workers.values():
            w.close()
    results["infer"] = rows


# --- part 3: input pipeline ---------------------------------------------------------------


def cifar_folder(data_dir):
    """The CIFAR-10 JPEG folder: `data_dir`, or the shared archive extracted into the cache."""
    if data_dir:
        return os.path.abspath(data_dir)
    target = os.path.join(CACHE, "cifar10")
    folder = os.path.join(target, "train")
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        if not os.path.exists(CIFAR_TAR):
            raise SystemExit(f"No --data-dir given and {CIFAR_TAR} does not exist.")
        log(f"Extracting {os.path.normpath(CIFAR_TAR)} into {target}")
        os.makedirs(target, exist_ok=True)
        with tarfile.open(CIFAR_TAR) as tar:
            tar.extractall(target, filter="data")
        open(marker, "w").close()
    return folder


def part_pipeline(args, mode, log_dir, results):
    data_dir = cifar_folder(args.data_dir)
    model, batch = "resnet20", 128
    log(f"Input pipeline: {MODEL_TITLE[model]}, batch {batch}, data {data_dir}")
    workers = start_workers({"pipeline": dict(kind="pipeline", data_dir=data_dir, model=model,
                                              batch=batch)}, log_dir, parallel=1)
    if not workers:
        results["pipeline"] = None
        return
    w = workers["pipeline"]
    try:
        steps = 10 if mode is MODES["quick"] else 30
        entries = [("real JPEG folder", w, "real"), ("synthetic in memory", w, "synthetic")]
        times, loads = interleaved(entries, mode, fixed_units=steps)
        pipe, _ = interleaved([("pipeline alone", w, "pipeline")], mode, fixed_units=4 * steps)
        results["pipeline"] = dict(
            model=model, batch=batch, data_dir=data_dir, info=w.info,
            real=batch / median(times["real JPEG folder"]),
            synthetic=batch / median(times["synthetic in memory"]),
            ratio=paired_ratio(times["synthetic in memory"], times["real JPEG folder"]),
            spread=max(spread(times["real JPEG folder"]), spread(times["synthetic in memory"])),
            pipeline_alone=batch / median(pipe["pipeline alone"]), load=median(loads))
    finally:
        w.close()


# --- import time --------------------------------------------------------------------------

_IMPORT = ("import sys, time; t = time.perf_counter(); import {module}; "
           "print(time.perf_counter() - t, 'tensorflow_datasets' in sys.modules)")


def part_import(args, mode, log_dir, results):
    log("Import time (fresh interpreter each, alternating)")
    times = {"keras": [], "resnet_tf": []}
    tfds = False
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for _ in range(max(5, mode["reps"])):
        for module in times:
            out = subprocess.run([sys.executable, "-c", _IMPORT.format(module=module)],
                                 capture_output=True, text=True, env=env, cwd=HERE)
            seconds, loaded = out.stdout.split()[-2:]
            times[module].append(float(seconds))
            tfds |= module == "resnet_tf" and loaded == "True"
    results["import"] = dict(keras=median(times["keras"]), resnet_tf=median(times["resnet_tf"]),
                             ratio=paired_ratio(times["keras"], times["resnet_tf"]),
                             tfds_imported=tfds, runs=len(times["keras"]))


# --- machine ------------------------------------------------------------------------------

# Run in a fresh interpreter: library versions, the auto precision and the machine kind
# as the package sees them.
_VERSIONS = """
import json, keras, numpy, tensorflow as tf, workers
from resnet_tf.training.cpu_tuning import MACHINE_KINDS, choose_cpu_config
found = dict(auto=workers.auto_precision(), kind=choose_cpu_config(table=False)["kind"],
             kinds=[k for k, _ in MACHINE_KINDS], tensorflow=tf.__version__,
             keras=keras.__version__, numpy=numpy.__version__)
try:
    import torch
    found["torch"] = torch.__version__
except ImportError:
    found["torch"] = "absent"
print("@@" + json.dumps(found))
"""
def result_path(prefix, machine):
    """results/<prefix>_<machine kind>.json: one file per machine kind, which a full run of
    that kind replaces; an emulated kind (ONEDNN_MAX_CPU_ISA) gets its own."""
    name = results_json.slug(machine.get("kind", "unknown")) + ("-emulated" if machine.get("isa_cap") else "")
    return os.path.join(results_json.RESULTS, f"{prefix}_{name}.json")


def write_report(out, results, text):
    """Writes the markdown report `text` as a result file (JSON) to `out`."""
    m = results["machine"]
    kind = section_kind(m.get("kind", "?"), m.get("isa_cap"))
    _, tables, notes = results_json.from_markdown(text)
    document = results_json.result(
        f"Training and inference speed: {kind}", "speed",
        results.get("command", "python benchmarks/run.py"), tables,
        notes=f"{m['cpu']}, {m['cores']} cores.\n\n" + (notes or ""),
        machine=f"{m['cpu']}, {m['cores']} cores ({kind})", date=results.get("date"))
    results_json.write(out, document)


def section_kind(kind, isa_cap):
    """The results section of a machine kind; an emulated one (ONEDNN_MAX_CPU_ISA) gets its
    own beside a real machine's."""
    return kind + (f" (emulated: ONEDNN_MAX_CPU_ISA={isa_cap})" if isa_cap else "")


def aten_capability(cap):
    return "avx512" if cap.startswith(("AVX512", "AVX10")) else "avx2" if "AVX2" in cap else "default"


def emulate_isa_cap():
    """ONEDNN_MAX_CPU_ISA, when set, emulates an older CPU for oneDNN (TensorFlow and
    PyTorch); PyTorch's own ATen kernels get the matching ATEN_CPU_CAPABILITY so that both
    sides are capped alike. Returns the cap (None without one)."""
    from resnet_tf.training.distribute import onednn_isa_cap

    cap = onednn_isa_cap()
    if cap:
        os.environ["ONEDNN_MAX_CPU_ISA"] = cap  # workers inherit both
        os.environ.setdefault("ATEN_CPU_CAPABILITY", aten_capability(cap))
        log(f"emulating: ONEDNN_MAX_CPU_ISA={cap} "
            f"ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}")
    return cap


def machine():
    info = {"cpu": platform.processor() or "?", "flags": set()}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        for line in lines:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["cpu"] = value.strip()
            elif key in ("vendor_id", "cpu family", "model") and key not in info:
                info[key] = value.strip()
            elif key == "flags":
                info["flags"] = set(value.split())
    except OSError:
        pass
    flags = info.pop("flags")
    info["fast_flags"] = sorted(f for f in flags if f.startswith(("amx", "avx512_bf16",
                                                                    "avx512_vnni", "avx512f")))
    info["avx2"] = "avx2" in flags
    info["amx"] = any(f.startswith("amx") for f in flags)
    info["cores"] = len(os.sched_getaffinity(0))
    info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    probe = subprocess.run(
        [sys.executable, "-c", _VERSIONS], capture_output=True, text=True, cwd=HERE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    found = json.loads(([""] + [line[2:] for line in probe.stdout.splitlines()
                                if line.startswith("@@")])[-1] or "{}")
    info["auto"] = found.pop("auto", "?")
    info["kind"] = found.pop("kind", "?")
    info["kinds"] = found.pop("kinds", [])
    info["versions"] = found
    info["versions"]["python"] = platform.python_version()
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    info["isa_cap"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
    info["aten_capability"] = os.environ.get("ATEN_CPU_CAPABILITY")
    return info


# --- main ---------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer repeats")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--models", default=",".join(TRAIN_MODELS),
                        help="training networks (default all three)")
    parser.add_argument("--data-dir", help="CIFAR-10 JPEG folder (default: extract "
                        "../shared/data/cifar10/train.tar.gz into ~/.cache/resnet_tf_bench)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--out", help="result file, JSON (default: a full run of every part "
                        "writes benchmarks/results/speed_<machine kind>.json; a partial or "
                        "--quick run writes to the cache folder)")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="only re-write the result file from a run's raw results.json")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        mode_name = saved.get("mode", "quick" if args.quick else "full")
        text = report.render(saved, mode_name, MODES[mode_name], saved.get("seconds", 0))
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.render)), "speed.json")
        write_report(out, saved, text)
        print(text)
        return 0
    args.parts = [p for p in args.parts.split(",") if p]
    args.models = [m for m in args.models.split(",") if m]
    for value, allowed, name in ((args.parts, PARTS, "--parts"), (args.models, TRAIN_MODELS, "--models")):
        bad = [v for v in value if v not in allowed]
        if bad:
            parser.error(f"{name}: unknown {bad}; expected some of {', '.join(allowed)}")
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    os.makedirs(CACHE, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix=f"run_{time.strftime('%Y%m%d_%H%M%S')}_", dir=CACHE)
    complete = set(args.parts) == set(PARTS) and set(args.models) == set(TRAIN_MODELS)
    start = time.time()
    emulate_isa_cap()
    results = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine(),
                   load_start=os.getloadavg()[0], train_ratios={}, infer_ratios={},
                   command=results_json.command_line())
    out = args.out or (result_path("speed", results["machine"]) if mode_name == "full" and complete
                       else os.path.join(log_dir, f"speed-{mode_name}.json"))
    results["auto"] = results["machine"].pop("auto")
    log(f"{mode_name} run; worker logs and raw results in {log_dir}")
    if "train" in args.parts:
        part_train(args, mode, log_dir, results)
        part_gemm(args, mode, log_dir, results)
    if "infer" in args.parts:
        part_infer(args, mode, log_dir, results)
    if "pipeline" in args.parts:
        part_pipeline(args, mode, log_dir, results)
    if "import" in args.parts:
        part_import(args, mode, log_dir, results)
    results.update(load_end=os.getloadavg()[0], mode=mode_name, seconds=time.time() - start)
    text = report.render(results, mode_name, mode, results["seconds"])
    with open(os.path.join(log_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    write_report(out, results, text)
    print(text)
    log(f"wrote {out} ({(time.time() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
