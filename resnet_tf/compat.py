"""How this version reads the run folders (config.json) of earlier versions.

Every rule here exists for runs made before some commit and names it (`since`; every
one of them was version 0.2.0, so the commit is the only date a rule has). A rule can
go once no run folder made before its commit needs to resume or compare.
"""

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class Respelled:
    """config.json values that runs made before commit `since` spelled otherwise."""

    since: str
    change: str
    values: dict  # old spelling -> this version's


@dataclasses.dataclass(frozen=True)
class ChangedDefault:
    """A field added (or a recipe default changed) at commit `since`: `before(stored)` is
    the value a run made earlier used, from its stored config, which lacks the field."""

    since: str
    change: str
    before: typing.Callable[[dict], object]


LEGACY_VALUES = {
    "augment": Respelled("f0d5071", "--augment took a policy name instead of a bool",
                         {True: "basic", False: "none"}),
}

# A run resumed without the flag keeps the value it was made with; a flag given now is
# compared with that value.
CHANGED_DEFAULTS = {
    "ema": ChangedDefault("efe9b3f", "the cifar recipe gained weight EMA 0.999",
                          lambda stored: 0.0),
    "tta": ChangedDefault("efe9b3f", "the cifar recipe gained flip TTA", lambda stored: "none"),
    "split_seed": ChangedDefault("4ba2d1f", "--split-seed; --seed drew the hold-out before",
                                 lambda stored: hold_out_seed(stored)),
    "crop_padding": ChangedDefault("2bd3973", "--crop-padding; the cifar preset padded 4",
                                   lambda stored: 4),
    # 1090412: torchvision-v2 and rsb-a3 gained their published training
    # sizes and torchvision-v2 TrivialAugmentWide; runs calibrate after training.
    "train_size": ChangedDefault("1090412", "--train-size; recipes trained at --image-size",
                                 lambda stored: None),
    "augment": ChangedDefault("1090412", "torchvision-v2 trained with RandAugment",
                              lambda stored: stored.get("augment", "basic")),
    "calibrate": ChangedDefault("1090412", "--calibrate; runs did not calibrate",
                                lambda stored: False),
    # None: the preset's transform at the run's image size (`sources.recorded_transform`).
    "distill": ChangedDefault("043ab8e", "--distill; runs did not distil", lambda stored: 0.0),
    "eval_transform": ChangedDefault("3b56fa6", "runs recorded their preset, not the "
                                     "evaluation transform", lambda stored: None),
}


def spelled_now(value, key):
    """`value` of config.json's `key` as this version spells it (`LEGACY_VALUES`)."""
    if isinstance(value, bool):  # not 1 or 0, which equal True and False as keys
        rule = LEGACY_VALUES.get(key)
        return value if rule is None else rule.values.get(value, value)
    return value


def hold_out_seed(config):
    """The seed that drew a run's validation hold-out, from its resolved config (a dict).

    4ba2d1f: before `--split-seed` existed, `--seed` drew the hold-out as well.
    """
    return config.get("split_seed", config.get("seed", 0))


def stored_config(stored):
    """A run's stored "config" (a dict from config.json) as this version spells it, with
    the value the run had for each `CHANGED_DEFAULTS` field added after it was made."""
    stored = {key: spelled_now(value, key) for key, value in stored.items()}
    return {**{key: rule.before(stored) for key, rule in CHANGED_DEFAULTS.items()}, **stored}


def kept_values(given, stored):
    """The stored values of the `CHANGED_DEFAULTS` fields that `given` (the user's values,
    None where unset) leaves unset, so that rerunning a run's command resumes it after a
    recipe default changed. `stored` is `stored_config(...)`."""
    return {key: stored[key] for key in CHANGED_DEFAULTS if given.get(key) is None}
