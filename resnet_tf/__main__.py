"""`python -m resnet_tf train|export|evaluate|predict|explain ...`: the resnet-* commands in one."""

import sys

from resnet_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
