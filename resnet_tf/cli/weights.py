"""`python -m resnet_tf list-weights`: the registered pretrained weights, one per line."""

import argparse
import dataclasses
import json
import os
import sys

from resnet_tf.cli.common import fail, prog_name
from resnet_tf.cli.numbers import int_in
from resnet_tf.models.spec import DEPTHS

FORMATS = ("text", "json")


def list_weights_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="List the registered pretrained weights (names for --weights and "
                    "build_resnet(weights=...)), one per line.")
    parser.add_argument("--depth", type=int_in(1, max(DEPTHS)),
                        help="only the weights of this ResNet depth (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text: name, architecture, top-1 and evaluation transform per "
                             "line; json: one JSON object per line (default: %(default)s)")
    return parser


def _describe(entry):
    p = entry.preprocessing
    top1 = "top-1 n/a" if entry.top1 is None else f"top-1 {entry.top1:g} %"
    if entry.test_top1 is not None:
        top1 += f" ({entry.test_top1:g} % at {entry.test_crop} px)"
    resize = f"resize {p.resize} {p.interpolation}, " if p.resize else ""
    build = ", ".join(f"{k}={v}" for k, v in entry.build.items())
    return f"{entry.name}  ({build}; {top1}; {resize}crop {p.crop})"


def main(argv=None):
    """`python -m resnet_tf list-weights [--depth N] [--format text|json]`; the exit status."""
    from resnet_tf.models.registry import list_weights

    prog = prog_name("python -m resnet_tf list-weights")
    args = list_weights_parser(prog).parse_args(argv)
    if args.depth is not None and args.depth not in DEPTHS:
        return fail(prog, ValueError(
            f"Unknown depth. Received: --depth {args.depth}; expected one of "
            f"{', '.join(map(str, DEPTHS))}."))
    try:
        for entry in list_weights(args.depth):
            if args.format == "json":
                print(json.dumps(dataclasses.asdict(entry), sort_keys=True))
            else:
                print(_describe(entry))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
    return 0
