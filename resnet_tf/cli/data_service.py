"""`python -m resnet_tf data-service --port P --workers N`: serve training pipelines."""

import argparse

from resnet_tf.cli.common import fail, prog_name
from resnet_tf.cli.numbers import int_in

MAX_WORKERS = 1024


def data_service_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a tf.data service dispatcher and workers that train.py --data-service "
                    "HOST:PORT sends its input pipeline to. Runs until stopped (Ctrl-C).")
    parser.add_argument("--port", type=int_in(1, 65535), default=5050,
                        help="dispatcher port (default: %(default)s)")
    parser.add_argument("--workers", type=int_in(0, MAX_WORKERS), default=1,
                        help="worker servers to start in this process (default: %(default)s)")
    parser.add_argument("--dispatcher", metavar="HOST:PORT",
                        help="add the workers to a dispatcher running elsewhere instead of "
                             "starting one")
    parser.add_argument("--host", default="localhost",
                        help="name or address the training job reaches these workers by "
                             "(default: %(default)s; use this machine's name when training "
                             "elsewhere)")
    parser.add_argument("--work-dir", help="dispatcher journal folder, so a restarted "
                        "dispatcher resumes its jobs (default: none)")
    return parser


def main(argv=None):
    """Returns the exit status (130 when stopped with Ctrl-C)."""
    prog = prog_name("python -m resnet_tf data-service")
    args = data_service_parser(prog).parse_args(argv)
    if args.workers == 0 and args.dispatcher:
        return fail(prog, ValueError(f"--workers is out of range. Received: --workers "
                                     f"{args.workers}; expected 1 to {MAX_WORKERS} (0 only to "
                                     "run a dispatcher alone)."))
    from resnet_tf.data.service import serve_forever

    try:
        serve_forever(args.port, args.workers, dispatcher=args.dispatcher, host=args.host,
                      work_dir=args.work_dir)
    except ValueError as error:
        return fail(prog, error)
    except KeyboardInterrupt:
        print(f"\n{prog}: stopped.", flush=True)
        return 130
    return 0
