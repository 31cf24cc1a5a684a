"""A run's configuration, resolved once: `resolve_config` turns a `TrainConfig`, its
recipe, its weights and the facts of its data into a frozen `ResolvedConfig`, which the
trainer, the run folder's config.json and `--print-recipe` read from then on."""

import dataclasses
import inspect
import os

from resnet_tf.compat import spelled_now
from resnet_tf.data import DataFacts, probe_data
from resnet_tf.data.preprocessing import default_preset
from resnet_tf.errors import ConfigError
from resnet_tf.models import resnet
from resnet_tf.models.spec import ResNetSpec, default_stem
from resnet_tf.models.transform import EvalTransform
from resnet_tf.training.finetune import resolve as resolve_weights_source
from resnet_tf.training.finetune import weights_defaults
from resnet_tf.training.recipes import (
    CONFIG_FIELDS,
    DEFAULT_VAL_SPLIT,
    MAX_WARMUP_SHARE,
    RECIPES,
    default_recipe,
)


class _Resolved:
    """What `ResolvedConfig` adds to its fields."""

    def to_dict(self):
        """config.json's "config": every field, lists for tuples."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    def __getitem__(self, key):
        # `resolved["lr"]`, as callers of the dict that `resolve_config` used to return read it.
        return getattr(self, key)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# config.json's "config": the TrainConfig fields, resolved, and the data's preset.
ResolvedConfig = dataclasses.make_dataclass(
    "ResolvedConfig",
    [(f.name, f.annotation()) for f in CONFIG_FIELDS] + [("preset", str), ("eval_transform", dict)],
    bases=(_Resolved,), frozen=True)
ResolvedConfig.__module__ = __name__
ResolvedConfig.__doc__ = """A run's configuration with every default filled in (frozen).

    The fields of `TrainConfig` plus `preset` and `eval_transform` (the `EvalTransform`
    config of validation and of the run's models: the preset's, or with `--weights`
    on images of more than 64 px the weights' own); architecture fields left None take
    `build_resnet`'s defaults (`architecture` names them). `to_dict()` is what config.json
    stores, so runs compare and resume across versions.
    """


def resolve_config(config, facts, image_size=None):
    """The `ResolvedConfig` of `config` for data with `facts`.

    Args:
        config: `TrainConfig`.
        facts: `resnet_tf.data.DataFacts` (`probe_data`) of the run's data, or, as
            earlier versions took it, the data's preset (then `image_size` is the size).

    Order: `--weights` fill the architecture and image size that flags leave unset, the
    image size decides the preset, the preset the recipe, the recipe every other default.
    """
    if config.weights:
        defaults = weights_defaults(config.weights, config.depth)
        config = dataclasses.replace(config, **{k: v for k, v in defaults.items()
                                                if getattr(config, k, None) is None})
    if isinstance(facts, DataFacts):
        image_size = config.image_size or facts.image_size
        preset = default_preset(image_size)
    else:
        preset = facts
    name = config.recipe or default_recipe(preset)
    recipe = RECIPES[name]
    optimizer = config.optimizer or recipe["optimizer"]
    lr, wd = recipe["lr_wd"][optimizer]
    epochs = config.epochs or recipe["epochs"]
    warmup = config.warmup_epochs
    if warmup is None:
        # Scaled to short runs rather than dropped: `--epochs 1` keeps a quarter-epoch warmup.
        warmup = min(recipe["warmup_epochs"], MAX_WARMUP_SHARE * epochs)
    elif warmup >= epochs:
        raise ConfigError(f"--warmup-epochs ({warmup:g}) must be less than --epochs ({epochs}).")
    milestones = config.milestones
    if milestones is None:
        milestones = [round(f * epochs) for f in recipe["milestones"]]

    given = dataclasses.asdict(config)
    # A recipe value fills each field the flags leave unset; the rules below refine some.
    picked = {key: recipe[key] if given[key] is None else given[key]
              for key in recipe if key in given}
    resolved = dict(
        {**given, **picked},
        recipe=name,
        stem=config.stem or recipe["stem"] or default_stem(
            config.depth or recipe["depth"], config.variant, small_images=preset == "cifar"),
        # The dataset name is ignored when images come from a folder.
        dataset=None if config.data_dir else config.dataset,
        data_dir=config.data_dir and os.path.abspath(config.data_dir),
        val_dir=config.val_dir and os.path.abspath(config.val_dir),
        val_split=DEFAULT_VAL_SPLIT if config.val_split is None else config.val_split,
        # The hold-out does not move with --seed: runs with other seeds see the same images.
        split_seed=0 if config.split_seed is None else config.split_seed,
        image_size=image_size,
        preset=preset,
        eval_transform=_eval_transform(config.weights, config.depth, preset,
                                       image_size).get_config(),
        epochs=epochs,
        optimizer=optimizer,
        lr=lr if config.lr is None else config.lr,
        wd=wd if config.wd is None else config.wd,
        augment=spelled_now(config.augment, "augment") or recipe["augment"],
        # The EMA does not span the two phases of --freeze-epochs (check_config refuses
        # the flags together); a recipe's EMA is dropped there.
        ema=config.ema or 0.0 if config.freeze_epochs else picked["ema"],
        warmup_epochs=warmup,
        milestones=tuple(sorted(int(m) for m in milestones)),
        # On unless turned off: a run without validation images has nothing to fit it on.
        calibrate=config.calibrate is not False,
    )
    if resolved["distill"] and not resolved["ema"]:
        raise ConfigError(f"--distill learns from the weight average (--ema). Received: --distill "
                          f"{resolved['distill']:g} with --ema 0; expected --ema 0.999, say.")
    if resolved["distill"] and resolved["loss"] == "bce":
        raise ConfigError(f"--distill averages the teacher's probabilities. Received: --distill "
                          f"{resolved['distill']:g} with --loss bce; expected --loss ce.")
    return ResolvedConfig(**resolved)


def _eval_transform(weights, depth, preset, image_size):
    """Validation's transform: pretrained weights' own (their resize fraction and
    interpolation) at the run's size, so a fine-tuned model is measured and served as its
    weights' source evaluates; the preset's without weights that tell one, and for small
    images (the "cifar" preset: a crop of a 32 px image would lose its border)."""
    if weights and preset == "imagenet":
        found = resolve_weights_source(weights, {"depth": depth}).transform
        if found is not None:
            return found.at_size(image_size)
    return EvalTransform.for_preset(preset, image_size)


# TrainConfig field -> build_resnet argument, where the names differ.
_BUILD_ARGUMENTS = {"stochastic_depth": "stochastic_depth_rate"}
_ARCHITECTURE = ("variant", "stem", "shortcut", "groups", "width_per_group",
                 "width_multiplier", "se_ratio", "stochastic_depth", "zero_init_residual",
                 "dropout")


def model_kwargs(resolved):
    """`build_resnet` keyword arguments of a resolved config (unset: the builder's default)."""
    return {_BUILD_ARGUMENTS.get(key, key): resolved[key] for key in _ARCHITECTURE
            if resolved[key] is not None}


def architecture(resolved):
    """Every architecture field of a resolved config, the builder's defaults filled in."""
    builder = inspect.signature(resnet.build_resnet).parameters
    values = {key: resolved[key] if resolved[key] is not None
              else builder[_BUILD_ARGUMENTS.get(key, key)].default for key in _ARCHITECTURE}
    spec = ResNetSpec(resolved["depth"], variant=resolved["variant"], stem=resolved["stem"],
                      shortcut=resolved["shortcut"])  # the spec owns these three rules
    values["variant"], values["stem"], values["shortcut"] = spec.variant, spec.stem, spec.shortcut
    return values


def effective_values(resolved):
    """The resolved values as the run uses them: config.json's, with what it leaves to
    the builder or to other fields filled in; None only for what the run does not have."""
    values = {**resolved.to_dict(), **architecture(resolved)}
    values["freeze_epochs"] = resolved.freeze_epochs or 0
    if values["freeze_epochs"]:
        values["finetune_lr"] = resolved.finetune_lr or resolved.lr / 10
    return values


def describe_recipe(resolved):
    """The resolved values as `--print-recipe` prints them, one `name: value` per line."""
    lines = [f"recipe: {resolved.recipe} ({RECIPES[resolved.recipe]['description']})"]
    lines += [f"{key}: {'none' if value is None else value}"
              for key, value in effective_values(resolved).items() if key != "recipe"]
    return "\n".join(lines)


def resolve(config, options, *, read_tfds=True):
    """`resolve_config` for the facts of `config`'s data (`probe_data`, with `options`'
    TFDS folder). Without `read_tfds` a TFDS dataset is taken for the recipe's own kind of
    data, 32 px for the CIFAR recipes, else 224 (what `--print-recipe` assumes rather
    than import TFDS)."""
    if read_tfds or config.data_dir or config.dataset == "synthetic":
        facts = probe_data(config.dataset, data_dir=config.data_dir, val_dir=config.val_dir,
                           tfds_dir=options.tfds_dir)
    else:
        preset = RECIPES[config.recipe]["preset"] if config.recipe else "cifar"
        facts = DataFacts([], 32 if preset == "cifar" else 224)
    return resolve_config(config, facts)
