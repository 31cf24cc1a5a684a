"""resnet_tf.training.cpu_tuning: CPU flags -> TensorFlow settings, and how they are applied.

Pure Python: flags are given, environments are plain dicts, nothing is restarted.
"""

import pytest

from resnet_tf.training import cpu_tuning
from resnet_tf.training.cpu_tuning import (
    CHOICES,
    MACHINE_KINDS,
    apply_env_before_tensorflow,
    choose_cpu_config,
    machine_kind,
    reexec_with_env,
)

AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}
ZEN4 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
SKYLAKE_X = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize("flags, kind", [
    (SAPPHIRE_RAPIDS, "AMX"),
    (ZEN4, "AVX512-BF16"),
    (SKYLAKE_X, "AVX-512"),
    (AVX2, "AVX2"),
    ({"sse4_2"}, "older x86 / other"),
    (set(), "older x86 / other"),
])
def test_machine_kind(flags, kind):
    assert machine_kind(flags) == kind


def test_every_kind_has_a_choice_with_its_source():
    for kind, _ in MACHINE_KINDS:
        row = CHOICES[kind]
        assert set(row) >= {"env", "inter_op", "intra_op", "steps_per_execution", "source"}
        assert row["source"]


def test_avx2_row_is_the_emulated_measurement():
    # Measured with an AVX2-only CPU emulated (ONEDNN_MAX_CPU_ISA=AVX2): oneDNN off was
    # about half as fast, so TensorFlow's defaults stay, unlike issue 15's single probes.
    config = choose_cpu_config(AVX2)
    assert config["kind"] == "AVX2"
    assert config["env"] == {}
    assert "emulated" in config["reason"] and "cpu_configs_" in config["reason"]


@pytest.fixture
def onednn_off_row(monkeypatch):
    """A table row with a variable TensorFlow reads when it starts (AVX2's, before it was
    measured), for the tests of how such variables are applied."""
    monkeypatch.setitem(CHOICES, "AVX2", dict(CHOICES["AVX2"],
                                              env={"TF_ENABLE_ONEDNN_OPTS": "0"}))


def test_avx512_bf16_row_is_the_measured_one():
    config = choose_cpu_config(ZEN4)
    assert config["kind"] == "AVX512-BF16"
    assert "TF_ENABLE_ONEDNN_OPTS" not in config["env"]  # oneDNN stays on there
    assert "measured" in config["reason"] and "cpu_configs_" in config["reason"]
    assert config["steps_per_execution"] >= 1


def test_config_is_a_copy_of_the_table(onednn_off_row):
    config = choose_cpu_config(AVX2)
    config["env"]["X"] = "1"
    assert "X" not in CHOICES["AVX2"]["env"]


def test_reads_this_machines_flags_by_default(monkeypatch):
    from resnet_tf.training import distribute

    monkeypatch.setattr(distribute, "_cpu_flags", lambda: AVX2)
    assert choose_cpu_config()["kind"] == "AVX2"


def test_overrides_win_over_the_table():
    config = choose_cpu_config(AVX2, overrides={
        "env": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "inter_op": 1, "steps_per_execution": 4})
    assert config["env"] == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert config["inter_op"] == 1 and config["steps_per_execution"] == 4
    assert config["intra_op"] is None
    assert "overridden" in config["reason"]


def test_override_none_drops_a_variable():
    config = choose_cpu_config(AVX2, overrides={"env": {"TF_ENABLE_ONEDNN_OPTS": None}})
    assert config["env"] == {}


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="Received: overrides with jit"):
        choose_cpu_config(AVX2, overrides={"jit": True})


