"""`resnet-train` / `train.py`: train (or resume) a run, then export its SavedModel."""

import argparse
import dataclasses
import sys

from resnet_tf.cli.common import fail, is_user_error, prog_name
from resnet_tf.errors import WeightsDownloadError


def _epoch_list(text):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs such as 20,30; received {text!r}") from None


def _recipe_epilog(recipes):
    def describe(name, r):
        lr, wd = r["lr_wd"][r["optimizer"]]
        extras = [f"{k} {r[k]:g}" for k in ("mixup", "cutmix", "random_erasing", "ema") if r[k]]
        return (f"{name}: ResNet-{r['depth']}, {r['epochs']} epochs, {r['optimizer']} lr {lr:g} "
                f"per 256 images, wd {wd:g}, {r['warmup_epochs']:g} warmup epoch(s), label "
                f"smoothing {r['label_smoothing']:g}, {r['loss']} loss, {r['augment']} "
                f"augmentation" + "".join(f", {x}" for x in extras))

    return ("Recipes (--recipe; without it 'cifar' for images of 64 px or less, else "
            "'imagenet'; explicit flags override a recipe's values): "
            + "; ".join(describe(name, r) for name, r in recipes.items()) + ".")


# --help sections, in order, and their descriptions.
_GROUPS = {
    "recipe": None,
    "model": None,
    "data": None,
    "optimization": None,
    "run": None,
    "CPU speed": "Without GPUs, train.py applies the fastest settings measured for this kind "
                 "of CPU (resnet_tf.training.cpu_tuning.CHOICES; benchmarks/cpu_configs.py "
                 "measures them) and prints them; these flags override single settings.",
}


def train_parser(prog=None):
    """`train.py`'s parser: one flag per `recipes.FIELDS` entry, plus --print-recipe."""
    from resnet_tf.training.recipes import FIELDS, RECIPES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a ResNet with Keras. Rerunning the same command resumes the run "
                    "in --out from its last finished epoch.",
        epilog=_recipe_epilog(RECIPES),
    )
    groups = {name: parser if name == "recipe" else parser.add_argument_group(name, text)
              for name, text in _GROUPS.items()}
    groups["recipe"].add_argument("--print-recipe", action="store_true",
                                  help="print the resolved configuration and exit without "
                                       "training (default: off)")
    for field in FIELDS:
        if field.flag:
            _add_flag(groups[field.group], field)
    groups["data"].add_argument("--eval-size", dest="image_size", type=int, metavar="S",
                                help="same as --image-size: the evaluation and export size "
                                     "(torchvision's --val-crop-size) (default: the images' own)")
    return parser


def _add_flag(group, field):
    helptext = field.help_text.replace("%", "%%")
    if field.type is bool and field.default is True:
        group.add_argument(f"--no-{field.option[2:]}", dest=field.name, action="store_false",
                           help=helptext)
        return
    if field.type is bool:
        group.add_argument(field.option, action="store_true", default=field.default,
                           help=helptext)
        if field.no_flag is not None:
            group.add_argument(f"--no-{field.option[2:]}", dest=field.name, action="store_false",
                               help=f"turn {field.option} off (default: {field.default_text})")
        return
    kind = _epoch_list if field.type is tuple else field.type
    group.add_argument(field.option, type=kind, default=field.default, metavar=field.metavar,
                       choices=field.choices if field.type is str else None, help=helptext)
    if field.no_flag is not None:
        group.add_argument(f"--no-{field.option[2:]}", dest=field.name, action="store_const",
                           const=field.no_flag,
                           help=f"same as {field.option} {field.no_flag} (default: off)")


def main(argv=None):
    """`train.py` / `resnet-train`. Returns the exit status."""
    prog = prog_name("resnet-train")
    args = train_parser(prog).parse_args(argv)

    from resnet_tf.training import RunOptions, TrainConfig, train

    config = TrainConfig(**_fields(args, TrainConfig))
    options = RunOptions(**_fields(args, RunOptions))
    if args.print_recipe:
        return _print_recipe(prog, config, options)
    try:
        _apply_cpu_env(config, options)
        if options.export and options.export_dir:
            from resnet_tf.export.savedmodel import check_export_dir

            check_export_dir(options.export_dir)  # found before training, not after
        result = train(config, options)
        if result is not None and options.export:
            _export(result["run_dir"], options.export_dir)
    except ValueError as error:
        if is_user_error(error):
            return fail(prog, error)
        raise
    except WeightsDownloadError as error:  # the arguments were right; the machine is offline
        fail(prog, error)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; rerun the same command to resume from the last "
              "finished epoch.", file=sys.stderr, flush=True)
        return 130
    return 0


def _apply_cpu_env(config, options):
    """Sets the environment variables of this CPU's settings (restarting the command once
    when TensorFlow has already read them); thread counts are the trainer's step."""
    from resnet_tf.training.cpu_tuning import reexec_with_env
    from resnet_tf.training.distribute import visible_gpus
    from resnet_tf.training.recipes import check_config
    from resnet_tf.training.trainer import cpu_config_for

    check_config(config, options)  # a bad value is reported before any restart
    if not visible_gpus():
        reexec_with_env(cpu_config_for(options))


def _print_recipe(prog, config, options):
    """The resolved values for the data of --data-dir or --dataset synthetic, else for the
    recipe's own kind of data (or --image-size)."""
    from resnet_tf.training.config import describe_recipe, resolve
    from resnet_tf.training.recipes import check_config

    try:
        check_config(config, options)
        print(describe_recipe(resolve(config, options, read_tfds=False)))
    except ValueError as error:
        return fail(prog, error)
    return 0


def _export(run_dir, export_dir):
    try:
        from resnet_tf.export import export_run
    except ImportError as error:
        print(f"Note: not exporting a SavedModel ({error}).", flush=True)
        return
    path = export_run(run_dir, export_dir)
    print(f"Exported the serving model to {path}", flush=True)


def _fields(args, cls):
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
