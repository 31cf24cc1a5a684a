"""TensorFlow CPU settings for training speed, chosen from the CPU's features.

    config = choose_cpu_config()            # this CPU, from /proc/cpuinfo's flags
    reexec_with_env(config)                 # in a command's main(), before training
    apply_threads(config)                   # after TensorFlow is imported, before any op
    model.compile(..., steps_per_execution=config["steps_per_execution"])

The choices are data (`CHOICES`), one row per machine kind (`MACHINE_KINDS`), each
saying where its numbers come from. `benchmarks/cpu_configs.py` measures the settings
side by side on the machine at hand and prints the row to put here
(benchmarks/results/cpu_configs_*.json has the tables).

Some settings are read once, when TensorFlow is imported (`TF_ENABLE_ONEDNN_OPTS`):
setting them later has no effect. Importing any `resnet_tf` module imports Keras and so
TensorFlow, so a command that has already imported this module is too late for them:
`reexec_with_env` restarts the same command once with the variables set (a fresh
interpreter, about the time of one TensorFlow import). `apply_env_before_tensorflow` is
the same without the restart, for code that runs before TensorFlow is imported (a
launcher) or that only wants the variables in the environment of child processes.

A variable the user already set always wins over the table, and `overrides` (a
command-line flag) wins over both the table and the user's environment.

The CPU's flags are read as oneDNN will use them: `ONEDNN_MAX_CPU_ISA=AVX2` makes an
AVX-512 machine an AVX2 one here too (`distribute._cpu_flags`), which is how
`benchmarks/cpu_configs.py` measures an AVX2-only CPU on a newer one.
"""

import os
import sys

# (machine kind, CPU flags that must all be present), most specific first. The names
# are /proc/cpuinfo's flags on Linux.
MACHINE_KINDS = (
    ("AMX", frozenset({"amx_bf16"})),
    ("AVX512-BF16", frozenset({"avx512_bf16"})),
    ("AVX-512", frozenset({"avx512f"})),
    ("AVX2", frozenset({"avx2"})),
    ("older x86 / other", frozenset()),
)

# TensorFlow's own behaviour: oneDNN on (TF_ENABLE_ONEDNN_OPTS unset), inter- and
# intra-op thread pools sized by TensorFlow (None), one step per execution.
_DEFAULTS = {"env": {}, "inter_op": None, "intra_op": None, "steps_per_execution": 1}

# The fastest measured configuration per machine kind. `source` says where it comes from.
CHOICES = {
    "AMX": dict(
        _DEFAULTS,
        source="not measured on an AMX CPU: TensorFlow's defaults (oneDNN's AMX kernels)",
    ),
    "AVX512-BF16": dict(
        _DEFAULTS,
        source="measured by benchmarks/cpu_configs.py on a 2-core AMD EPYC (Zen 4, AVX512-BF16, "
               "no AMX), on a loaded machine: TensorFlow's defaults; no setting beat them "
               "consistently on ResNet-20/18/50, and oneDNN off (0.4-0.7x float32, ~0.01x "
               "mixed_bfloat16) and XLA (0.7x, 0.1x) are slower (benchmarks/results/cpu_configs_*.json)",
    ),
    "AVX-512": dict(
        _DEFAULTS,
        source="not measured on an AVX-512 CPU without BF16: TensorFlow's defaults",
    ),
    "AVX2": dict(
        _DEFAULTS,
        source="measured by benchmarks/cpu_configs.py on an AVX2-only CPU emulated on a 2-core "
               "AMD EPYC (Zen 4; ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2), quiet: "
               "TensorFlow's defaults; oneDNN off ran ResNet-20/ResNet-50 at 0.55x/0.49x, XLA at "
               "0.72x/0.50x, intra-op 1 at 0.87x (benchmarks/results/cpu_configs_*.json). Issue 15's single probes on a "
               "real AVX2 EPYC (oneDNN off +8-20 %) were not reproduced; rerun "
               "benchmarks/cpu_configs.py on such a machine",
    ),
    "older x86 / other": dict(
        _DEFAULTS,
        source="not measured: TensorFlow's defaults",
    ),
}

