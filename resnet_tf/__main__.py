"""`python -m resnet_tf train|export|evaluate|predict ...`: the resnet-* commands in one."""

import importlib
import sys

COMMANDS = {
    "train": ("resnet_tf.cli", "train_main", "train a ResNet (resnet-train)"),
    "export": ("resnet_tf.export", "main", "export a TF Serving SavedModel (resnet-export)"),
    "evaluate": ("resnet_tf.evaluate", "evaluate_main", "accuracy and confusion matrix on a dataset (resnet-evaluate)"),
    "predict": ("resnet_tf.evaluate", "predict_main", "classify image files (resnet-predict)"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        lines = ["usage: python -m resnet_tf {train,export,evaluate,predict} [--help] ...", ""]
        lines += [f"  {name:<9} {help}" for name, (_, _, help) in COMMANDS.items()]
        if argv and argv[0] not in ("-h", "--help"):
            print("\n".join(lines[:1]), file=sys.stderr)
            print(f"python -m resnet_tf: error: unknown command {argv[0]!r}; expected one of "
                  f"{', '.join(COMMANDS)}.", file=sys.stderr)
            return 2
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    module, function, _ = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
