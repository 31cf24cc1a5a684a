"""Train a ResNet: `python train.py --help` (the same command as `resnet-train`)."""

from resnet_tf.cli import train_main

raise SystemExit(train_main())
