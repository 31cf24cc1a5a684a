"""Where training runs: the mixed-precision policy and the tf.distribute strategy.

TensorFlow-only, like the rest of the trainer; the model code never imports it.
"""

import json
import os

import keras

from resnet_tf.errors import ConfigError


def resolve_precision(precision="auto"):
    """Returns `(policy name, reason)`.

    "auto": mixed_float16 on GPUs of compute capability 7.0 or newer (tensor cores),
    mixed_bfloat16 on CPUs with AMX or AVX512-BF16 (unless oneDNN is off:
    `TF_ENABLE_ONEDNN_OPTS=0`), float32 otherwise.
    """
    if precision != "auto":
        return precision, "requested"
    import tensorflow as tf

    gpus = visible_gpus()
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability")
                        for g in gpus]
        if all(c and tuple(c) >= (7, 0) for c in capabilities):
            return "mixed_float16", f"auto: GPU compute capability {capabilities[0]}"
        return "float32", f"auto: GPU compute capability {capabilities[0]} is below 7.0"
    flags = _cpu_flags() & {"amx_bf16", "avx512_bf16"}
    if flags and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("0", "false"):
        # TensorFlow's bfloat16 kernels without oneDNN: ResNet-20 ran ~85x slower
        # (benchmarks/results/cpu_configs_*.json).
        return "float32", (f"auto: CPU with {' and '.join(sorted(flags))}, but oneDNN is off "
                           "and TensorFlow's bfloat16 is slow without it")
    if flags:
        return "mixed_bfloat16", f"auto: CPU with {' and '.join(sorted(flags))}"
    return "float32", "auto: no fast float16/bfloat16 on this CPU"


# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA), lowest first, and the /proc/cpuinfo flags a
# level below each of them must not count: a cap at AVX2 makes an AVX-512 CPU an AVX2 one
# for every oneDNN kernel, in TensorFlow and PyTorch alike.
_ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
               "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16",
               "AVX10_1_512_AMX", "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16",
               "AVX512_CORE_AMX_FP16", "ALL")
_FLAGS_FROM = (("AVX2", ("avx2", "fma")), ("AVX512_CORE", ("avx512",)),
               ("AVX512_CORE_BF16", ("avx512_bf16",)), ("AVX10_1_512_AMX", ("amx",)))


def onednn_isa_cap(environ=None):
    """ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) when set to a known level, else None."""
    environ = os.environ if environ is None else environ
    value = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    return value if value in _ISA_LEVELS and value != "ALL" else None