_KEYS = ("env", "inter_op", "intra_op", "steps_per_execution")
# Set in the environment of a command that reexec_with_env restarted: never restart twice.
_RESTARTED = "RESNET_TF_CPU_ENV_APPLIED"


def machine_kind(cpu_flags):
    """The first of `MACHINE_KINDS` whose flags `cpu_flags` (an iterable of str) all has."""
    flags = set(cpu_flags)
    for kind, required in MACHINE_KINDS:
        if required <= flags:
            return kind
    return MACHINE_KINDS[-1][0]


CPU_CONFIGS = ("auto", "tf-defaults")
ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def choose_cpu_config(cpu_flags=None, *, overrides=None, table=True):
    """The CPU training settings for a CPU with `cpu_flags`.

    Args:
        cpu_flags: iterable of str, e.g. {"avx2", "fma"}; None reads this machine's
            (`resnet_tf.training.distribute._cpu_flags`, /proc/cpuinfo).
        overrides: dict with any of "env" ({name: value}, merged into the table's; a
            value of None drops the variable), "inter_op", "intra_op",
            "steps_per_execution". It wins over the table, and its variables over the
            user's environment.
        table: bool. False gives TensorFlow's own defaults whatever the CPU
            (`--cpu-config tf-defaults`); overrides still apply.

    Returns:
        dict(kind=str, env={name: str}, inter_op=int or None, intra_op=int or None,
        steps_per_execution=int, source=str (the table's), reason=str,
        forced_env=[names from overrides]).
        A thread count of None means TensorFlow's default.
    """
    if cpu_flags is None:
        from resnet_tf.training.distribute import _cpu_flags

        cpu_flags = _cpu_flags()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_KEYS))
    if unknown:
        raise ValueError(f"Unknown CPU setting. Received: overrides with {', '.join(unknown)}; "
                         f"expected some of {', '.join(_KEYS)}")
    kind = machine_kind(cpu_flags)
    row = CHOICES[kind] if table else dict(
        _DEFAULTS, source="TensorFlow's defaults (--cpu-config tf-defaults)")
    config = {key: row[key] for key in _KEYS}
    config["env"] = dict(row["env"])
    config["kind"] = kind
    config["source"] = row["source"]
    config["forced_env"] = []
    reason = f"CPU kind {kind}: {row['source']}"
    env_overrides = overrides.pop("env", None) or {}
    for name, value in env_overrides.items():
        if value is None:
            config["env"].pop(name, None)
        else:
            config["env"][name] = str(value)
            config["forced_env"].append(name)
    config.update(overrides)
    if env_overrides or overrides:
        shown = {**({"env": env_overrides} if env_overrides else {}), **overrides}
        reason += "; overridden: " + ", ".join(f"{k}={v!r}" for k, v in shown.items())
    config["reason"] = reason
    return config


def apply_env_before_tensorflow(config, environ=None):
    """Puts `config["env"]` into `environ` (default `os.environ`); returns what it changed.

    A variable already in `environ` is kept (the user's choice wins) unless it came from
    `choose_cpu_config(overrides=...)`. Effective only before TensorFlow is imported;
    a running command uses `reexec_with_env`.

    Returns:
        {name: value} of the variables it set or changed.
    """
    environ = os.environ if environ is None else environ
    changed = {}
    for name, value in config["env"].items():
        if name in environ and name not in config.get("forced_env", ()):
            continue
        if environ.get(name) != value:
            environ[name] = value
            changed[name] = value
    return changed


