"""`resnet-explain`: Grad-CAM heat maps, top-k scores and feature maps of image files.

For each image, `<n>_<name>.png` shows the picture as the model saw it (the evaluation
preprocessing, undone for display), the Grad-CAM of the top class (and of `--class`) and
the top-k scores; `--features C3` adds `<n>_<name>_features_C3.png`. `index.html` shows
them all. Every image is decoded before the model is loaded: one that cannot be is a user
error (exit status 2, nothing written), not a silent hole in the gallery.
"""

import argparse
import functools
import html
import os
import re
import sys
import urllib.parse

import keras
import numpy as np
import tensorflow as tf

from resnet_tf.cli.common import fail
from resnet_tf.cli.numbers import MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_TOP_K, int_in
from resnet_tf.data import MEAN, PRESETS, STD, decode_image, image_files, preprocess_for_eval
from resnet_tf.evaluation.explain import (
    ExplainError,
    class_count,
    feature_grid,
    feature_layer,
    grad_cam,
    overlay,
)
from resnet_tf.export import load_checkpoint
from resnet_tf.export.savedmodel import check_output_folder
from resnet_tf.files import atomic_write, write_text

_PROG = "resnet-explain"
_BATCH = 32


def explain_parser():
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Show what a model looks at: for each image a PNG with the Grad-CAM "
                    "heat map of the top class (and of --class) and the top-k scores, "
                    "optionally a grid of a stage's strongest channels, and index.html "
                    "showing them all.",
    )
    parser.add_argument("model", help=".keras file, or a run folder (its best.keras and classes.txt)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--class", dest="class_name", metavar="NAME",
                        help="also show the Grad-CAM of this class")
    parser.add_argument("--top-k", type=int_in(1, MAX_TOP_K), default=5, metavar="K",
                        help="scores shown per image (default: 5)")
    parser.add_argument("--layer", metavar="NAME", help="Grad-CAM layer: C2..C5 or a layer name (default: the last stage)")
    parser.add_argument("--features", metavar="STAGE",
                        help="also draw the strongest channels of this stage (C2..C5 or a layer name)")
    parser.add_argument("--channels", type=int_in(1, MAX_CHANNELS), default=16, metavar="N",
                        help="channels in the --features grid (default: 16)")
    model = parser.add_argument_group("model settings (default: the run's config.json)")
    model.add_argument("--classes", help="class names file (default: classes.txt beside the model)")
    model.add_argument("--image-size", type=int_in(1, MAX_IMAGE_SIZE),
                       help="input size (default: config.json, else the model's)")
    model.add_argument("--preset", choices=PRESETS, help="evaluation preprocessing (default: config.json)")
    return parser


def main(argv=None):
    """`resnet-explain MODEL IMAGE... --out DIR [--class NAME] [--features STAGE]`. Returns the exit status."""
    args = explain_parser().parse_args(argv)
    try:
        job = _prepare(args)
    except ValueError as error:  # ExplainError, ExportError, DataError
        return fail(_PROG, error)
    os.makedirs(args.out, exist_ok=True)
    rows = _write_explanations(job, args)
    write_text(os.path.join(args.out, "index.html"), _index_html(rows, job, args))
    for row in rows:
        best = row["top"][0]
        print(f"{row['file']}: {best[0]} {best[1]:.4f} -> {row['picture']}")
    print(f"Wrote {len(rows)} explanation(s) and index.html to {args.out}")
    return 0


def _prepare(args):
    """Everything that can fail on the user's input, done before anything is written."""
    check_output_folder(args.out, "--out", ExplainError)
    files = image_files(args.images)
    pictures = [_decode(path) for path in files]
    if os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        raise ExplainError(f"Received: model '{args.model}', a SavedModel; expected a .keras file "
                           "or a run folder, since Grad-CAM needs the Keras model's layers.")
    checkpoint = load_checkpoint(args.model, image_size=args.image_size, preset=args.preset,
                                 classes_file=args.classes)
    model, class_names, image_size = checkpoint.model, checkpoint.class_names, checkpoint.image_size
    fixed = [d for d in model.input_shape[1:3] if d is not None]
    if any(d != image_size for d in fixed):
        raise ExplainError(f"Received: image size {image_size} (from --image-size or config.json); "
                           f"expected {fixed[0]}, the input size of the model.")
    if class_count(model) != len(class_names):
        raise ExplainError(f"Received: {len(class_names)} class names for a model with "
                           f"{class_count(model)} classes; expected one name per class.")
    target = None
    if args.class_name is not None:
        if args.class_name not in class_names:
            shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            raise ExplainError(f"Received: --class {args.class_name!r}; expected one of the "
                               f"model's classes: {shown}.")
        target = class_names.index(args.class_name)
    layer = feature_layer(model, args.layer)
    if args.features is not None:
        feature_layer(model, args.features)
    inputs = np.stack([preprocess_for_eval(p, transform=checkpoint.transform).numpy()
                       for p in pictures])
    probs = _probabilities(model, inputs)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :min(args.top_k, len(class_names))]
    cams = grad_cam(model, inputs, class_index=list(top[:, 0]), layer=layer.name)
    asked = None if target is None else grad_cam(model, inputs, class_index=target, layer=layer.name)
    return dict(files=files, inputs=inputs, model=model, class_names=class_names, layer=layer.name,
                probs=probs, top=top, cams=cams, target=target, asked=asked)


