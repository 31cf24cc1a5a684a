"""The package's layers are a checked rule, not a promise (README, "Package layout")."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What `import resnet_tf` may load: the model layer and what `.keras` files need.
ALLOWED = ("resnet_tf", "resnet_tf.models", "resnet_tf.errors", "resnet_tf.files",
           "resnet_tf.schedules")


def _loaded_after(statement):
    code = (f"import sys\n{statement}\n"
            "import json; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('resnet_tf', 'tensorflow_datasets'))))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_resnet_tf_loads_only_the_model_layer():
    loaded = _loaded_after("import resnet_tf")
    assert "resnet_tf.models.resnet" in loaded
    stray = [m for m in loaded if not m.startswith(ALLOWED) or
             m.startswith(tuple(a + "_" for a in ALLOWED))]
    assert not stray, f"import resnet_tf also loaded {stray}"
    assert not any(m.startswith("tensorflow_datasets") for m in loaded)


def test_the_data_layer_does_not_load_tfds_or_the_layers_above_it():
    loaded = _loaded_after("import resnet_tf.data")
    assert not [m for m in loaded if m.startswith(("tensorflow_datasets", "resnet_tf.training",
                                                   "resnet_tf.export", "resnet_tf.evaluation",
                                                   "resnet_tf.cli"))]


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_import_contracts_hold():
    result = subprocess.run(["lint-imports"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"Contracts: [3-9] kept, 0 broken\.", result.stdout), result.stdout


def test_no_library_module_imports_the_command_line():
    offenders = []
    for folder, _, names in os.walk(os.path.join(ROOT, "resnet_tf")):
        if os.path.basename(folder) == "cli":
            continue
        for name in names:
            if name.endswith(".py") and name != "__main__.py":  # `python -m resnet_tf` is the CLI
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                if "resnet_tf.cli" in text or "import argparse" in text:
                    offenders.append(os.path.join(folder, name))
    assert not offenders, f"library modules that reach for the command line: {offenders}"
