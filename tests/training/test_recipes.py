"""Named recipes, the field table behind every flag, the resolved configuration, and
their errors.

These run `train.py --print-recipe` in-process: no data and no training.
"""

import dataclasses
import math

import pytest

from resnet_tf.cli import train as train_cli
from resnet_tf.data import DataFacts
from resnet_tf.training.config import ResolvedConfig, resolve_config
from resnet_tf.training.recipes import FIELDS, RunOptions, TrainConfig


def _printed(capsys, *argv):
    assert train_cli.main([*argv, "--print-recipe"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return dict(line.split(": ", 1) for line in lines[1:]), lines[0]


@pytest.mark.parametrize("name, expected", [
    ("cifar", {"depth": "20", "epochs": "40", "optimizer": "sgd", "lr": "0.4", "loss": "softmax",
               "augment": "basic"}),
    ("cifar-long", {"depth": "18", "epochs": "200", "lr": "0.2", "stem": "cifar",
                    "label_smoothing": "0.0"}),
    ("torchvision-v2", {"depth": "50", "epochs": "600", "lr": "0.125", "wd": "2e-05",
                        "mixup": "0.2", "cutmix": "1.0", "random_erasing": "0.1",
                        "ema": "0.99997", "label_smoothing": "0.1", "augment": "trivialaugment",
                        "train_size": "176"}),
    ("rsb-a3", {"depth": "50", "epochs": "100", "optimizer": "lamb", "lr": "0.001",
                "wd": "0.02", "loss": "bce", "mixup": "0.1", "cutmix": "1.0",
                "label_smoothing": "0.0", "warmup_epochs": "5"}),
])
def test_print_recipe_shows_the_resolved_values(capsys, name, expected):
    values, title = _printed(capsys, "--recipe", name)
    assert title.startswith(f"recipe: {name} (")
    assert {k: values[k] for k in expected} == expected


def test_explicit_flags_override_the_recipe(capsys):
    values, _ = _printed(capsys, "--recipe", "rsb-a3", "--optimizer", "sgd", "--mixup", "0",
                         "--loss", "softmax", "--epochs", "10", "--groups", "32",
                         "--width-per-group", "4", "--dropout", "0.2", "--tta", "flip")
    assert values["optimizer"] == "sgd" and values["lr"] == "0.1"  # the recipe's SGD values
    assert values["mixup"] == "0.0" and values["cutmix"] == "1.0"
    assert values["loss"] == "softmax" and values["epochs"] == "10"
    assert values["warmup_epochs"] == "2.5"  # a quarter of the run at most
    assert (values["groups"], values["width_per_group"], values["dropout"]) == ("32", "4", "0.2")
    assert values["tta"] == "flip"


def test_short_runs_keep_a_scaled_warmup():
    one = resolve_config(TrainConfig(epochs=1), DataFacts([], 32))
    assert one.warmup_epochs == 0.25
    assert resolve_config(TrainConfig(), DataFacts([], 32)).warmup_epochs == 1
    # The form of earlier versions: the preset and the image size.
    assert resolve_config(TrainConfig(epochs=1), "cifar", 32)["warmup_epochs"] == 0.25


def test_the_data_decides_the_recipe_and_its_augmentation():
    small = resolve_config(TrainConfig(), DataFacts(["a", "b"], 32))
    assert (small.recipe, small.preset, small.image_size, small.crop_padding) == (
        "cifar", "cifar", 32, 2)
    large = resolve_config(TrainConfig(), DataFacts(["a", "b"], 160))
    assert (large.recipe, large.preset, large.image_size) == ("imagenet", "imagenet", 160)
    assert resolve_config(TrainConfig(image_size=96), DataFacts([], 32)).recipe == "imagenet"
    assert resolve_config(TrainConfig(recipe="rsb-a3"), DataFacts([], 32)).mixup == 0.1
    assert resolve_config(TrainConfig(crop_padding=0), DataFacts([], 32)).crop_padding == 0
    assert resolve_config(TrainConfig(augment=False), DataFacts([], 32)).augment == "none"


def test_the_resolved_config_is_frozen_and_keeps_config_json_keys():
    resolved = resolve_config(TrainConfig(milestones=(3, 1)), DataFacts([], 32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.lr = 1.0
    stored = resolved.to_dict()
    assert list(stored) == [f.name for f in dataclasses.fields(TrainConfig)] + ["preset", "eval_transform"]
    assert stored["milestones"] == [1, 3] and stored["dataset"] == "cifar10"
    assert ResolvedConfig(**stored).to_dict() == stored


@pytest.mark.parametrize("argv, message", [
    (["--mixup", "-1"], "--mixup is out of range. Received: --mixup -1.0; expected a number "
                        ">= 0 and <= 100."),
    (["--cutmix", "1000"], "--cutmix is too large. Received: --cutmix 1000.0"),
    (["--ema", "1.5"], "--ema is out of range. Received: --ema 1.5; expected a number >= 0 and "
                       "< 1 (a decay per step such as 0.999, or 0 for none)."),
    (["--ema", "-0.1"], "--ema is out of range"),
    (["--dropout", "1"], "--dropout is out of range. Received: --dropout 1.0; expected a number "
                         ">= 0 and < 1."),
    (["--grad-clip", "0"], "--grad-clip is out of range. Received: --grad-clip 0.0; expected a "
                           "number > 0 and <= 1e+06."),
    (["--stochastic-depth", "2"], "--stochastic-depth is out of range"),
    (["--random-erasing", "1.5"], "--random-erasing is out of range. Received: "
                                  "--random-erasing 1.5; expected a number >= 0 and <= 1 (a "
                                  "probability)."),
    (["--depth", "19"], "--depth must be one of 18, 34, 50, 101, 152, 200, 20, 32, 44, 56, "
                        "110, 164, 1001. Received: --depth 19; expected one of them."),
    (["--intra-op-threads", "0"], "--intra-op-threads is out of range. Received: "
                                  "--intra-op-threads 0; expected an integer from 1 to 4096."),
    (["--steps-per-execution", "-2"], "--steps-per-execution is out of range"),
    (["--crop-padding", "-1"], "--crop-padding is out of range. Received: --crop-padding -1; "
                               "expected an integer from 0 to 4096 (pixels)."),
    (["--width-multiplier", "1e30"], "--width-multiplier is too large. Received: "
                                     "--width-multiplier 1e+30; expected a number > 0 and <= 64."),
    (["--milestones", "3,99999999999"], "--milestones is too large. Received: --milestones "
                                        "99999999999; expected an integer from 0 to 1000000."),
    (["--lr", "nan"], "--lr must be a finite number. Received: --lr nan"),
    (["--lr", "1e31"], "--lr is too large. Received: --lr 1e+31; expected a number > 0 and "
                       "<= 1e+30."),
])
def test_out_of_range_values_are_one_line_errors(capsys, argv, message):
    assert train_cli.main([*argv, "--print-recipe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def _numeric_fields():
    return [f for f in FIELDS if f.flag and f.type in (int, float, tuple)]


ABSURD = ["1e39", "99999999999999999999", "nan", "inf", "-1", "-99999999999999999999"]


def _within(field, text):
    try:
        value = (float if field.type is float else int)(text)
    except ValueError:
        return False
    if field.choices:
        return value in field.choices
    return math.isfinite(value) and field.low <= value <= field.high


@pytest.mark.parametrize("field", _numeric_fields(), ids=lambda f: f.option)
def test_every_numeric_flag_refuses_absurd_values(capsys, tmp_path, monkeypatch, field):
    """Each value is refused by argparse (not a number of the flag's type) or by
    check_config, before anything is written: exit status 2, one error line, no traceback."""
    from resnet_tf.training import cpu_tuning, trainer

    def accepted(config, options):
        raise AssertionError(f"{field.option} passed check_config")

    monkeypatch.setattr(trainer, "resolve_run", accepted)
    monkeypatch.setattr(cpu_tuning, "reexec_with_env", lambda config: None)
    monkeypatch.chdir(tmp_path)
    bound = max(field.choices) if field.choices else field.high
    assert bound is not None, f"{field.option} has no upper bound"
    just_above = bound * 2 if field.type is float else bound + 1
    checked = 0
    for value in [*ABSURD, str(just_above)]:
        if _within(field, value):  # 1e20 is a learning rate --lr allows: it would train
            continue
        try:
            status = train_cli.main([field.option, value, "--out", str(tmp_path / "run")])
        except SystemExit as exit_info:  # argparse: not a number of this type
            status = exit_info.code
        err = capsys.readouterr().err
        assert status == 2, (value, err)
        lines = err.strip().splitlines()
        assert lines[-1].startswith("resnet-train: error: ") and "Traceback" not in err, err
        if "error: argument " not in lines[-1]:  # check_config's own: one line, no usage
            assert len(lines) == 1 and field.option in lines[0], err
            checked += 1
    assert checked >= 4  # too large, just above the bound, negative: not argparse's errors
    assert list(tmp_path.iterdir()) == []


def test_every_flag_states_its_default_and_fields_make_the_flags():
    parser = train_cli.train_parser()
    helps = {a.option_strings[-1]: a.help for a in parser._actions if a.option_strings}
    del helps["--help"]
    assert all("(default: " in text for text in helps.values()), helps
    flags = {f.option for f in FIELDS if f.flag and f.type is not bool or f.default is False}
    assert flags <= set(helps)
    assert "--no-export" in helps and "--no-augment" in helps
    assert {f.name for f in FIELDS if not f.options} == {
        f.name for f in dataclasses.fields(TrainConfig)}
    assert {f.name for f in FIELDS if f.options} == {f.name for f in dataclasses.fields(RunOptions)}
    assert helps["--batch-size"].endswith("(default: 128)")


def test_print_recipe_prints_what_the_run_decides(capsys):
    values, _ = _printed(capsys)
    assert "None" not in values.values()
    assert (values["variant"], values["shortcut"], values["groups"]) == ("v1.5", "A", "1")
    assert (values["image_size"], values["split_seed"], values["freeze_epochs"]) == ("32", "0", "0")
    values, _ = _printed(capsys, "--depth", "164")
    assert (values["variant"], values["stem"]) == ("v2", "cifar")
    values, _ = _printed(capsys, "--recipe", "imagenet")
    assert (values["shortcut"], values["stem"], values["image_size"]) == ("B", "imagenet", "224")


def test_print_recipe_reads_the_data_folder(capsys, tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (96, 96)).save(tmp_path / name / "0.png")
    values, title = _printed(capsys, "--data-dir", str(tmp_path))
    assert title.startswith("recipe: imagenet (")
    assert (values["image_size"], values["preset"]) == ("96", "imagenet")


@pytest.mark.parametrize("argv", [["--recipe", "nope"], ["--augment", "autoaugment"],
                                  ["--loss", "hinge"], ["--onednn", "maybe"],
                                  ["--cpu-config", "fastest"], ["--epochs", "1e3"]])
def test_unknown_choices_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("resnet-train: error: ")


def test_python_callers_get_the_same_checks():
    from resnet_tf.errors import ConfigError
    from resnet_tf.training.recipes import check_config

    with pytest.raises(ConfigError, match="--epochs must be an integer. Received: --epochs '10'"):
        check_config(TrainConfig(epochs="10"))
    with pytest.raises(ConfigError, match="--inter-op-threads is too large"):
        check_config(TrainConfig(), RunOptions(inter_op_threads=10**20))
    with pytest.raises(ConfigError, match="--seed is out of range"):
        check_config(TrainConfig(seed=2**70))
    check_config(TrainConfig(augment=True, seed=2**32 - 1, lr=math.pi))


def test_cifar_recipe_keeps_the_measured_ema_and_flip_shift_tta():
    resolved = resolve_config(TrainConfig(), DataFacts([], 32))
    assert (resolved.ema, resolved.tta) == (0.999, "flip-shift")
    # The EMA does not span --freeze-epochs' two phases: the recipe's is dropped there.
    assert resolve_config(TrainConfig(freeze_epochs=2), DataFacts([], 32)).ema == 0.0
    assert resolve_config(TrainConfig(), DataFacts([], 224)).ema == 0.0


def test_the_hold_out_does_not_move_with_the_seed():
    # Runs with other --seed values are measured on the same validation images.
    assert resolve_config(TrainConfig(seed=3), DataFacts([], 32)).split_seed == 0
    assert resolve_config(TrainConfig(seed=3, split_seed=4), DataFacts([], 32)).split_seed == 4
