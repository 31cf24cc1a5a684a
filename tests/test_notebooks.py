"""The example notebooks in notebooks/: stored clean, in sync with their sources, and
each runs top to bottom.

Each notebook's source is the jupytext percent-format script paired with it
(01_quickstart.py for 01_quickstart.ipynb); the two must hold the same cells, outputs
aside. Every notebook is executed with nbclient in a fresh kernel of this interpreter,
with the notebooks folder as its working directory and the repository on PYTHONPATH, as
a user running it from a checkout would. Each one ends by printing its results; the tests check
those numbers, so a notebook that runs but no longer shows what it claims also fails.
"""

import difflib
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ("01_quickstart.ipynb", "02_transfer_learning.ipynb", "03_export_and_serve.ipynb")
CELL_TIMEOUT_S = 600
KERNEL = "resnet_tf_test_python"


def _load(name):
    with open(os.path.join(NOTEBOOKS, name), encoding="utf-8") as f:
        return json.load(f)


def _stem(name):
    return os.path.splitext(name)[0]


def test_every_notebook_is_tested():
    stored = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
    assert stored == sorted(NAMES)
    sources = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".py"))
    assert sources == sorted(_stem(n) + ".py" for n in NAMES), "every .ipynb needs its .py source"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = _load(name)
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    dirty = [i for i, cell in enumerate(code)
             if cell.get("outputs") or cell.get("execution_count") is not None]
    assert not dirty, f"{name}: code cells {dirty} carry outputs or execution counts"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def _cells(path):
    """`(cell type, source)` of every cell, as jupytext reads the file; outputs ignored."""
    import jupytext

    notebook = jupytext.read(path)
    return notebook, [(cell.cell_type, cell.source) for cell in notebook.cells]


def _sync_problem(py_path, ipynb_path):
    """None if the pair holds the same cells, else what differs and how to fix it."""
    source, source_cells = _cells(py_path)
    stored, stored_cells = _cells(ipynb_path)
    fix = (f"edit {os.path.basename(py_path)}, then run `jupytext --sync notebooks/*.py` "
           "(it takes the newer file of each pair as the source)")
    for notebook, path in ((source, py_path), (stored, ipynb_path)):
        formats = notebook.metadata.get("jupytext", {}).get("formats")
        if formats != "ipynb,py:percent":
            return (f"{os.path.basename(path)} is not paired (jupytext formats {formats!r}); "
                    f"run `jupytext --set-formats ipynb,py:percent {path}`")
    if source_cells == stored_cells:
        return None
    i = next((i for i, (a, b) in enumerate(zip(source_cells, stored_cells)) if a != b),
             min(len(source_cells), len(stored_cells)))
    new, old = (cells[i] if i < len(cells) else ("no cell", "")
                for cells in (source_cells, stored_cells))
    diff = "\n".join(difflib.unified_diff(
        old[1].splitlines(), new[1].splitlines(),
        f"{os.path.basename(ipynb_path)} cell {i} ({old[0]})",
        f"{os.path.basename(py_path)} cell {i} ({new[0]})", lineterm=""))
    return (f"{os.path.basename(ipynb_path)} is out of sync with {os.path.basename(py_path)} "
            f"({len(stored_cells)} vs {len(source_cells)} cells; first difference at cell {i}): "
            f"{fix}.\n{diff}")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_its_py_source(name):
    pytest.importorskip("jupytext")
    problem = _sync_problem(os.path.join(NOTEBOOKS, _stem(name) + ".py"),
                            os.path.join(NOTEBOOKS, name))
    assert problem is None, problem


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, the repo on PYTHONPATH, temp files under tmp_path.

    The notebooks write into `tempfile.mkdtemp()`, so TMPDIR keeps a run's files in
    tmp_path. A spec of our own avoids running a `python3` kernel installed for another
    interpreter.
    """
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (resnet_tf tests)",
        "language": "python",
    }))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        filter(None, [str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return temp


def _execute(name):
    """Runs the notebook in a fresh kernel; returns the text of all its outputs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                            resources={"metadata": {"path": NOTEBOOKS}})
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{str(error)[-4000:]}", pytrace=False)
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{name}: {output['ename']}"
            if output["output_type"] == "stream":
                texts.append(output["text"])
            elif "text/plain" in output.get("data", {}):
                texts.append(output["data"]["text/plain"])
    return "\n".join(texts)


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"no output matching {pattern!r}"
    return float(match.group(1))


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder)
                  for root, dirs, files in os.walk(folder) for f in files
                  if "__pycache__" not in root)


@pytest.fixture
def clean_notebooks_dir():
    """Running a notebook must not write into the repository."""
    before = _files(NOTEBOOKS)
    yield
    assert _files(NOTEBOOKS) == before


@pytest.mark.slow  # ~30 s of training in a kernel; sync and output checks stay in the default run
def test_quickstart_trains_and_evaluates(kernel_env, clean_notebooks_dir):
    text = _execute("01_quickstart.ipynb")
    assert re.search(r"ResNet-50\s+25,557,032\s", text)  # torchvision's count
    # Four classes: chance is 0.25.
    assert _number(r"Test top-1 accuracy: (\d\.\d+)", text) > 0.4
    assert any(n.startswith("resnet_tf_quickstart_") for n in os.listdir(kernel_env))


@pytest.mark.slow  # ~80 s: fine-tuning runs there; `-m slow` executes it
def test_transfer_learning_improves_on_the_new_head(kernel_env, clean_notebooks_dir):
    text = _execute("02_transfer_learning.ipynb")
    before = _number(r"before training\s+validation accuracy (\d\.\d+)", text)
    head = _number(r"new head, frozen base\s+validation accuracy (\d\.\d+)", text)
    fine_tuned = _number(r"fine-tuned\s+validation accuracy (\d\.\d+)", text)
    assert "BatchNorm moving statistics unchanged." in text
    assert head > before + 0.1
    assert fine_tuned > 0.5


@pytest.mark.slow  # ~30 s; the export itself is tested in tests/export
def test_export_and_serve_matches_keras(kernel_env, clean_notebooks_dir):
    text = _execute("03_export_and_serve.ipynb")
    assert _number(r"Largest difference, SavedModel vs Keras: (\S+)", text) < 1e-4
    # A JPEG's first bytes, FF D8 FF, in base64.
    assert '"instances": [{"image_bytes": {"b64": "/9j/' in text
    assert '{"predictions": [' in text
    assert _number(r"predict the same class for (\d+\.\d)%", text) >= 80
    assert _number(r"SavedModel top-1 accuracy: (\d\.\d+)", text) > 0.4


def test_the_notebooks_pattern_folders_are_reproducible(tmp_path):
    from PIL import Image

    from resnet_tf.data import DataError, list_image_folder
    from resnet_tf.data.patterns import make_pattern_folder

    first = make_pattern_folder(str(tmp_path / "a"), ["disc", "ring"], per_class=3, size=12, seed=4)
    make_pattern_folder(str(tmp_path / "b"), ["disc", "ring"], per_class=3, size=12, seed=4)
    files, labels, class_names = list_image_folder(first)
    assert class_names == ["disc", "ring"] and list(labels) == [0, 0, 0, 1, 1, 1]
    assert Image.open(files[0]).size == (12, 12)
    for path in files:
        again = path.replace(str(tmp_path / "a"), str(tmp_path / "b"))
        assert open(path, "rb").read() == open(again, "rb").read()
    with pytest.raises(DataError, match="Received: name='star'"):
        make_pattern_folder(str(tmp_path / "c"), ["star"], per_class=1)
