"""Benchmark worker processes: each sets one thing up, then times it on request.

run.py starts one worker per measured configuration (`python workers.py SPEC_JSON`) and
keeps it alive, so a comparison alternates A B A B between already warmed-up processes
without paying model building and tracing again. The Keras dtype policy is global,
which is one reason each configuration gets its own process.

Protocol (one JSON object per line): the worker prints `@@{"ready": ..., info}` after
setup, then answers each command read from stdin with one `@@{...}` line:
    {"cmd": "run", "n": N, "arg": A}  -> {"s": seconds for N units}
    {"cmd": "profile", "logdir": D}   -> {"profile": summary}   (Keras training only)
    {"cmd": "quit"}
Anything else a library prints goes to stderr (run.py sends it to a log file).
"""

import atexit
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THREADS = 2  # the CPU's core count; torch gets the same number TensorFlow uses by default
IMAGE_SIZE = {"resnet50": 224, "resnet18_cifar": 32, "resnet20": 32}
CLASSES = {"resnet50": 1000, "resnet18_cifar": 10, "resnet20": 10}


# --- Keras --------------------------------------------------------------------------------


def build_keras(impl, name):
    """The Keras model `impl` ("ours", "keras_apps" or "keras_hub") of network `name`,
    current policy."""
    import keras

    if impl == "keras_apps":
        if name != "resnet50":
            raise ValueError(f"keras.applications has no {name}")
        return keras.applications.ResNet50(weights=None)
    if impl == "keras_hub":
        if name != "resnet50":
            raise ValueError(f"the keras-hub comparison has no {name}")
        import keras_hub

        # ResNet-50 as keras-hub's "resnet_50_imagenet" preset configures it (no download).
        backbone = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
            stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
            use_pre_activation=False, image_shape=(224, 224, 3))
        return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=1000,
                                                      activation="softmax")
    from resnet_tf import build_resnet

    side = IMAGE_SIZE[name]
    size = (side, side, 3) if keras.config.image_data_format() == "channels_last" else (3, side, side)
    if name == "resnet50":
        return build_resnet(50, input_shape=size)
    if name == "resnet18_cifar":
        return build_resnet(18, stem="cifar", input_shape=size, classes=10)
    return build_resnet(20, input_shape=size, classes=10)


