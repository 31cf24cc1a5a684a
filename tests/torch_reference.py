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


def save_torchvision_resnet18(path, seed=0):
    """Writes a torchvision ResNet-18 with random weights to `path` (`torch.save` of its
    state dict) from another process: torch and TensorFlow in one process can crash."""
    import subprocess
    import sys

    code = ("import torch, torchvision, sys; torch.manual_seed(int(sys.argv[2])); "
            "torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path), str(seed)], check=True, timeout=300,
                   env=reference_env())
    return path
