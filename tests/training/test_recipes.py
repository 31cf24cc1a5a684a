"""Issue 13: named recipes, every flag in the resolved configuration, and their errors.

These run `train.py --print-recipe` in-process: no data and no training.
"""

import pytest

from resnet_tf.cli import train as train_cli
from resnet_tf.training.recipes import (
    RECIPES,
    TrainConfig,
    augmentation,
    keep_run_values,
    resolve_config,
)


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
                        "ema": "0.99997", "label_smoothing": "0.1", "augment": "randaugment"}),
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
    one = resolve_config(TrainConfig(epochs=1), "cifar", 32)
    assert one["warmup_epochs"] == 0.25
    assert resolve_config(TrainConfig(), "cifar", 32)["warmup_epochs"] == 1


def test_default_recipes_agree_on_augmentation():
    # The data is loaded before the recipe is known: both defaults must augment alike
    # (the crop padding only applies to small images, which take the cifar recipe).
    keys = ("augment", "mixup", "cutmix", "random_erasing")
    assert augmentation(TrainConfig())["crop_padding"] == RECIPES["cifar"]["crop_padding"] == 2
    assert augmentation(TrainConfig(crop_padding=0))["crop_padding"] == 0
    assert {k: RECIPES["cifar"][k] for k in keys} == {k: RECIPES["imagenet"][k] for k in keys}
    assert augmentation(TrainConfig(augment=False))["augment"] == "none"
    assert augmentation(TrainConfig(recipe="rsb-a3"))["mixup"] == 0.1


@pytest.mark.parametrize("argv, message", [
    (["--mixup", "-1"], "--mixup must be in [0, inf). Received: --mixup -1.0"),
    (["--cutmix", "-0.5"], "--cutmix must be in [0, inf)"),
    (["--ema", "1.5"], "--ema is a decay per step. Received: --ema 1.5"),
    (["--ema", "-0.1"], "--ema is a decay per step"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--grad-clip", "0"], "--grad-clip must be positive"),
    (["--stochastic-depth", "2"], "--stochastic-depth must be in [0, 1)"),
    (["--depth", "19"], "Unknown depth. Received: depth=19"),
    (["--intra-op-threads", "0"], "--intra-op-threads must be a positive integer. Received: "
                                  "--intra-op-threads 0; expected 1 or more."),
    (["--steps-per-execution", "-2"], "--steps-per-execution must be a positive integer"),
    (["--crop-padding", "-1"], "--crop-padding is a number of pixels. Received: --crop-padding -1"),
])
def test_out_of_range_values_are_one_line_errors(capsys, argv, message):
    assert train_cli.main([*argv, "--print-recipe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("argv", [["--recipe", "nope"], ["--augment", "autoaugment"],
                                  ["--random-erasing", "1.5"], ["--loss", "hinge"],
                                  ["--onednn", "maybe"], ["--cpu-config", "fastest"]])
def test_unknown_choices_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("resnet-train: error: ")


def test_cifar_recipe_keeps_the_measured_ema_and_flip_shift_tta():
    resolved = resolve_config(TrainConfig(), "cifar", 32)
    assert (resolved["ema"], resolved["tta"]) == (0.999, "flip-shift")
    # The EMA does not span --freeze-epochs' two phases: the recipe's is dropped there.
    assert resolve_config(TrainConfig(freeze_epochs=2), "cifar", 32)["ema"] == 0.0
    assert resolve_config(TrainConfig(), "imagenet", 224)["ema"] == 0.0


def test_resumed_runs_keep_the_values_of_defaults_that_changed():
    config = TrainConfig()
    resolved = resolve_config(config, "cifar", 32)
    assert keep_run_values(config, resolved, None) == resolved
    before_toolbox = {"config": {"epochs": 40}}  # no ema or tta: the old defaults
    kept = keep_run_values(config, resolved, before_toolbox)
    assert (kept["ema"], kept["tta"], kept["crop_padding"]) == (0.0, "none", 4)
    stored = {"config": {"ema": 0.0, "tta": "none"}}
    assert keep_run_values(config, resolved, stored)["ema"] == 0.0
    # A run made while the cifar recipe's TTA was "flip" keeps it.
    assert keep_run_values(config, resolved, {"config": {"tta": "flip"}})["tta"] == "flip"
    # A flag given now is the user's choice (and a difference the run folder refuses).
    flagged = TrainConfig(ema=0.9)
    assert keep_run_values(flagged, resolve_config(flagged, "cifar", 32), stored)["ema"] == 0.9


def test_the_hold_out_does_not_move_with_the_seed():
    # Runs with other --seed values are measured on the same validation images...
    assert resolve_config(TrainConfig(seed=3), "cifar", 32)["split_seed"] == 0
    assert resolve_config(TrainConfig(seed=3, split_seed=4), "cifar", 32)["split_seed"] == 4
    # ...but a run from before --split-seed, whose --seed drew its hold-out, keeps it,
    config = TrainConfig(seed=3)
    resolved = resolve_config(config, "cifar", 32)
    assert keep_run_values(config, resolved, {"config": {"seed": 3}})["split_seed"] == 3
    assert keep_run_values(config, resolved, {"config": {"seed": 3, "split_seed": 0}})[
        "split_seed"] == 0