def _decode(path):
    try:
        return decode_image(tf.io.read_file(path))
    except tf.errors.InvalidArgumentError as error:
        reason = error.message.strip().splitlines()[0].rstrip(".")
        expected = ("a smaller image" if "larger than the limit" in reason
                    else "a JPEG, PNG, BMP, GIF or WebP file")
        raise ExplainError(f"Received: image '{path}', which cannot be decoded ({reason}); "
                           f"expected {expected}.") from None


def _probabilities(model, inputs):
    """The model's class probabilities, with a softmax where the head gives logits.

    The rule of the serving export (`ServingModule`), so scores match resnet-predict's.
    """
    outputs = np.concatenate([
        keras.ops.convert_to_numpy(model(inputs[i:i + _BATCH], training=False))
        for i in range(0, len(inputs), _BATCH)
    ]).astype(np.float32)
    if getattr(model.layers[-1], "activation", None) is keras.activations.linear:
        outputs = keras.ops.convert_to_numpy(keras.ops.softmax(outputs))
    return outputs


def _display(inputs):
    """The normalized model inputs back in 0..255: exactly the crop the model saw."""
    pixels = inputs * (255.0 * np.asarray(STD)) + 255.0 * np.asarray(MEAN)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _write_explanations(job, args):
    model, names, inputs = job["model"], job["class_names"], job["inputs"]
    probs, top, cams, asked = job["probs"], job["top"], job["cams"], job["asked"]
    pictures = _display(inputs)
    rows = []
    for i, path in enumerate(job["files"]):
        # The number keeps names unique (a.png in two folders) and in the order given.
        stem = f"{i + 1:03d}_" + _safe(os.path.splitext(os.path.basename(path))[0])
        panels = [("input", pictures[i]), _cam_panel(pictures[i], cams[i], names, probs[i], top[i, 0])]
        if asked is not None:
            panels.append(_cam_panel(pictures[i], asked[i], names, probs[i], job["target"]))
        row = {"file": path, "picture": f"{stem}.png", "features": None,
               "top": [(names[c], float(probs[i, c])) for c in top[i]]}
        atomic_write(os.path.join(args.out, row["picture"]),
                     functools.partial(_plot, panels, row["top"], os.path.basename(path)))
        if args.features is not None:
            grid = feature_grid(model, inputs[i], args.features, args.channels)
            row["features"] = f"{stem}_features_{_safe(args.features)}.png"
            atomic_write(os.path.join(args.out, row["features"]), functools.partial(_save_png, grid))
        rows.append(row)
    return rows


def _cam_panel(picture, heatmap, names, probs, index):
    caption = f"Grad-CAM: {names[index]} ({probs[index]:.2f})"
    if not heatmap.any():  # an all-zero map would read as "everywhere a little"
        caption += ", no evidence"
    return caption, overlay(picture, heatmap)


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _plot(panels, top, title, path):
    """The image panels side by side, then a bar chart of the top-k scores."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.0 * (len(panels) + 1), 3.3), layout="constrained")
    FigureCanvasAgg(figure)
    for position, (caption, picture) in enumerate(panels, 1):
        ax = figure.add_subplot(1, len(panels) + 1, position)
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    ax = figure.add_subplot(1, len(panels) + 1, len(panels) + 1)
    labels, scores = zip(*top)
    ax.barh(range(len(top)), scores, color="tab:blue")
    ax.set_yticks(range(len(top)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(f"top-{len(top)} scores", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, format="png", dpi=100)


def _save_png(pixels, path):
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG")


def _index_html(rows, job, args):
    def img(name):
        return f'<img src="{html.escape(urllib.parse.quote(name))}" alt="{html.escape(name)}">'

    heading = ["image", f"top-{len(rows[0]['top'])}", f"Grad-CAM ({job['layer']})"]
    if args.features is not None:
        heading.append(f"strongest channels of {args.features}")
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_PROG}: {html.escape(args.model)}</title>",
        "<style>body{font-family:sans-serif} td{vertical-align:top;padding:6px;"
        "border-bottom:1px solid #ccc} img{max-width:900px}</style>",
        "</head><body>",
        f"<h1>What {html.escape(args.model)} looks at</h1>",
        "<table>",
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heading) + "</tr>",
    ]
    for row in rows:
        scores = "".join(f"<li>{html.escape(name)} {score:.4f}</li>" for name, score in row["top"])
        cells = [html.escape(row["file"]), f"<ol>{scores}</ol>", img(row["picture"])]
        if row["features"] is not None:
            cells.append(img(row["features"]))
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines += ["</table>", "</body></html>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
