"""One test per rule of `resnet_tf.compat`: how run folders of earlier versions read."""

import json

import pytest

from resnet_tf import compat
from resnet_tf.data import DataFacts
from resnet_tf.runs import RunDirectory
from resnet_tf.training.config import resolve_config
from resnet_tf.training.recipes import TrainConfig


@pytest.mark.parametrize("stored, expected", [(True, "basic"), (False, "none")])
def test_boolean_augment_of_runs_before_policies(tmp_path, stored, expected):
    """f0d5071: `augment` was a bool; such a run compares equal to its policy now."""
    assert compat.stored_config({"augment": stored})["augment"] == expected
    run = RunDirectory(tmp_path)
    resolved = resolve_config(TrainConfig(augment=expected), DataFacts([], 32)).to_dict()
    assert run.check(resolved, {"config": {"augment": stored}}) is False
    with pytest.raises(ValueError, match="augment: 'basic' -> 'none'"):
        run.check({**resolved, "augment": "none"}, {"config": {"augment": True}})
    # Python callers of those versions: TrainConfig(augment=True).
    assert resolve_config(TrainConfig(augment=stored), DataFacts([], 32)).augment == expected


@pytest.mark.parametrize("field, before", [
    ("ema", 0.0),  # efe9b3f: the cifar recipe's EMA 0.999
    ("tta", "none"),  # efe9b3f: the cifar recipe's flip TTA
    ("crop_padding", 4),  # 2bd3973: --crop-padding, 2 in the cifar recipe
    ("train_size", None),  # 1090412: --train-size, 176/160 in torchvision-v2/rsb-a3
    ("calibrate", False),  # 1090412: --calibrate, on by default
    ("eval_transform", None),  # 3b56fa6: the run records its evaluation transform
    ("distill", 0.0),  # 043ab8e: --distill
])
def test_runs_before_a_recipe_change_keep_their_value(field, before):
    stored = compat.stored_config({"epochs": 40})  # made before the field existed
    assert stored[field] == before
    assert compat.kept_values({}, stored)[field] == before
    # The value the run did record wins over the rule...
    assert compat.stored_config({field: "x"})[field] == "x"
    # ...and a flag given now is the user's choice (a difference the run folder refuses).
    assert field not in compat.kept_values({field: 0.5}, stored)


def test_runs_before_split_seed_keep_the_hold_out_their_seed_drew():
    """4ba2d1f: before --split-seed, --seed drew the validation hold-out."""
    assert compat.hold_out_seed({"seed": 3}) == 3
    assert compat.hold_out_seed({"seed": 3, "split_seed": 0}) == 0
    assert compat.hold_out_seed({}) == 0
    assert compat.kept_values({"seed": 3}, compat.stored_config({"seed": 3}))["split_seed"] == 3
    assert compat.kept_values({"split_seed": 0}, compat.stored_config({"seed": 3})) == {
        "ema": 0.0, "tta": "none", "crop_padding": 4, "train_size": None, "augment": "basic",
        "calibrate": False, "eval_transform": None, "distill": 0.0}


def test_a_torchvision_v2_run_from_before_trivialaugment_keeps_randaugment():
    """1090412: the torchvision-v2 recipe trained with RandAugment before."""
    stored = compat.stored_config({"recipe": "torchvision-v2", "augment": "randaugment"})
    assert compat.kept_values({}, stored)["augment"] == "randaugment"
    assert "augment" not in compat.kept_values({"augment": "trivialaugment"}, stored)


def test_every_rule_is_tested_and_names_its_commit():
    import os
    import subprocess

    assert set(compat.CHANGED_DEFAULTS) == {"ema", "tta", "crop_padding", "split_seed",
                                            "train_size", "augment", "calibrate",
                                            "eval_transform", "distill"}
    assert set(compat.LEGACY_VALUES) == {"augment"}
    rules = [*compat.CHANGED_DEFAULTS.values(), *compat.LEGACY_VALUES.values()]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert all(len(rule.since) >= 7 and rule.change for rule in rules)
    shallow = subprocess.run(["git", "-C", root, "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True)
    if shallow.returncode or shallow.stdout.strip() != "false":
        pytest.skip("no full git history here")
    for rule in rules:
        found = subprocess.run(["git", "-C", root, "cat-file", "-e", f"{rule.since}^{{commit}}"])
        assert found.returncode == 0, rule


def test_stored_config_reads_a_json_round_trip():
    stored = json.loads(json.dumps({"augment": True, "seed": 2, "milestones": [1, 2]}))
    assert compat.stored_config(stored) == {"augment": "basic", "seed": 2, "milestones": [1, 2],
                                            "ema": 0.0, "tta": "none", "split_seed": 2,
                                            "crop_padding": 4, "train_size": None,
                                            "calibrate": False, "eval_transform": None, "distill": 0.0}
