"""`resnet-train` / `train.py`: train (or resume) a run, then export its SavedModel."""

import argparse
import dataclasses
import sys

from resnet_tf.cli.common import fail, is_user_error, prog_name


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


def _probability(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1; received {text!r}")
    return value


def train_parser(prog=None):
    from resnet_tf.metrics import TTA
    from resnet_tf.models.blocks import VARIANTS
    from resnet_tf.models.resnet import STEMS
    from resnet_tf.schedules import SCHEDULES
    from resnet_tf.training.cpu_tuning import CPU_CONFIGS
    from resnet_tf.training.recipes import (
        AUGMENTS,
        LOSSES,
        OPTIMIZERS,
        PRECISIONS,
        RECIPES,
    )

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a ResNet with Keras. Rerunning the same command resumes the run "
                    "in --out from its last finished epoch.",
        epilog=_recipe_epilog(RECIPES),
    )
    parser.add_argument("--recipe", choices=tuple(RECIPES),
                        help="named recipe whose values fill every flag not given "
                             "(default: cifar for images of 64 px or less, else imagenet)")
    parser.add_argument("--print-recipe", action="store_true",
                        help="print the resolved configuration and exit without training")

    model = parser.add_argument_group("model")
    model.add_argument("--depth", type=int, help="ResNet depth: 18, 34, 50, 101, 152, 200 or "
                       "the CIFAR 20, 32, 44, 56, 110, 164, 1001 (default: recipe)")
    model.add_argument("--variant", choices=VARIANTS,
                       help="block variant (default: v1.5; v2 for depths 164 and 1001)")
    model.add_argument("--stem", choices=STEMS,
                       help="stem (default: cifar for images of 64 px or less)")
    model.add_argument("--shortcut", choices=("A", "B"),
                       help="projection shortcut: B (1x1 conv) or A (zero-padded identity) "
                            "(default: A for the CIFAR basic-block networks, else B)")
    model.add_argument("--groups", type=int, help="ResNeXt cardinality (default: 1)")
    model.add_argument("--width-per-group", type=int,
                       help="ResNeXt width per group (default: 64; 4 with --groups 32)")
    model.add_argument("--width-multiplier", type=float, help="Wide ResNet factor (default: 1)")
    model.add_argument("--se-ratio", type=float,
                       help="squeeze-and-excitation ratio, e.g. 0.0625 (default: 0, none)")
    model.add_argument("--stochastic-depth", type=float,
                       help="drop probability of the last block's branch (default: 0)")
    model.add_argument("--zero-init-residual", action="store_true", default=None,
                       help="start every residual branch at zero (last BatchNorm gamma 0)")
    model.add_argument("--dropout", type=float, help="dropout before the classifier (default: 0)")
    model.add_argument("--weights",
                       help="start from pretrained weights: a registry name (resnet_tf "
                            "list_weights), a torchvision/timm/keras.applications file, a "
                            ".keras file or a run folder; the classifier is new")
    model.add_argument("--freeze-epochs", type=int,
                       help="with --weights: train only the new head for N epochs (backbone "
                            "and BatchNorm frozen), then fine-tune everything (default: 0)")
    model.add_argument("--finetune-lr", type=float,
                       help="with --freeze-epochs: learning rate per 256 images after "
                            "unfreezing (default: a tenth of --lr)")
    model.add_argument("--train-batchnorm", action="store_true",
                       help="with --weights: let BatchNorm statistics and parameters train "
                            "(default: frozen, in inference mode, as fine-tuning guides advise)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cifar10",
                      help="TFDS dataset name, or 'synthetic'; ignored with --data-dir "
                           "(default: %(default)s)")
    data.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    data.add_argument("--val-dir", help="validation folder laid out like --data-dir")
    data.add_argument("--val-split", type=float,
                      help="fraction of the training images held out for validation when "
                           "the data has no validation split (default: 0.1; 0 for none)")
    data.add_argument("--image-size", type=int, help="input size (default: the images' own)")
    data.add_argument("--augment", choices=AUGMENTS,
                      help="augmentation policy: basic (random crop + flip), randaugment, "
                           "augmix (Keras' layers, after the basic crop and flip) or none "
                           "(default: recipe)")
    data.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                      help="same as --augment none")
    data.add_argument("--mixup", type=float, help="MixUp alpha, 0 for none (default: recipe)")
    data.add_argument("--cutmix", type=float, help="CutMix alpha, 0 for none; with --mixup "
                      "each batch uses one of the two (default: recipe)")
    data.add_argument("--random-erasing", type=_probability,
                      help="random erasing probability (default: recipe)")
    data.add_argument("--crop-padding", type=int, metavar="PIXELS",
                      help="zero padding per side before the random crop of small images "
                           "(the cifar preset; 0: flip only) (default: recipe)")
    data.add_argument("--tfds-dir", help="TFDS data directory")
    data.add_argument("--manual-dir", help="folder of manually downloaded TFDS archives")

    opt = parser.add_argument_group("optimization")
    opt.add_argument("--epochs", type=int, help="epochs (default: recipe)")
    opt.add_argument("--batch-size", type=int, default=128,
                     help="global batch size, divided over the replicas (default: %(default)s)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS,
                     help="SGD with Nesterov momentum, AdamW, Adam or LAMB (default: recipe)")
    opt.add_argument("--lr", type=float, help="learning rate per 256 images, scaled by "
                     "batch-size/256 (default: recipe)")
    opt.add_argument("--momentum", type=float, default=0.9,
                     help="SGD momentum (default: %(default)s)")
    opt.add_argument("--wd", type=float, help="weight decay, not applied to BatchNorm "
                     "parameters or biases; for SGD the L2 coefficient of the papers "
                     "(default: recipe)")
    opt.add_argument("--label-smoothing", type=float, help="label smoothing (default: recipe)")
    opt.add_argument("--loss", choices=LOSSES,
                     help="softmax cross-entropy, or binary cross-entropy on logits as "
                          "ResNet strikes back trains (default: recipe)")
    opt.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this "
                     "(default: none)")
    opt.add_argument("--ema", type=float,
                     help="keep an EMA of the weights with this decay per step; validation, "
                          "best.keras, metrics.json and the export use it (default: recipe)")
    opt.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                     help="learning-rate decay after the warmup (default: %(default)s)")
    opt.add_argument("--warmup-epochs", type=float, help="linear warmup epochs (default: "
                     "recipe, at most a quarter of --epochs)")
    opt.add_argument("--milestones", type=_epoch_list,
                     help="epochs where --schedule step divides the rate by 10 "
                          "(default: 50%%,75%% (CIFAR) or 33%%,67%%,89%% of --epochs)")

    run = parser.add_argument_group("run")
    run.add_argument("--tta", choices=TTA,
                     help="test-time augmentation of the final evaluation: flip (2 views) or "
                          "flip-shift (flip and 1-pixel diagonal shifts, 10 views); "
                          "metrics.json also keeps the single-view figures (default: recipe)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto: mixed_float16 on GPUs of compute capability 7.0+, "
                          "mixed_bfloat16 on CPUs with AMX/AVX512-BF16, else float32 "
                          "(default: %(default)s)")
    run.add_argument("--devices", type=int, help="use the first N GPUs; without GPUs, N > 1 "
                     "splits the CPU into N logical devices (for testing distribution)")
    run.add_argument("--seed", type=int, default=0,
                     help="random seed of the weights, data order and augmentation "
                          "(default: %(default)s)")
    run.add_argument("--split-seed", type=int,
                     help="seed of the validation hold-out drawn when there is no --val-dir "
                          "(default: 0, whatever --seed is, so runs with other seeds are "
                          "measured on the same images)")
    run.add_argument("--deterministic", action="store_true",
                     help="reproducible data order, augmentation and ops (slower)")
    run.add_argument("--out", help="run directory (default: runs/resnet<depth>_<dataset>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a run in --out instead of resuming or refusing")
    run.add_argument("--export-dir", help="SavedModel base directory (default: "
                     "<out>/export/<model name>)")
    run.add_argument("--no-export", dest="export", action="store_false",
                     help="do not export a SavedModel at the end")
    cpu = parser.add_argument_group(
        "CPU speed", "Without GPUs, train.py applies the fastest settings measured for this "
        "kind of CPU (resnet_tf.training.cpu_tuning.CHOICES; benchmarks/cpu_configs.py "
        "measures them) and prints them; these flags override single settings.")
    cpu.add_argument("--cpu-config", choices=CPU_CONFIGS, default="auto",
                     help="auto: the measured choice for this CPU's kind; tf-defaults: "
                          "TensorFlow's own (default: %(default)s)")
    cpu.add_argument("--onednn", choices=("on", "off"),
                     help="TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; the command "
                          "restarts itself once to set it) (default: --cpu-config's)")
    cpu.add_argument("--inter-op-threads", type=int, metavar="N",
                     help="TensorFlow's inter-op thread pool (default: --cpu-config's)")
    cpu.add_argument("--intra-op-threads", type=int, metavar="N",
                     help="TensorFlow's intra-op thread pool (default: --cpu-config's)")
    cpu.add_argument("--steps-per-execution", type=int, metavar="N",
                     help="training steps per compiled call (default: --cpu-config's)")
    return parser


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
    """The resolved values for the recipe's own kind of data (or --image-size)."""
    from resnet_tf.data.preprocessing import default_preset
    from resnet_tf.training.recipes import RECIPES, check_config, describe_recipe, resolve_config

    try:
        check_config(config, options)
        preset = RECIPES[config.recipe]["preset"] if config.recipe else "cifar"
        size = config.image_size or (32 if preset == "cifar" else 224)
        print(describe_recipe(resolve_config(config, default_preset(size), size)))
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
