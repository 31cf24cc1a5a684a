"""The command line: every argparse parser and `main`, and `python -m resnet_tf COMMAND`.

Nothing in the library imports this package; each command imports what it runs.
"""

import importlib
import sys

COMMANDS = {
    "train": ("resnet_tf.cli.train", "main", "train a ResNet (resnet-train, train.py)"),
    "export": ("resnet_tf.cli.export", "main", "export a TF Serving SavedModel (resnet-export)"),
    "evaluate": ("resnet_tf.cli.evaluate", "evaluate_main",
                 "accuracy and confusion matrix on a dataset (resnet-evaluate)"),
    "predict": ("resnet_tf.cli.evaluate", "predict_main", "classify image files (resnet-predict)"),
    "explain": ("resnet_tf.cli.explain", "main",
                "Grad-CAM heat maps and feature maps of image files (resnet-explain)"),
    "prepare": ("resnet_tf.cli.prepare", "main",
                "write an image folder as TFRecord shards (prepare DIR OUT --shards N)"),
    "data-service": ("resnet_tf.cli.data_service", "main",
                     "run tf.data service workers for train.py --data-service"),
    "list-weights": ("resnet_tf.cli.weights", "main",
                     "the registered pretrained weights, one per line"),
}
# Spellings that earlier help texts used.
ALIASES = {"list_weights": "list-weights"}


def main(argv=None):
    """`python -m resnet_tf {train,export,evaluate,predict,explain,prepare,data-service,list-weights} ...`. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ALIASES:
        argv[0] = ALIASES[argv[0]]
    names = ",".join(COMMANDS)
    if not argv or argv[0] not in COMMANDS:
        lines = [f"usage: python -m resnet_tf {{{names}}} [--help] ...", ""]
        lines += [f"  {name:<13} {help}" for name, (_, _, help) in COMMANDS.items()]
        if argv and argv[0] not in ("-h", "--help"):
            print("\n".join(lines[:1]), file=sys.stderr)
            print(f"python -m resnet_tf: error: unknown command {argv[0]!r}; expected one of "
                  f"{', '.join(COMMANDS)}.", file=sys.stderr)
            return 2
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    module, function, _ = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0