def test_apply_sets_missing_variables_and_keeps_the_users(onednn_off_row):
    config = choose_cpu_config(AVX2)
    environ = {}
    assert apply_env_before_tensorflow(config, environ) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert apply_env_before_tensorflow(config, environ) == {}  # already set
    users = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert apply_env_before_tensorflow(config, users) == {}
    assert users == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def test_an_explicit_override_beats_the_users_environment():
    config = choose_cpu_config(ZEN4, overrides={"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}})
    environ = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert apply_env_before_tensorflow(config, environ) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


class _Exec:
    def __init__(self):
        self.calls = []

    def __call__(self, path, argv):
        self.calls.append((path, argv))


def test_reexec_only_sets_the_environment_before_tensorflow(onednn_off_row):
    execv, environ = _Exec(), {}
    changed = reexec_with_env(choose_cpu_config(AVX2), ["-m", "resnet_tf", "train"],
                              environ=environ, modules={}, execv=execv)
    assert changed == {"TF_ENABLE_ONEDNN_OPTS": "0"} and not execv.calls


def test_reexec_restarts_once_when_tensorflow_is_already_loaded(onednn_off_row):
    execv, environ = _Exec(), {}
    reexec_with_env(choose_cpu_config(AVX2), ["-m", "resnet_tf", "train", "--epochs", "1"],
                    environ=environ, modules={"tensorflow": object()}, execv=execv)
    assert len(execv.calls) == 1
    path, argv = execv.calls[0]
    assert argv[1:] == ["-m", "resnet_tf", "train", "--epochs", "1"] and argv[0] == path
    assert environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert environ[cpu_tuning._RESTARTED] == "1"
    # The restarted command finds the variable set: nothing to change, no second restart.
    reexec_with_env(choose_cpu_config(AVX2), ["x"], environ=environ,
                    modules={"tensorflow": object()}, execv=execv)
    assert len(execv.calls) == 1


def test_reexec_does_nothing_when_nothing_changes():
    execv = _Exec()
    changed = reexec_with_env(choose_cpu_config(SKYLAKE_X), ["x"], environ={},
                              modules={"tensorflow": object()}, execv=execv)
    assert changed == {} and not execv.calls


# --- the trainer's flags ----------------------------------------------------------------


def test_run_flags_override_single_settings():
    config = cpu_tuning.run_cpu_config(cpu_flags=ZEN4, onednn="off", intra_op=1,
                                       steps_per_execution=3)
    assert config["kind"] == "AVX512-BF16"
    assert config["env"] == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert (config["intra_op"], config["inter_op"], config["steps_per_execution"]) == (1, None, 3)
    assert cpu_tuning.run_cpu_config(cpu_flags=AVX2, onednn="on")["env"] == {
        "TF_ENABLE_ONEDNN_OPTS": "1"}


def test_tf_defaults_ignores_the_table():
    config = cpu_tuning.run_cpu_config("tf-defaults", cpu_flags=AVX2)
    assert config["env"] == {} and config["steps_per_execution"] == 1
    assert "--cpu-config tf-defaults" in config["reason"]


def test_description_says_what_is_in_effect_and_what_is_not(onednn_off_row):
    config = choose_cpu_config(AVX2)
    applied = cpu_tuning.describe_cpu_config(config, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert applied.startswith("oneDNN off, threads inter-op TensorFlow default")
    assert "CPU kind AVX2" in applied and "not applied" not in applied
    missing = cpu_tuning.describe_cpu_config(config, {})
    assert "not applied: TF_ENABLE_ONEDNN_OPTS=0 (set it before TensorFlow starts" in missing
    # The user's own value wins over the table and is what the line reports.
    assert cpu_tuning.describe_cpu_config(config, {"TF_ENABLE_ONEDNN_OPTS": "1"}).startswith(
        "oneDNN on")


@pytest.mark.parametrize("cap, kind", [
    (None, "AVX512-BF16"), ("AVX2", "AVX2"), ("avx2", "AVX2"), ("AVX512_CORE_VNNI", "AVX-512"),
    ("AVX512_CORE_BF16", "AVX512-BF16"), ("ALL", "AVX512-BF16"), ("nonsense", "AVX512-BF16"),
])
def test_onednn_isa_cap_makes_the_machine_kind_of_the_capped_cpu(cap, kind):
    from resnet_tf.training.distribute import cap_cpu_flags, onednn_isa_cap

    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    flags = cap_cpu_flags(ZEN4 | {"avx512vl", "avx512cd"}, onednn_isa_cap(environ))
    assert machine_kind(flags) == kind
    assert "fma" in flags and "avx2" in flags


def test_auto_precision_follows_the_isa_cap(monkeypatch):
    from resnet_tf.training import distribute

    monkeypatch.setattr(distribute, "visible_gpus", lambda: [])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    real = distribute.cap_cpu_flags
    monkeypatch.setattr(distribute, "cap_cpu_flags", lambda flags, cap: real(ZEN4, cap))
    assert distribute.resolve_precision("auto")[0] == "float32"
    assert choose_cpu_config()["kind"] == "AVX2"
