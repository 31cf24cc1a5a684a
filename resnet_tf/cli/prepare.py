"""`python -m resnet_tf prepare DIR OUT --shards N`: an image folder as TFRecord shards."""

import argparse

from resnet_tf.cli.common import fail, prog_name
from resnet_tf.cli.numbers import int_in
from resnet_tf.data.prepare import MAX_SHARDS


def prepare_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write an image folder (one sub-folder per class) as TFRecord shards that "
                    "train.py --data-dir and resnet-evaluate --data-dir read. The files are "
                    "stored as they are (no re-encoding). Rerunning the same command after an "
                    "interruption continues where it stopped.")
    parser.add_argument("data_dir", metavar="DIR", help="image folder, one sub-folder per class")
    parser.add_argument("out", metavar="OUT", help="new folder for the shards and manifest.json")
    parser.add_argument("--shards", type=int_in(1, MAX_SHARDS), default=8,
                        help="number of shard files; aim for 100-200 MB each "
                             "(ImageNet's training set: 1024) (default: %(default)s)")
    return parser


def main(argv=None):
    """Returns the exit status."""
    prog = prog_name("python -m resnet_tf prepare")
    args = prepare_parser(prog).parse_args(argv)
    from resnet_tf.data.prepare import prepare_records

    try:
        prepare_records(args.data_dir, args.out, args.shards,
                        log=lambda line: print(line, flush=True))
    except ValueError as error:  # DataError: a message written for the user
        return fail(prog, error)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; rerun the same command to continue.", flush=True)
        return 130
    return 0