def _cpu_flags(environ=None):
    """This CPU's flags (/proc/cpuinfo) as oneDNN will use them: without those above
    `onednn_isa_cap()` (how an AVX2-only machine is emulated on a newer one)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return cap_cpu_flags(flags, onednn_isa_cap(environ))


def cap_cpu_flags(flags, cap):
    """`flags` without those of ISA levels above `cap` (a `_ISA_LEVELS` name or None)."""
    if cap is None:
        return set(flags)
    level = _ISA_LEVELS.index(cap)
    dropped = tuple(p for name, prefixes in _FLAGS_FROM if _ISA_LEVELS.index(name) > level
                    for p in prefixes)
    return {f for f in flags if not f.startswith(dropped)}


def check_divisible(batch_size, replicas):
    """Raises `ConfigError` unless the global batch splits evenly over the replicas."""
    if batch_size is not None and batch_size % replicas:
        raise ConfigError(f"--batch-size {batch_size} is not divisible by the "
                          f"{replicas} replicas; use a multiple of {replicas}.")


def make_strategy(devices=None, batch_size=None):
    """The `tf.distribute` strategy for this process; call before TensorFlow runs any op.

    `TF_CONFIG` set: MultiWorkerMirroredStrategy. Otherwise MirroredStrategy over two or
    more visible GPUs, else the default strategy. `devices` selects the first N GPUs; on
    a host without GPUs, N > 1 splits the CPU into N logical devices and mirrors over
    them (slower than one device: it exists to exercise distributed code on any host).
    `batch_size`, when given, is checked against N CPU devices before they are made. In a
    process that has run TensorFlow already (a notebook), the GPUs cannot be hidden any
    more: the strategy then names the first N.
    """
    import tensorflow as tf

    gpus = visible_gpus()
    multi_worker = bool(os.environ.get("TF_CONFIG"))
    if devices is not None and gpus:
        if devices > len(gpus):
            raise ConfigError(f"--devices {devices} asks for more GPUs than the {len(gpus)} "
                              "visible.")
        gpus = gpus[:devices]
        try:
            tf.config.set_visible_devices(gpus, "GPU")
        except RuntimeError:  # train() in a notebook that has run TensorFlow: every GPU is
            # set up already, so the strategy names the first N instead of hiding the rest.
            if multi_worker:
                raise ConfigError(
                    f"--devices {devices} with TF_CONFIG hides the other GPUs, which TensorFlow "
                    "fixes before it runs its first op, and this process has run TensorFlow "
                    f"already. Received: --devices {devices}; expected a fresh process "
                    "(train.py) for it.") from None
            names = [f"/gpu:{i}" for i in range(devices)]
            if devices == 1:
                return tf.distribute.OneDeviceStrategy(names[0])
            return tf.distribute.MirroredStrategy(names)
    elif devices is not None and devices > 1:
        if multi_worker:
            raise ConfigError("--devices > 1 without GPUs cannot be combined with TF_CONFIG; "
                              "run one process per worker instead.")
        cores = os.cpu_count() or 1
        if devices > cores:
            raise ConfigError(f"--devices asks for more CPU devices than cores. Received: "
                              f"--devices {devices}; expected at most {cores} on this machine "
                              "without GPUs.")
        check_divisible(batch_size, devices)
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
        except RuntimeError:  # e.g. train() in a notebook that has run TensorFlow already
            if len(tf.config.list_logical_devices("CPU")) != devices:
                raise ConfigError(
                    f"--devices {devices} splits the CPU into {devices} logical devices, which "
                    "TensorFlow fixes before it runs its first op, and this process has run "
                    "TensorFlow already. Received: --devices "
                    f"{devices}; expected a fresh process (train.py) for it.") from None
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
    if multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(gpus) >= 2:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy):
    """The public name of the strategy's class ("default" for no strategy)."""
    import tensorflow as tf

    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name  # the class itself may be named otherwise (CollectiveAllReduceStrategy)
    name = type(strategy).__name__
    return "default" if name.startswith("_Default") else name


def is_chief(strategy):
    """Whether this process writes the run's files (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return _chief(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def tf_config_is_chief():
    """`is_chief` read from `TF_CONFIG` alone, before any strategy exists (the run's lock
    is taken first); without `TF_CONFIG`, or with one that is not JSON, True."""
    try:
        parsed = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = parsed.get("task") or {}
        return _chief(task.get("type"), int(task.get("index", 0)), parsed.get("cluster") or {})
    except (ValueError, TypeError, AttributeError):
        return True  # make_strategy reports a malformed TF_CONFIG


def _chief(task_type, task_id, cluster):
    """The chief, or worker 0 of a cluster without one, writes the run's files."""
    if not task_type or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def work_around_keras_distributed_fit(model, strategy, dataset):
    """Two Keras 3 fit/evaluate bugs under a strategy with more than one replica.

    1. fit and evaluate build metrics and the optimizer from a first batch that they
       reduce across replicas (`_maybe_symbolic_build`). That fails when the first batch
       does not split evenly (MirroredStrategy: "Inputs to operation AddN ... must have
       the same size and shape", e.g. 3 validation images on 2 replicas) and always under
       MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)",
       keras-team/keras#20585). Building from the dataset's element spec needs no data,
       and fit/evaluate then have nothing to build.
    2. Multi-worker only: each step's metric results, scalars, are reduced with `axis=0`
       ("Invalid reduction dimension 0 for input with 0 dimensions"); they are averaged
       over the workers here instead.
    Both touch Keras internals, so they apply only where a strategy has several replicas.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if strategy.num_replicas_in_sync < 2:
        return
    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if not tf_trainer._collective_all_reduce_multi_worker(strategy):
        return

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_resnet_tf_patch", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._resnet_tf_patch = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def visible_gpus():
    """The GPUs TensorFlow sees (an empty list on CPU-only hosts)."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")
