"""Kill -9 at each named moment of a run's life; the rerun must end with exactly one
complete run: every finished epoch kept, one history row per epoch, one export version,
no leftovers.

`RESNET_TF_KILL_AT` makes the trainer SIGKILL itself at the named point
(`resnet_tf.files.fault_point`), which is what `kill -9` at that instant would do.
"""

import json
import os

import pytest
from conftest import run_train

ARGS = ["--epochs", "2", "--batch-size", "8", "--precision", "float32"]
POINTS = [
    "mid epoch 2",
    "writing last.keras",
    "writing latest.weights.h5",
    "final evaluation",
    "before complete",
    "after export",
]
SLOW_POINTS = {"writing latest.weights.h5", "before complete", "final evaluation",
               "writing last.keras"}


@pytest.fixture(scope="module")
def images(image_folder_factory):
    return image_folder_factory(per_class=12, size=8)


def _leftovers(out):
    found = []
    for root, dirs, names in os.walk(out):
        for name in dirs + names:
            if name.startswith((".tmp", ".last.", ".best.", ".latest.", ".history.",
                                ".config.", ".metrics.", ".curves.", ".training_metadata.")):
                found.append(os.path.join(root, name))
    return found


@pytest.mark.parametrize("point", [pytest.param(p, marks=[pytest.mark.slow] if p in SLOW_POINTS
                                                else []) for p in POINTS])
def test_killed_run_resumes_to_exactly_one_complete_run(images, tmp_path, point):
    out = tmp_path / "run"
    killed = run_train("--data-dir", images, *ARGS, "--out", out, RESNET_TF_KILL_AT=point)
    assert killed.returncode == -9, (point, killed.stderr[-2000:])
    rerun = run_train("--data-dir", images, *ARGS, "--out", out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    assert json.loads((out / "config.json").read_text())["status"] == "complete"
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert os.listdir(out / "export" / "resnet20") == ["1"]
    assert not (out / "backup").exists()
    assert not _leftovers(out), _leftovers(out)
