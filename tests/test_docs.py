"""The docs' generated parts (docs/hooks.py): a figure in a page's prose is a cell of a
result file, read when the site is built, and the recipes' table is `RECIPES` itself."""

import glob
import importlib.util
import json
import os
import re

import pytest

pytest.importorskip("mkdocs")
from mkdocs.exceptions import PluginError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [
    os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")]


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", os.path.join(ROOT, "docs", "hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def results(hooks, tmp_path, monkeypatch):
    """A results folder of one file, `speed`, with two tables."""
    monkeypatch.setattr(hooks, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "benchmarks" / "results")
    document = {"title": "t", "question": "speed", "command": "python x.py", "tables": [
        {"caption": "Training", "columns": ["network", "precision", "ratio"], "rows": [
            ["ResNet-50 @224", "float32", "1.20x"],
            ["ResNet-50 @224", "mixed_bfloat16 (auto)", "**1.54x**"],
            ["`ResNet-20`", "float32", "1.14x"]]},
        {"caption": "Inference", "columns": ["network", "ratio"], "rows": [
            ["ResNet-50 @224", "0.98x"]]}]}
    with open(tmp_path / "benchmarks" / "results" / "speed.json", "w") as f:
        json.dump(document, f)
    return hooks


def test_a_reference_is_the_one_cell_it_names(results):
    assert results.cell_of(" speed | ResNet-50 @224 & float32 | ratio ") == "1.20x"
    # Bold and code quotes are the table's, not the prose's; a key may be a cell's start.
    assert results.cell_of("speed | ResNet-50 @224 & mixed | ratio") == "1.54x"
    assert results.cell_of("speed | `ResNet-20` | ratio") == "1.14x"
    assert results.cell_of("speed | Inference | ResNet-50 @224 | ratio") == "0.98x"


def test_the_page_gets_the_cell_in_place_of_the_reference_and_a_quoted_one_stays(results):
    class Page:
        class file:
            src_uri = "speed.md"

    text = ("ResNet-50 trains at {{ speed | ResNet-50 @224 & float32 | ratio }} its speed; "
            "write `{{ NAME | ROW | COLUMN }}`.")
    assert results.on_page_markdown(text, Page, {}, None) == (
        "ResNet-50 trains at 1.20x its speed; write `{{ NAME | ROW | COLUMN }}`.")


@pytest.mark.parametrize("reference, expected", [
    ("speed | ResNet-50 @224 | ratio", "matches 3 cells (add the table's CAPTION"),
    ("speed | ResNet-50 @224 & float32 | speed-up",
     "no column 'speed-up'; the columns are ['network', 'precision', 'ratio']"),
    ("speed | ResNet-18 | ratio", "no row holding every cell of ROW"),
    ("speed | Serving | ResNet-50 @224 | ratio", "no table with that caption"),
    ("speed | ratio", "has 2 parts"),
    ("nothing | ResNet-50 @224 | ratio", "names a result file that does not exist"),
])
def test_a_reference_that_is_not_exactly_one_cell_fails_the_build(results, reference, expected):
    with pytest.raises(PluginError, match=re.escape(expected)) as error:
        results.cell_of(reference, "speed.md")
    assert "\n" not in str(error.value)


def test_every_reference_in_the_docs_is_one_cell(hooks):
    count = 0
    for page in PAGES:
        with open(page, encoding="utf-8") as f:
            for match in hooks._REFERENCE.finditer(f.read()):
                assert hooks.cell_of(match.group(1), os.path.basename(page))
                count += 1
    assert count > 50  # speed.md and accuracy.md read their figures this way


# A measured figure reads like these: a decimal with % or x. The ones below are not
# results: the issues' targets and published figures.
_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+\s?(?:%|x\b)")
_NOT_RESULTS = {"89.0 %", "91.25 %", "1.5x", "0.8x", "1.0x"}


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_no_page_types_a_measured_figure(page):
    with open(page, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    typed = []
    for number, line in enumerate(text.split("\n"), 1):
        prose = re.sub(r"\{\{.*?\}\}|`[^`]*`|\]\([^)]*\)|<!--.*?-->", "", line)
        typed += [f"line {number}: {figure}" for figure in _FIGURE.findall(prose)
                  if figure not in _NOT_RESULTS]
    assert not typed, f"{os.path.basename(page)} types figures a result file owns: {typed}"


def test_the_recipes_table_is_the_recipes(hooks):
    from resnet_tf.training.recipes import RECIPES

    table = hooks.recipes_table().split("\n")
    assert [line.split("|")[1].strip() for line in table[2:]] == [f"`{n}`" for n in RECIPES]
    row = dict(zip(RECIPES, table[2:]))["torchvision-v2"]
    assert "augment trivialaugment" in row and "176 px training crops" in row
    with open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8") as f:
        assert "<!-- recipes-table -->" in f.read().split("\n")
