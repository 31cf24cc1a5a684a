"""The one error convention of every command, and what the commands share.

User errors print one line, `<prog>: error: <message>`, on stderr and exit with status 2,
as argparse does for its own errors.
"""

import os
import sys


def prog_name(default):
    """The name the user typed (`train.py`, `resnet-train`), for messages."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else default
    return default if prog in ("__main__.py", "-c", "", "pytest") else prog


def is_user_error(error):
    """A ValueError with a message written for the user, not one from inside TF or Keras.

    resnet_tf's own error types (ConfigError, data.DataError), and the ValueErrors that
    resnet_tf code raises itself, such as build_resnet's argument checks.
    """
    if (type(error).__module__ or "").startswith("resnet_tf."):
        return True
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package)


def fail(prog, error):
    """Print `<prog>: error: <message>` on one line to stderr; return exit status 2."""
    message = " ".join(str(error).split())
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return 2
