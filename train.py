"""Train a ResNet: `python train.py --help` (the same command as `resnet-train`)."""

from resnet_tf.cli.train import main

raise SystemExit(main())