def forward_flops(model):
    """Forward FLOPs per image of the Conv2D and Dense layers (2 per multiply-add)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape  # (kh, kw, cin / groups, cout)
            out = layer.output.shape  # (None, h, w, cout) channels_last
            total += 2 * out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def trainable_count(model):
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


class KerasTrain:
    """`model.compile(jit_compile=False)` + `train_on_batch` on fixed in-memory tensors."""

    def __init__(self, impl, model, precision, batch, inter_op=None):
        import keras
        import tensorflow as tf

        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        keras.config.set_dtype_policy(precision)
        self.model = build_keras(impl, model)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=False,
        )
        size, classes = IMAGE_SIZE[model], CLASSES[model]
        self.x = tf.random.normal((batch, size, size, 3))
        self.y = tf.random.uniform((batch,), 0, classes, tf.int32)
        self.info = dict(params=trainable_count(self.model), fwd_flops=forward_flops(self.model),
                         policy=keras.config.dtype_policy().name)
        self.run(1)  # traces the train function; warm-up proper is run.py's business

    def run(self, n, arg=None):
        if arg == "marked":  # brackets the steps in the log, for ONEDNN_VERBOSE=1 runs
            print("@@MARK-START", flush=True)
        start = time.perf_counter()
        for _ in range(n):
            self.model.train_on_batch(self.x, self.y)  # returns numpy logs: synchronous
        seconds = time.perf_counter() - start
        if arg == "marked":
            print("@@MARK-END", flush=True)
        return seconds

    def profile(self, logdir, steps=2):
        import profile_summary
        import tensorflow as tf

        tf.profiler.experimental.start(logdir)
        try:
            wall = self.run(steps)
        finally:
            tf.profiler.experimental.stop()
        return profile_summary.summarize(logdir, steps=steps, wall_s=wall)


class KerasTrainConfig:
    """One CPU configuration of resnet_tf training, run the way `model.fit` runs it.

    The settings that must be fixed before TensorFlow starts (`TF_ENABLE_ONEDNN_OPTS`)
    come from the process environment (run.py's Worker `env`); the rest are arguments:
    inter/intra-op threads (`tf.config.threading`, before any op), XLA
    (`compile(jit_compile=...)`), `steps_per_execution`, the batch size and the data
    format ("channels_first" builds the network NCHW, as Keras' global setting does).
    One unit of `run` is one call of the compiled train function, i.e.
    `steps_per_execution` steps on a repeated in-memory batch (what `fit` calls per
    execution, without the callbacks), synchronised by reading the loss.
    """

    def __init__(self, model, precision, batch, jit_compile=False, steps_per_execution=1,
                 data_format="channels_last", inter_op=None, intra_op=None):
        import keras
        import tensorflow as tf

        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        keras.config.set_image_data_format(data_format)
        keras.config.set_dtype_policy(precision)
        self.model = build_keras("ours", model)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        size, classes = IMAGE_SIZE[model], CLASSES[model]
        shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
        x = tf.random.normal((batch, *shape))
        y = tf.random.uniform((batch,), 0, classes, tf.int32)
        self.iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        self.steps = steps_per_execution
        self.info = dict(params=trainable_count(self.model), steps_per_unit=steps_per_execution,
                         images_per_unit=batch * steps_per_execution,
                         policy=keras.config.dtype_policy().name,
                         onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                         inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
                         intra_op=tf.config.threading.get_intra_op_parallelism_threads())
        start = time.perf_counter()
        self.model.make_train_function()
        self.run(1)  # traces (and for XLA compiles) the train function
        self.info["first_call_s"] = round(time.perf_counter() - start, 1)

    def run(self, n, arg=None):
        start = time.perf_counter()
        for _ in range(n):
            logs = self.model.train_function(self.iterator)
        if hasattr(logs, "get_value"):  # a tf.experimental.Optional in some Keras versions
            logs = logs.get_value()
        float(logs["loss"])
        return time.perf_counter() - start

    def profile(self, logdir, steps=2):
        import profile_summary
        import tensorflow as tf

        units = max(1, steps // self.steps)
        tf.profiler.experimental.start(logdir)
        try:
            wall = self.run(units)
        finally:
            tf.profiler.experimental.stop()
        return profile_summary.summarize(logdir, steps=units * self.steps, wall_s=wall)


# --- PyTorch ------------------------------------------------------------------------------


class TorchTrain:
    """Standard loop: zero_grad, forward (bf16 autocast optional), backward, SGD step."""

    def __init__(self, model, precision, batch, threads=None):
        import torch
        import torch_resnets

        self.threads = threads or THREADS
        torch.set_num_threads(self.threads)
        torch.manual_seed(0)
        self.torch = torch
        self.bf16 = precision == "bf16"
        self.model = torch_resnets.build(model).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        size = IMAGE_SIZE[model]
        self.x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, CLASSES[model], (batch,))
        self.info = dict(
            params=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            threads=torch.get_num_threads(),
        )
        self.run(1)

    def step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def run(self, n, threads=None):
        self.torch.set_num_threads(threads or self.threads)
        start = time.perf_counter()
        for _ in range(n):
            self.step()
        return time.perf_counter() - start


# --- Inference ----------------------------------------------------------------------------


def _r50(impl, precision="float32"):
    import keras

    keras.config.set_dtype_policy(precision)
    return build_keras(impl, "resnet50")


class SavedModelInfer:
    """A SavedModel loaded with `tf.saved_model.load`, called through a signature.

    `how="serving"`: `resnet_tf.export.export_serving_model` (BatchNorm folded, weights
    frozen, computing in `export_precision`), called via its `serving_pixels` signature
    (uint8 pixels in). `how="keras_export"`: `model.export(format="tf_saved_model")`,
    Keras' own export, called via `serving_default` (float32 normalized images in).
    `precision` builds the model under that dtype policy.
    """

    def __init__(self, impl, how, batches, precision="float32", export_precision="float32"):
        import numpy as np
        import tensorflow as tf

        from resnet_tf.export import export_serving_model

        model = _r50(impl, precision)
        self.tmp = tempfile.mkdtemp(prefix="bench_sm_")
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)
        start = time.perf_counter()
        if how == "serving":
            path = export_serving_model(model, self.tmp, class_names=[str(i) for i in range(1000)],
                                        image_size=224, preset="imagenet",
                                        precision=export_precision)
            self.fn = tf.saved_model.load(path).signatures["serving_pixels"]
            def make(b):
                return {"images": tf.constant(
                    np.random.default_rng(0).integers(0, 256, (b, 224, 224, 3), np.uint8))}
        else:
            model.export(self.tmp, format="tf_saved_model", verbose=False)
            self.fn = tf.saved_model.load(self.tmp).signatures["serving_default"]
            (key,) = self.fn.structured_input_signature[1].keys()
            def make(b, key=key):
                return {key: tf.random.normal((b, 224, 224, 3))}
        self.inputs = {b: make(b) for b in batches}
        self.info = dict(export=how, export_s=round(time.perf_counter() - start, 1),
                         params=trainable_count(model))

    def run(self, n, batch):
        inputs = self.inputs[batch]
        start = time.perf_counter()
        for _ in range(n):
            out = self.fn(**inputs)
        next(iter(out.values())).numpy()
        return time.perf_counter() - start


class TFLiteInfer:
    """The product's TFLite file of ResNet-50, run by its interpreter helper (2 threads).

    The file is what `resnet-export --tflite QUANTIZATION` writes: `resnet_tf.export.
    export_tflite` (BatchNorm folded; "int8" is full-integer with int8 input and output).
    int8 is calibrated on `calibration_steps` random normalized images: the calibration
    data sets the quantization scales, not the graph, so the speed is the same as with
    training images. The input is quantized once with the file's own scale and zero
    point (as a client does before calling it) and not timed; one interpreter per batch.
    """

    def __init__(self, quantization, batches, calibration_steps):
        import numpy as np

        from resnet_tf.export import export_tflite, load_interpreter
        from resnet_tf.export.tflite import quantize_input

        tmp = tempfile.mkdtemp(prefix="bench_tflite_")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        rng = np.random.default_rng(0)
        calibration = (rng.standard_normal((calibration_steps, 224, 224, 3), np.float32)
                       if quantization == "int8" else None)
        start = time.perf_counter()
        path = export_tflite(_r50("ours"), os.path.join(tmp, f"resnet50_{quantization}.tflite"),
                             quantization=quantization, representative_images=calibration,
                             num_calibration=calibration_steps,
                             class_names=[str(i) for i in range(1000)], image_size=224,
                             preset="imagenet")
        convert_s = time.perf_counter() - start
        self.interpreters, self.inputs = {}, {}
        for b in batches:
            interp = load_interpreter(path, num_threads=THREADS)
            detail = interp.get_input_details()[0]
            if b != 1:
                interp.resize_tensor_input(detail["index"], [b, 224, 224, 3])
                interp.allocate_tensors()
            self.interpreters[b] = (interp, detail["index"], interp.get_output_details()[0]["index"])
            self.inputs[b] = quantize_input(rng.standard_normal((b, 224, 224, 3), np.float32), detail)
        self.info = dict(convert_s=round(convert_s, 1), size_mb=round(os.path.getsize(path) / 2**20, 1),
                         input_dtype=str(self.inputs[batches[0]].dtype))

    def run(self, n, batch):
        interp, index, output = self.interpreters[batch]
        start = time.perf_counter()
        for _ in range(n):
            interp.set_tensor(index, self.inputs[batch])
            interp.invoke()
            interp.get_tensor(output)
        return time.perf_counter() - start


# --- Input pipeline -----------------------------------------------------------------------


class Pipeline:
    """train.py's input pipeline and model.fit on real JPEGs vs synthetic in-memory data.

    Both datasets come from `resnet_tf.data.load_data` with the batch size, validation
    split and one-hot labels train.py uses; the model is compiled as train.py compiles
    it (auto precision, categorical cross-entropy, no XLA on CPU). `run(n, "real")`
    times n `fit` steps after the first one of the call (the first pays for the
    iterator and the shuffle buffer), `run(n, "pipeline")` only iterates the real
    pipeline, without a model.
    """

    def __init__(self, data_dir, model, batch):
        import keras
        import tensorflow as tf

        from resnet_tf import data as rdata
        from resnet_tf.training import DEFAULT_VAL_SPLIT as val_split

        precision = auto_precision()
        keras.config.set_dtype_policy(precision)
        start = time.perf_counter()
        real = rdata.load_data(data_dir=data_dir, batch_size=batch, val_split=val_split)
        load_s = time.perf_counter() - start
        synthetic = rdata.load_data("synthetic", image_size=real.image_size, batch_size=batch,
                                    synthetic_classes=len(real.class_names))
        classes = len(real.class_names)
        def one_hot(x, y):
            return x, tf.one_hot(y, classes)

        self.datasets = {
            "real": real.train.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE).repeat(),
            "synthetic": synthetic.train.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE).repeat(),
        }
        self.model = build_keras("ours", model)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=False,
        )
        self.batch = batch
        self.info = dict(precision=precision, load_s=round(load_s, 1),
                         train_examples=real.train_examples, image_size=real.image_size,
                         skipped_files=real.skipped_files)

    def run(self, n, source):
        if source == "pipeline":
            iterator = iter(self.datasets["real"])
            next(iterator)
            start = time.perf_counter()
            for _ in range(n):
                next(iterator)
            return time.perf_counter() - start
        import keras

        ends = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                ends.append(time.perf_counter())

        self.model.fit(self.datasets[source], epochs=1, steps_per_epoch=n + 1, verbose=0,
                       callbacks=[Clock()])
        return ends[-1] - ends[0]


def auto_precision():
    """The library's "auto" precision, as train.py resolves it."""
    from resnet_tf.training import resolve_precision

    return resolve_precision("auto")[0]


# --- GEMM ceiling -------------------------------------------------------------------------


class Gemm:
    """Large square matmuls: the throughput this CPU reaches in the best case, per dtype."""

    def __init__(self, lib, dtype, size=2048):
        self.lib, self.flops = lib, 2 * size**3
        if lib == "torch":
            import torch

            torch.set_num_threads(THREADS)
            dt = getattr(torch, dtype)
            self.a, self.b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
            self.mm = lambda: torch.mm(self.a, self.b)
        else:
            import tensorflow as tf

            self.a = tf.cast(tf.random.normal((size, size)), dtype)
            self.b = tf.cast(tf.random.normal((size, size)), dtype)
            mm = tf.function(lambda: tf.matmul(self.a, self.b))
            self.mm = lambda: mm().numpy()
        self.mm()
        self.info = dict(flops_per_call=self.flops)

    def run(self, n, arg=None):
        start = time.perf_counter()
        for _ in range(n):
            self.mm()
        return time.perf_counter() - start


# --- protocol -----------------------------------------------------------------------------


def make(spec):
    kind = spec["kind"]
    if kind == "keras_train":
        return KerasTrain(spec["impl"], spec["model"], spec["precision"], spec["batch"],
                          spec.get("inter_op"))
    if kind == "keras_config":
        return KerasTrainConfig(spec["model"], spec["precision"], spec["batch"],
                                jit_compile=spec.get("jit_compile", False),
                                steps_per_execution=spec.get("steps_per_execution", 1),
                                data_format=spec.get("data_format", "channels_last"),
                                inter_op=spec.get("inter_op"), intra_op=spec.get("intra_op"))
    if kind == "torch_train":
        return TorchTrain(spec["model"], spec["precision"], spec["batch"], spec.get("threads"))
    if kind == "savedmodel":
        return SavedModelInfer(spec["impl"], spec["how"], spec["batches"],
                               spec.get("precision", "float32"),
                               spec.get("export_precision", "float32"))
    if kind == "tflite":
        return TFLiteInfer(spec["quantization"], spec["batches"], spec.get("calibration_steps", 8))
    if kind == "pipeline":
        return Pipeline(spec["data_dir"], spec["model"], spec["batch"])
    if kind == "gemm":
        return Gemm(spec["lib"], spec["dtype"])
    raise ValueError(f"Unknown worker kind. Received: {kind!r}")


def main():
    spec = json.loads(sys.argv[1])
    # Keep the protocol channel clean: whatever libraries print goes to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        channel.write("@@" + json.dumps(obj) + "\n")

    start = time.perf_counter()
    try:
        worker = make(spec)
    except Exception as error:  # reported to run.py, which records the configuration as failed
        import traceback

        traceback.print_exc()
        send({"error": f"{type(error).__name__}: {error}"})
        return 1
    send({"ready": True, "setup_s": round(time.perf_counter() - start, 1), **worker.info})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "quit":
                break
            if command["cmd"] == "run":
                send({"s": worker.run(command["n"], command.get("arg"))})
            elif command["cmd"] == "profile":
                send({"profile": worker.profile(command["logdir"], command.get("steps", 2))})
        except Exception as error:
            import traceback

            traceback.print_exc()
            send({"error": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