def reexec_with_env(config, argv=None, *, environ=None, modules=None, execv=None):
    """Makes `config["env"]` take effect for the running command, restarting it if needed.

    Before TensorFlow is imported it only sets the variables. After, if a variable has to
    change, it sets them and replaces the process with a fresh run of the same command
    line (`os.execv(sys.executable, [sys.executable, *argv])`; argv defaults to
    `sys.orig_argv[1:]`, so `python -m resnet_tf train ...` restarts as itself); the
    restarted command finds them set and does not restart again.

    Returns:
        {name: value} set without a restart. It does not return when it restarts.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    execv = os.execv if execv is None else execv
    changed = apply_env_before_tensorflow(config, environ)
    if not changed or "tensorflow" not in modules or environ.get(_RESTARTED):
        return changed
    environ[_RESTARTED] = "1"
    print("resnet_tf: restarting with " + " ".join(f"{k}={v}" for k, v in changed.items())
          + " (TensorFlow reads it when it starts)", file=sys.stderr, flush=True)
    argv = list(sys.orig_argv[1:] if argv is None else argv)
    execv(sys.executable, [sys.executable, *argv])
    return changed  # reached only when `execv` is a test double


def apply_threads(config):
    """Sets TensorFlow's inter/intra-op thread counts from `config` (None leaves
    TensorFlow's default). Call after importing TensorFlow, before it runs an op.

    Returns False (and marks `config["threads_not_applied"]`) when TensorFlow was
    already running and kept its thread pools.
    """
    import tensorflow as tf

    try:
        if config.get("inter_op"):
            tf.config.threading.set_inter_op_parallelism_threads(config["inter_op"])
        if config.get("intra_op"):
            tf.config.threading.set_intra_op_parallelism_threads(config["intra_op"])
    except RuntimeError:
        config["threads_not_applied"] = True
        return False
    return True


def run_cpu_config(cpu_config="auto", *, onednn=None, inter_op=None, intra_op=None,
                   steps_per_execution=None, cpu_flags=None):
    """`choose_cpu_config` from a command's flags: `--cpu-config auto|tf-defaults`,
    `--onednn on|off`, `--inter-op-threads`, `--intra-op-threads`,
    `--steps-per-execution` (None: the table's value)."""
    overrides = {}
    if onednn is not None:
        overrides["env"] = {ONEDNN: "1" if onednn == "on" else "0"}
    for key, value in (("inter_op", inter_op), ("intra_op", intra_op),
                       ("steps_per_execution", steps_per_execution)):
        if value is not None:
            overrides[key] = value
    return choose_cpu_config(cpu_flags, overrides=overrides, table=cpu_config != "tf-defaults")


def describe_cpu_config(config, environ=None):
    """One line for the resolved configuration: what is in effect, and why.

    A variable of the table that is not in `environ` (a library caller who imported
    TensorFlow first) is named as not applied, with how to apply it.
    """
    environ = os.environ if environ is None else environ
    onednn = environ.get(ONEDNN, "1")
    threads = ", ".join(f"{name} {config[key] or 'TensorFlow default'}"
                        for name, key in (("inter-op", "inter_op"), ("intra-op", "intra_op")))
    steps = config["steps_per_execution"]
    line = (f"oneDNN {'off' if onednn.strip().lower() in ('0', 'false', 'off') else 'on'}, "
            f"threads {threads}, {steps} step(s) per execution")
    missing = {k: v for k, v in config["env"].items() if k not in environ}
    if missing:
        line += ("; not applied: " + " ".join(f"{k}={v}" for k, v in missing.items())
                 + " (set it before TensorFlow starts; train.py does)")
    if config.get("threads_not_applied"):
        line += "; thread counts not applied (TensorFlow was already running)"
    overridden = config["reason"].partition("; overridden: ")[2]
    from resnet_tf.training.distribute import onednn_isa_cap

    cap = onednn_isa_cap(environ)
    kind = config["kind"] + (f" with ONEDNN_MAX_CPU_ISA={cap}" if cap else "")
    return (f"{line} (CPU kind {kind}: {config['source'].split(': ')[0]}"
            + (f"; overridden: {overridden}" if overridden else "") + ")")
