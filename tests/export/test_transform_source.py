"""The transform travels with the weights: our SavedModel, fed JPEG bytes of real
photographs, answers as the source library does with its own published transform.

For a torchvision V1 entry (resize 256, bilinear), a V2 entry (resize 232) and a timm a1
entry (resize 235, bicubic), a ResNet-18 with random weights and randomised BatchNorm
statistics is saved by torchvision / timm; the reference process classifies each photograph
through `weights.transforms()` or `timm.data.create_transform(**resolve_data_config(...))`
on PIL images, and we through `build_resnet(18, weights=file, preprocessing=NAME)`
exported with `export_serving_model(model, folder)` (no size, no preset: the model carries
the entry's transform) and its `serving_default` signature on the file bytes.

Measured here (AMD EPYC, TF 2.21, torch 2.14.1, Pillow 13): JPEG decoding is identical
(both accurate-DCT libjpeg-turbo); the network inputs differ by at most 1 grey level with
bilinear resizing (mean 0.12-0.19) and 6 with bicubic (mean 0.13-0.19: TF's and PIL's
antialiased cubic kernels round differently); the largest probability difference over the
seven photographs is 1.9e-3 (V1), 4.3e-3 (V2) and 2.9e-3 (timm a1), with classifier
weights scaled x8 so that probabilities are peaked; every top-1 is the same.
`PROBABILITY_TOLERANCE` leaves a little over 2x that for other CPUs and versions.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

if importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("timm") is None:
    pytest.skip("torchvision and timm (the test extra) are not installed", allow_module_level=True)

from torch_reference import reference_env  # noqa: E402

from resnet_tf import build_resnet  # noqa: E402
from resnet_tf.data import STD, decode_image, preprocess_for_eval  # noqa: E402
from resnet_tf.export import export_serving_model  # noqa: E402
from resnet_tf.models.registry import WEIGHTS  # noqa: E402
from resnet_tf.models.transform import transform_of  # noqa: E402

PROBABILITY_TOLERANCE = 1e-2
# Largest and mean input difference, in grey levels, per interpolation (measured: 1 / 6).
PIXEL_TOLERANCE = {"bilinear": (2, 0.3), "bicubic": (10, 0.3)}
# (width, height) of the photographs: landscape, portrait, square, panorama, odd sizes,
# smaller than the resize and larger than it.
SIZES = [(500, 375), (375, 500), (640, 480), (300, 300), (900, 260), (227, 231), (1024, 683)]
ENTRIES = {
    "torchvision V1": ("torchvision", "torchvision:resnet18.IMAGENET1K_V1"),
    "torchvision V2": ("torchvision", "torchvision:resnet50.IMAGENET1K_V2"),
    "timm a1": ("timm", "timm:resnet18.a1_in1k"),
}

_REFERENCE = textwrap.dedent(
    """
    import io, json, sys
    import numpy as np
    import timm, torch, torchvision
    from PIL import Image
    from torch_reference import randomise_batchnorm

    torch.set_num_threads(2)
    job = json.loads(sys.argv[1])
    torch.manual_seed(job["seed"])
    if job["library"] == "torchvision":
        net = torchvision.models.resnet18()
        architecture, tag = job["entry"].split(":")[1].split(".")
        enum = getattr(torchvision.models, torchvision.models.get_model_weights(architecture)
                       .__name__)
        transform = getattr(enum, tag).transforms()
    else:
        net = timm.create_model(job["entry"].split(":")[1], pretrained=False)
        config = timm.data.resolve_data_config(model=net)
        transform = timm.data.create_transform(**config)
    randomise_batchnorm(net, job["seed"])
    with torch.no_grad():  # logits spread enough for a top-1 that means something
        net.fc.weight.mul_(8.0)
    net.eval()
    torch.save(net.state_dict(), job["weights"])
    probabilities, inputs = [], []
    for path in job["files"]:
        with open(path, "rb") as f:
            image = Image.open(io.BytesIO(f.read())).convert("RGB")
        x = transform(image)
        inputs.append(x.numpy().transpose(1, 2, 0))
        with torch.no_grad():
            probabilities.append(net(x[None]).softmax(-1)[0].numpy())
    np.savez(job["out"], probabilities=np.stack(probabilities), inputs=np.stack(inputs))
    print(repr(transform))
    """
)


@pytest.fixture(scope="module")
def photographs(tmp_path_factory):
    """JPEG files (q90) cut from a real photograph at every size of `SIZES`."""
    import matplotlib
    from PIL import Image

    photo = Image.open(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data",
                                    "sample_data", "grace_hopper.jpg")).convert("RGB")
    folder = tmp_path_factory.mktemp("photographs")
    files = []
    for i, (width, height) in enumerate(SIZES):
        w, h = photo.size
        box = (i * 7, i * 5, w - i * 3, h - i * 4)  # another framing each time
        path = folder / f"photo{i}_{width}x{height}.jpg"
        photo.crop(box).resize((width, height), Image.BICUBIC).save(path, quality=90)
        files.append(str(path))
    return files


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_the_savedmodel_answers_as_the_source_with_its_transform(entry, photographs, tmp_path):
    library, name = ENTRIES[entry]
    weights = tmp_path / "weights.pth"
    job = dict(library=library, entry=name, seed=3, files=photographs, weights=str(weights),
               out=str(tmp_path / "reference.npz"))
    done = subprocess.run([sys.executable, "-c", _REFERENCE, json.dumps(job)], env=reference_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = np.load(job["out"])
    reference = found["probabilities"]

    model = build_resnet(18, weights=str(weights), preprocessing=name)
    assert transform_of(model) == WEIGHTS[name].preprocessing
    version = export_serving_model(model, tmp_path / "export")  # the model's own transform
    with open(os.path.join(version, "assets.extra", "resnet_tf_serving.json")) as f:
        assert json.load(f)["transform"] == WEIGHTS[name].preprocessing.get_config()
    serve = tf.saved_model.load(version).signatures["serving_default"]
    contents = [open(path, "rb").read() for path in photographs]
    ours = serve(image_bytes=tf.constant(contents))["probabilities"].numpy()

    # The network's input: the same pixels, to a grey level or a few.
    transform = WEIGHTS[name].preprocessing
    inputs = np.stack([preprocess_for_eval(decode_image(c), transform=transform).numpy()
                       for c in contents])
    grey_levels = np.abs(inputs - found["inputs"]) * np.asarray(STD) * 255
    largest, mean = PIXEL_TOLERANCE[transform.interpolation]
    assert grey_levels.max() <= largest and grey_levels.mean() <= mean

    difference = np.abs(ours - reference).max()
    print(f"{entry}: largest probability difference {difference:.2e}")
    assert list(ours.argmax(1)) == list(reference.argmax(1))
    assert difference < PROBABILITY_TOLERANCE
