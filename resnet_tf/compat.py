"""How this version reads the run folders (config.json) of earlier versions.

Every rule here exists for runs made before some commit; each names that commit
(every one of them was version 0.2.0, so the commit is the only date a rule has).
A rule can go once no run folder made before its commit needs to resume or compare.
"""

# config.json values that earlier versions spelled otherwise, as this version spells
# them. f0d5071 (--augment POLICY): `augment` was a bool before.
LEGACY_VALUES = {"augment": {True: "basic", False: "none"}}

# Recipe values that changed after runs were made with the old ones: the value a run
# from before the change used, from its stored config (which lacks the field).
# A run resumed without the flag keeps it, and a flag given now is compared with it.
CHANGED_DEFAULTS = {
    # efe9b3f: the cifar recipe gained weight EMA 0.999 and flip TTA.
    "ema": lambda stored: 0.0,
    "tta": lambda stored: "none",
    # 4ba2d1f (--split-seed): before it, --seed drew the validation hold-out too.
    "split_seed": lambda stored: hold_out_seed(stored),
    # 2bd3973 (--crop-padding): the cifar preset padded 4 pixels before its random crop.
    "crop_padding": lambda stored: 4,
}


def spelled_now(value, key):
    """`value` of config.json's `key` as this version spells it (`LEGACY_VALUES`)."""
    if isinstance(value, bool):  # not 1 or 0, which equal True and False as keys
        return LEGACY_VALUES.get(key, {}).get(value, value)
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
    return {**{key: before(stored) for key, before in CHANGED_DEFAULTS.items()}, **stored}


def kept_values(given, stored):
    """The stored values of the `CHANGED_DEFAULTS` fields that `given` (the user's values,
    None where unset) leaves unset, so that rerunning a run's command resumes it after a
    recipe default changed. `stored` is `stored_config(...)`."""
    return {key: stored[key] for key in CHANGED_DEFAULTS if given.get(key) is None}
