"""What the torch reference processes of the weight tests share (torch only: they run
beside no TensorFlow). Importable from scripts started with `reference_env()`."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))


def randomise_batchnorm(net, seed):
    """Random gamma, beta and running statistics for every BatchNorm2d of a torch `net`,
    so that conversions are compared on more than identities."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    return net


def reference_env():
    """The environment of a torch reference process: no GPU, this folder importable."""
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}
