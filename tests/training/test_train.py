"""train.py: the run directory, resuming, refusals, error paths, the recipe, distribution.

The command-line tests run `train.py` in subprocesses on a tiny generated image folder
(3 classes of 12x12 images), as a user would; the recipe tests run in-process.
"""

import concurrent.futures
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_train, train_env, train_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "train.py")
CLASSES = ("frog", "cat", "dog")  # written unsorted: labels follow sorted folder names
PER_CLASS = 20
CORRUPT = 2
# TensorFlow's C++ start-up logging, which no environment variable silences in 2.21.
TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} |WARNING: All log messages before absl|$)")
FAST = ["--epochs", "2", "--batch-size", "16", "--no-export"]
CPU_FLAGS = ["--onednn", "off", "--intra-op-threads", "1", "--steps-per-execution", "2"]


def _env(**extra):
    return train_env(**extra)


def train(*args, timeout=240, **env):
    return run_train(*args, timeout=timeout, **env)


def start(*args, **env):
    return subprocess.Popen([sys.executable, TRAIN, *map(str, args)], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def our_stderr_lines(result):
    return [line for line in result.stderr.splitlines() if not TF_LOG_LINE.match(line)]


def history(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def snapshot(directory):
    """Name, size and modification time of everything under `directory`."""
    state = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name == ".lock":  # the run's lock: taken by every command, not run content
                continue
            path = os.path.join(root, name)
            stat = os.stat(path)
            state[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return state


def write_images(root, per_class, corrupt=0):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i in range(per_class):
            # One dominant colour channel per class: learnable in a few steps.
            pixels = rng.integers(0, 60, (12, 12, 3))
            pixels[..., c] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    for i in range(corrupt):
        (root / "cat" / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return str(root)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), PER_CLASS, CORRUPT)


@pytest.fixture(scope="module")
def finished_run(image_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "run")
    result = train("--data-dir", image_dir, "--epochs", 2, "--batch-size", 16, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


# --- a complete run -----------------------------------------------------------------------


def test_run_directory_holds_every_artifact(finished_run):
    out, _ = finished_run
    for name in ("config.json", "classes.txt", "history.csv", "curves.png", "metrics.json",
                 "best.keras", "last.keras"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(os.path.join(out, "logs")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    assert [row["epoch"] for row in history(out)] == ["1", "2"]
    assert not os.path.exists(os.path.join(out, "backup"))  # removed once complete
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["status"] == "complete"
    assert config["config"]["depth"] == 20 and config["config"]["stem"] == "cifar"


def test_export_is_written(finished_run):
    out, _ = finished_run
    versions = os.listdir(os.path.join(out, "export", "resnet20"))
    assert versions == ["1"], versions


def test_checkpoints_load_compiled_after_import_resnet_tf(finished_run):
    out, _ = finished_run
    code = (f"import keras, resnet_tf; m = keras.saving.load_model({os.path.join(out, 'best.keras')!r}); "
            "print(type(m.optimizer).__name__, m.output_shape)")
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SGD (None, 3)" in result.stdout


def test_classes_txt_lists_sorted_folder_names(finished_run):
    out, _ = finished_run
    with open(os.path.join(out, "classes.txt")) as f:
        assert f.read().splitlines() == sorted(CLASSES)


def test_metrics_json(finished_run):
    out, _ = finished_run
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        val_examples = json.load(f)["runtime"]["val_examples"]
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert metrics["class_names"] == sorted(CLASSES)
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum() == val_examples == metrics["examples"]
    assert metrics["top1"] == pytest.approx(np.trace(confusion) / confusion.sum())
    for i, name in enumerate(sorted(CLASSES)):
        per_class = metrics["per_class"][name]
        assert per_class["support"] == confusion[i].sum()
        assert per_class["recall"] == pytest.approx(confusion[i, i] / confusion[i].sum())
        assert 0 <= per_class["precision"] <= 1
    assert metrics["best_epoch"] in (1, 2)


def test_prints_resolved_configuration_and_scaled_lr(finished_run):
    _, result = finished_run
    out = result.stdout
    assert re.search(r"precision\s+(float32|mixed_bfloat16|mixed_float16) \(auto", out)
    assert re.search(r"strategy\s+\S+, 1 replica\(s\)", out)
    assert "16 global, 16 per replica" in out
    # 0.4 per 256 images (the CIFAR recipe) at a global batch of 16.
    assert re.search(r"learning rate\s+0\.025 \(0\.4 per 256 images x 16/256\)", out)
    assert out.index("Configuration:") < out.index("Epoch 1/2")
    # The CPU settings chosen for this machine's kind (issue 15).
    assert re.search(r"cpu settings\s+oneDNN (on|off), threads inter-op .+\(CPU kind \S+", out)


def test_one_line_per_epoch_when_not_a_terminal(finished_run):
    _, result = finished_run
    assert "Epoch 2/2" in result.stdout
    assert len(re.findall(r"^\d+/\d+ - .*loss", result.stdout, re.M)) == 2


def test_corrupt_files_are_skipped_and_counted(finished_run):
    out, result = finished_run
    assert f"skipped {CORRUPT} unreadable image file(s)" in result.stdout
    with open(os.path.join(out, "config.json")) as f:
        runtime = json.load(f)["runtime"]
    assert runtime["skipped_files"] == CORRUPT
    assert runtime["train_examples"] + runtime["val_examples"] == 3 * PER_CLASS


def test_finished_run_is_not_retrained(finished_run, image_dir):
    out, _ = finished_run
    before = snapshot(out)
    result = train("--data-dir", image_dir, "--epochs", 2, "--batch-size", 16, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout and "Epoch" not in result.stdout
    assert snapshot(out) == before


def test_different_configuration_is_refused(finished_run, image_dir):
    out, _ = finished_run
    before = snapshot(out)
    result = train_in_process("--data-dir", image_dir, "--epochs", 3, "--batch-size", 16,
                              "--lr", 0.8, "--out", out)
    assert result.returncode == 2
    [line] = our_stderr_lines(result)
    assert line.startswith("train.py: error: ") and "--overwrite" in line
    assert "epochs: 2 -> 3" in line and "lr: 0.4 -> 0.8" in line
    assert snapshot(out) == before


# --- resuming ------------------------------------------------------------------------------


def test_a_run_from_before_split_seed_resumes_on_its_own_hold_out(image_dir, tmp_path,
                                                                  monkeypatch):
    """Before --split-seed, --seed drew the hold-out: rerunning such a run's command
    (`--seed 3`, no --split-seed) must validate on the images it was validated on, and
    load the data once, knowing the seed before building the pipelines."""
    from resnet_tf.training import trainer
    from resnet_tf.training.recipes import RunOptions, TrainConfig

    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(
        {"config": {"seed": 3, "preset": "cifar", "image_size": 12}, "status": "running"}))
    seeds = []

    class Loaded(Exception):
        pass

    def load_data(*args, split_seed, **kwargs):
        seeds.append(split_seed)
        raise Loaded  # what follows is an ordinary resume

    monkeypatch.setattr(trainer, "load_data", load_data)
    monkeypatch.setattr(trainer, "cpu_config_for", lambda options: None)
    with pytest.raises(Loaded):
        trainer.train(TrainConfig(data_dir=image_dir, seed=3, epochs=1, batch_size=16),
                      RunOptions(out=str(out), export=False))
    assert seeds == [3]


@pytest.mark.parametrize("status", ["running", "complete"])
def test_a_run_from_before_split_seed_refuses_another_hold_out(image_dir, tmp_path, status):
    """`--split-seed 0` on a run whose `--seed 3` drew its hold-out (before the flag) is a
    different run: resuming it would validate on images it trained on."""
    from resnet_tf.errors import ConfigError
    from resnet_tf.training import trainer
    from resnet_tf.training.recipes import RunOptions, TrainConfig

    out = tmp_path / "old"
    out.mkdir()
    before = json.dumps({"config": {"seed": 3, "depth": 20, "preset": "cifar",
                                    "image_size": 12}, "status": status})
    (out / "config.json").write_text(before)
    with pytest.raises(ConfigError, match=r"split_seed: 3 -> 0\); pass --overwrite"):
        trainer.train(TrainConfig(data_dir=image_dir, seed=3, split_seed=0, epochs=1,
                                  batch_size=16, depth=20),
                      RunOptions(out=str(out), export=False))
    assert (out / "config.json").read_text() == before


@pytest.fixture(scope="module")
def resumed_run(image_dir, tmp_path_factory):
    """A 4-epoch run killed with SIGKILL once epoch 2 is in history.csv, then rerun."""
    out = str(tmp_path_factory.mktemp("runs") / "resumed")
    args = ["--data-dir", image_dir, "--epochs", 4, "--batch-size", 16, "--no-export",
            "--out", out]
    process = start(*args)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if os.path.exists(os.path.join(out, "history.csv")) and len(history(out)) >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        killed_output = process.communicate(timeout=30)[0]
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, killed_output
    killed_rows = len(history(out))
    # CPU settings are not part of the run: the resumed half changes them (and must set
    # TF_ENABLE_ONEDNN_OPTS itself, restarting once).
    resumed = train(*args, *CPU_FLAGS, TF_ENABLE_ONEDNN_OPTS=None)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return out, args, killed_rows, resumed


def test_killed_run_resumes_where_it_stopped(resumed_run):
    out, _, killed_rows, resumed = resumed_run
    assert 2 <= killed_rows < 4
    assert [int(row["epoch"]) for row in history(out)] == [1, 2, 3, 4]
    assert "Epoch 1/4" not in resumed.stdout and "Epoch 4/4" in resumed.stdout
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["epochs"] == 4


def test_cpu_flags_override_the_choice_and_restart_for_onednn(resumed_run):
    out, _, _, resumed = resumed_run
    assert "restarting with TF_ENABLE_ONEDNN_OPTS=0" in resumed.stderr
    assert re.search(r"cpu settings\s+oneDNN off, threads inter-op TensorFlow default, "
                     r"intra-op 1, 2 step\(s\) per execution \(CPU kind", resumed.stdout)
    assert "overridden" in resumed.stdout
    # bfloat16 without oneDNN is far slower: auto precision is float32 then.
    assert re.search(r"precision\s+float32 \(auto", resumed.stdout)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["runtime"]["cpu_settings"].startswith("oneDNN off")


def test_learning_rate_continues_after_resume(resumed_run):
    out, *_ = resumed_run
    lrs = [float(row["lr"]) for row in history(out)]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0  # cosine reaches 0 at the end


def test_overwrite_starts_the_run_again(resumed_run):
    out, args, *_ = resumed_run
    args = [a if a != 4 else 1 for a in args]  # --epochs 1
    result = train_in_process(*args, "--overwrite")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [row["epoch"] for row in history(out)] == ["1"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["config"]["epochs"] == 1


# --- errors --------------------------------------------------------------------------------


def _error_cases(tmp):
    image_dir = write_images(tmp / "images", per_class=8)
    tmp = str(tmp)
    not_a_dir = os.path.join(tmp, "a_file")
    open(not_a_dir, "w").close()
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty, exist_ok=True)
    data = ["--data-dir", image_dir]
    cases = {
        "unknown depth": ([*data, "--depth", 33], "Received: --depth 33"),
        "non-positive epochs": ([*data, "--epochs", 0], "--epochs"),
        "indivisible batch": ([*data, "--devices", 2, "--batch-size", 15],
                              "not divisible by the 2 replicas"),
        "missing data dir": (["--data-dir", os.path.join(tmp, "nowhere")], "does not exist"),
        "data error": (["--data-dir", empty], "no class sub-folders"),
        "build_resnet error": ([*data, "--stem", "imagenet"], "at least 16x16"),
    }
    # The cases run at once: each its own --out, since a run folder takes one writer.
    cases = {name: ([*args, "--out", os.path.join(tmp, f"out{i}")], expected)
             for i, (name, (args, expected)) in enumerate(cases.items())}
    cases["unwritable out"] = ([*data, "--out", os.path.join(not_a_dir, "run")], "cannot write")
    return cases


@pytest.fixture(scope="module")
def error_results(tmp_path_factory):
    # In-process: each stops before training, so a subprocess would add only TF's start-up.
    cases = _error_cases(tmp_path_factory.mktemp("errors"))
    return {name: (train_in_process(*FAST, *args), expected)
            for name, (args, expected) in cases.items()}


@pytest.mark.parametrize("case", ["unknown depth", "non-positive epochs", "indivisible batch",
                                  "missing data dir", "unwritable out", "data error",
                                  "build_resnet error"])
def test_user_errors_are_one_line_with_exit_status_2(error_results, case):
    result, expected = error_results[case]
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.args[result.args.index("--out") + 1]
    assert not os.path.exists(out), os.listdir(out)  # a refused run leaves no folder
    assert "Traceback" not in result.stderr + result.stdout
    lines = our_stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("train.py: error: ") and expected in lines[0], lines[0]


def test_devices_after_tensorflow_has_run_is_one_line(image_dir, tmp_path):
    # train() in a notebook that has used TensorFlow: the CPU's logical devices are fixed.
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has run (one logical CPU device in this process)
    out = tmp_path / "run"
    result = train_in_process("--data-dir", image_dir, *FAST, "--devices", 2, "--out", out)
    assert result.returncode == 2
    line = our_stderr_lines(result)[0]
    assert "this process has run TensorFlow already. Received: --devices 2; expected a " \
           "fresh process (train.py)" in line, line
    assert not out.exists()


def test_argparse_errors_exit_2():
    result = train_in_process("--optimizer", "lbfgs")
    assert result.returncode == 2 and "invalid choice" in result.stderr


# --- the recipe, in-process ----------------------------------------------------------------


def test_weight_decay_applies_to_kernels_only():
    import keras

    from resnet_tf import build_resnet
    from resnet_tf.training import build_optimizer

    # Variant v1 has convolution biases as well as BatchNorm parameters and a Dense bias.
    model = build_resnet(20, variant="v1", input_shape=(8, 8, 3), classes=3)
    lr, wd, momentum = 0.1, 5e-4, 0.9
    optimizer = build_optimizer("sgd", lr, wd, model, momentum)
    variables = model.trainable_variables
    before = [np.array(v.numpy()) for v in variables]
    # Zero gradients: whatever changes, changes by weight decay alone.
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    decayed = {v.path for v, old in zip(variables, before) if not np.array_equal(v.numpy(), old)}
    kernels = {v.path for v in variables if v.path.endswith("kernel")}
    assert decayed == kernels
    assert any(v.path.endswith("bias") for v in variables)
    assert any(v.path.endswith("gamma") for v in variables)
    kernel = next(i for i, v in enumerate(variables) if v.path.endswith("kernel"))
    # Decoupled decay equivalent to L2 `wd` under momentum: factor lr * wd / (1 - momentum).
    np.testing.assert_allclose(variables[kernel].numpy(),
                               before[kernel] * (1 - lr * wd / (1 - momentum)), rtol=1e-6)


def test_warmup_cosine_and_step_schedules():
    import keras

    from resnet_tf import WarmupSchedule

    cosine = WarmupSchedule(0.1, total_steps=110, warmup_steps=10)
    values = [float(cosine(s)) for s in (0, 9, 10, 60, 110)]
    np.testing.assert_allclose(values, [0.01, 0.1, 0.1, 0.05, 0.0], atol=1e-7)
    step = WarmupSchedule(0.1, total_steps=100, decay="step", milestones=[50, 75])
    np.testing.assert_allclose([float(step(s)) for s in (0, 49, 50, 75, 99)],
                               [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-6)
    restored = keras.optimizers.schedules.deserialize(
        json.loads(json.dumps(keras.optimizers.schedules.serialize(step))))
    assert isinstance(restored, WarmupSchedule)
    assert restored.get_config() == step.get_config()


def test_auto_precision_follows_cpu_flags(monkeypatch):
    from resnet_tf.training import distribute

    monkeypatch.setattr(distribute, "visible_gpus", lambda: [])
    for flags, expected in (({"amx_bf16"}, "mixed_bfloat16"), ({"avx512_bf16"}, "mixed_bfloat16"),
                            ({"avx2"}, "float32")):
        monkeypatch.setattr(distribute, "_cpu_flags", lambda flags=flags: flags)
        assert distribute.resolve_precision("auto")[0] == expected
    assert distribute.resolve_precision("mixed_float16")[0] == "mixed_float16"
    # TensorFlow's bfloat16 without oneDNN is ~85x slower: auto stays in float32 then.
    monkeypatch.setattr(distribute, "_cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    precision, reason = distribute.resolve_precision("auto")
    assert precision == "float32" and "oneDNN is off" in reason


# --- distribution --------------------------------------------------------------------------

# A small fixed problem: no augmentation, seeded order, float32, a gentle learning rate.
SEED = 3
# One validation image per class: 3 images, a first validation batch that does not split
# evenly over two replicas (Keras 3 cannot build from such a batch; see distribute.py).
EXACT = ["--deterministic", "--no-augment", "--precision", "float32", "--epochs", 2,
         "--batch-size", 16, "--lr", 0.02, "--warmup-epochs", 0, "--no-export",
         "--seed", SEED, "--val-split", 0.05]


def _final_state(out):
    import keras

    import resnet_tf.training  # noqa: F401  (registers the schedule)

    model = keras.models.load_model(os.path.join(out, "last.keras"), compile=False)
    return float(history(out)[-1]["loss"]), _flat(model.get_weights())


def _flat(weights):
    return np.concatenate([w.ravel() for w in weights])


def _assert_close_to_single_device(single_out, out):
    """The distributed run took (nearly) the same steps from the same initial weights."""
    import keras

    from resnet_tf import build_resnet

    keras.utils.set_random_seed(SEED)  # what train() does before building the model
    initial = _flat(build_resnet(20, input_shape=(12, 12, 3), classes=3).get_weights())
    ref_loss, ref = _final_state(single_out)
    loss, got = _final_state(out)
    ref_step, step = ref - initial, got - initial
    cosine = ref_step @ step / (np.linalg.norm(ref_step) * np.linalg.norm(step))
    # BatchNorm normalises each replica's half batch on its own, so the gradients are
    # close, not equal; summing instead of averaging them would double the step.
    assert cosine > 0.98
    assert 0.8 < np.linalg.norm(step) / np.linalg.norm(ref_step) < 1.25
    assert np.linalg.norm(got - ref) < 0.25 * np.linalg.norm(ref_step)
    # The training loss is measured with those per-replica statistics too: a loose check.
    assert loss == pytest.approx(ref_loss, rel=0.5)


@pytest.fixture(scope="module")
def single_and_mirrored(image_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    runs = {"single": [], "mirrored": ["--devices", 2]}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(train, "--data-dir", image_dir, *EXACT, *extra,
                                  "--out", base / k) for k, extra in runs.items()}
    for name, future in futures.items():
        result = future.result()
        assert result.returncode == 0, result.stdout + result.stderr
        runs[name] = (str(base / name), result)
    return runs


def test_mirrored_strategy_over_two_cpu_devices_matches_one_device(single_and_mirrored):
    single, mirrored = single_and_mirrored["single"], single_and_mirrored["mirrored"]
    assert re.search(r"strategy\s+MirroredStrategy, 2 replica\(s\)", mirrored[1].stdout)
    assert "16 global, 8 per replica" in mirrored[1].stdout
    assert re.search(r"\b3 val images", mirrored[1].stdout)
    _assert_close_to_single_device(single[0], mirrored[0])


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}', True),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}', False),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", '
     '"index": 0}}', False),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", '
     '"index": 0}}', True),
])
def test_only_the_chief_of_a_multi_worker_run_takes_the_run_lock(monkeypatch, tf_config, chief):
    # Every worker of a run shares its --out; the chief writes it and holds its lock, the
    # others write their own backups (they used to stop at "in use by process ...").
    from resnet_tf.training.distribute import tf_config_is_chief

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert tf_config_is_chief() is chief


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two trainer processes: about a minute alone, minutes on a busy machine
def test_multi_worker_strategy_on_two_processes_matches_one_device(
        single_and_mirrored, image_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    out = str(tmp_path / "multi")
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        processes.append(start("--data-dir", image_dir, *EXACT, "--out", out,
                               TF_CONFIG=tf_config))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=480)[0])
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)
    assert re.search(r"strategy\s+MultiWorkerMirroredStrategy, 2 replica\(s\)", outputs[0])
    assert "Run complete" in outputs[0] and "Run complete" not in outputs[1]
    _assert_close_to_single_device(single_and_mirrored["single"][0], out)


def test_devices_on_gpus_after_tensorflow_ran_names_the_first_n(monkeypatch):
    """In a notebook TensorFlow has set up every GPU before train() runs: hiding the others
    raises RuntimeError, so the strategy names the first N GPUs instead."""
    import tensorflow as tf

    from resnet_tf.errors import ConfigError
    from resnet_tf.training import distribute

    made = []
    monkeypatch.setattr(distribute, "visible_gpus", lambda: ["gpu0", "gpu1", "gpu2"])
    monkeypatch.delenv("TF_CONFIG", raising=False)

    def too_late(devices, kind):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "set_visible_devices", too_late)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda names: made.append(names) or "mirrored")
    monkeypatch.setattr(tf.distribute, "OneDeviceStrategy", lambda name: made.append(name) or "one")
    assert distribute.make_strategy(2) == "mirrored"
    assert distribute.make_strategy(1) == "one"
    assert made == [["/gpu:0", "/gpu:1"], "/gpu:0"]
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ConfigError, match="expected a fresh process") as error:
        distribute.make_strategy(2)
    assert "\n" not in str(error.value)
