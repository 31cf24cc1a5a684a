"""`python -m resnet_tf list-weights`: the registry, one entry per line."""

import json

from resnet_tf.cli import main
from resnet_tf.models.registry import list_weights


def test_list_weights_prints_one_line_per_entry_of_a_depth(capsys):
    assert main(["list-weights", "--depth", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [e.name for e in list_weights(50)]
    assert "torchvision:resnet50.IMAGENET1K_V2  (depth=50; top-1 80.858 %; resize 232 " \
           "bilinear, crop 224)" in lines


def test_list_weights_json_lines_round_trip_the_registry(capsys):
    # The spelling train.py's --help used before, `list_weights`, is accepted too.
    assert main(["list_weights", "--format", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in records] == [e.name for e in list_weights()]
    assert records[0]["preprocessing"]["crop"] == list_weights()[0].preprocessing.crop


def test_list_weights_unknown_depth_is_one_line(capsys):
    assert main(["list-weights", "--depth", "19"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "list-weights: error: Unknown depth. Received: --depth 19; expected one of 18, 34, "
        "50, 101, 152, 200, 20, 32, 44, 56, 110, 164, 1001."), err
