"""Compact PyTorch twins of the resnet_tf networks the benchmark trains.

Same architecture as `resnet_tf.build_resnet` (torchvision layout, no torchvision here):
ResNet-50 v1.5 (stride on the 3x3 conv), ResNet-18 with the CIFAR stem (3x3/1 conv,
no max-pool), and the CIFAR ResNet-20 with the option-A (zero-padded identity)
shortcut. run.py prints both parameter counts side by side so a mismatch shows.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _bn_relu(channels, relu=True):
    layers = [nn.BatchNorm2d(channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else layers[0]


class Basic(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn_relu(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn_relu(cout, relu=False)
        self.stride, self.extra = stride, cout - cin
        self.proj = None
        if (stride != 1 or cin != cout) and shortcut == "B":
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        if self.proj is not None:
            x = self.proj(x)
        elif self.stride != 1 or self.extra:  # option A: subsample, zero-pad channels
            x = x[:, :, ::self.stride, ::self.stride]
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(x + y)


class Bottleneck(nn.Module):
    def __init__(self, cin, filters, stride, shortcut="B"):
        super().__init__()
        cout = 4 * filters
        self.body = nn.Sequential(
            nn.Conv2d(cin, filters, 1, bias=False), _bn_relu(filters),
            nn.Conv2d(filters, filters, 3, stride, 1, bias=False), _bn_relu(filters),
            nn.Conv2d(filters, cout, 1, bias=False), _bn_relu(cout, relu=False),
        )
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        short = x if self.proj is None else self.proj(x)
        return F.relu(short + self.body(x))


# depth: (block, repeats, stage filters, stem filters)
SPECS = {
    50: ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    18: ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
    20: ("basic", (3, 3, 3), (16, 32, 64), 16),
}


class ResNet(nn.Module):
    def __init__(self, depth, classes, stem="imagenet", shortcut="B"):
        super().__init__()
        block, repeats, filters, width = SPECS[depth]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), _bn_relu(width),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), _bn_relu(width))
        stages, cin = [], width
        for i, (f, n) in enumerate(zip(filters, repeats)):
            for b in range(n):
                stride = 2 if (b == 0 and i > 0) else 1
                if block == "basic":
                    stages.append(Basic(cin, f, stride, shortcut))
                    cin = f
                else:
                    stages.append(Bottleneck(cin, f, stride))
                    cin = 4 * f
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name):
    """"resnet50" (224px, 1000 classes), "resnet18_cifar" or "resnet20" (32px, 10 classes)."""
    if name == "resnet50":
        return ResNet(50, 1000)
    if name == "resnet18_cifar":
        return ResNet(18, 10, stem="cifar")
    if name == "resnet20":
        return ResNet(20, 10, stem="cifar", shortcut="A")
    raise ValueError(f"Unknown model. Received: {name!r}")
