"""mkdocs hooks: the parts of the docs that are generated, never typed.

- `<!-- readme -->` is replaced by README.md, so the front page has one owner.
- `<!-- weights-table -->` is the registry's table (`resnet_tf.models.registry.list_weights`).
- `<!-- recipes-table -->` is the recipes' table (`resnet_tf.training.recipes.RECIPES`).
- `<!-- results: NAME -->` renders `benchmarks/results/NAME.json`;
  `<!-- results-of: QUESTION ... -->` renders every result file of those questions that no
  `results:` marker names; `<!-- results-index -->` lists every file in benchmarks/results
  and renders the JSON files that no other marker shows, so a file added later appears.
- `{{ NAME | ROW | COLUMN }}` anywhere in a page's prose is one cell of
  `benchmarks/results/NAME.json`: the row holding every cell that ROW lists (joined by
  " & "; whole cells, or else cells that start with them), in the column named COLUMN;
  `{{ NAME | CAPTION | ROW | COLUMN }}` first picks the tables whose caption contains
  CAPTION. A figure in prose is therefore read from its
  result file, never typed: a reference that matches no cell, or more than one, fails the
  build. In a code span (after a backtick) it is left as it is.
- Repository files outside docs/ that pages link to (notebooks, benchmarks/results,
  benchmarks/README.md) are copied into the site at their repository paths, so a page
  links them as the README does and `mkdocs build --strict` checks those links too.

A result file (written by the benchmarks, or once from a study's report) holds:
{"title": str, "question": str ("speed", "pipeline", "serving", "accuracy", "tflite", ...),
 "command": str (reproduces it), "machine": str or null, "date": str or null,
 "tables": [{"caption": str, "columns": [str, ...], "rows": [[cell, ...], ...],
             "notes": str or null}], "notes": str (Markdown) or null}
"""

import glob
import json
import os
import re
import sys

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, InclusionLevel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = "benchmarks/results"
MIRRORED = ("notebooks/*.ipynb", "notebooks/*.py", "benchmarks/README.md", RESULTS_DIR + "/*")
SCHEMA_KEYS = {"title": str, "question": str, "command": str, "tables": list}
TABLE_KEYS = {"caption": str, "columns": list, "rows": list}

# A marker is a line of its own, so a page can quote one in a code span.
_README = re.compile(r"^<!-- readme -->$", re.M)
_WEIGHTS = re.compile(r"^<!-- weights-table -->$", re.M)
_RECIPES = re.compile(r"^<!-- recipes-table -->$", re.M)
_RESULT = re.compile(r"^<!-- results: ([\w.-]+) -->$", re.M)
_RESULTS_OF = re.compile(r"^<!-- results-of: ([\w -]+?) -->$", re.M)
_INDEX = re.compile(r"^<!-- results-index -->$", re.M)
# `{{ NAME | [CAPTION |] ROW | COLUMN }}`, not right after a backtick (a quoted one).
_REFERENCE = re.compile(r"(?<!`)\{\{([^{}]+)\}\}")
_NUMERIC = re.compile(r"^[*+\-−]*[\d][\d.,]*\s*(%|x|ms|s|min|KB|MB|h)?\**$")

# Which page shows each result file, filled in on_files from every page's markers.
_shown_on = {}
_questions_on = {}


class _RepoFile(File):
    """A repository file outside docs/ that pages link to, copied unchanged (never a page)."""

    def is_documentation_page(self):
        return False

    def is_static_page(self):
        return False


def on_files(files, config):
    for pattern in MIRRORED:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            if os.path.isfile(path):
                files.append(_RepoFile(os.path.relpath(path, ROOT).replace(os.sep, "/"), ROOT,
                                       config["site_dir"], config["use_directory_urls"],
                                       inclusion=InclusionLevel.NOT_IN_NAV))
    _shown_on.clear()
    _questions_on.clear()
    for file in files.documentation_pages():
        with open(file.abs_src_path, encoding="utf-8") as f:
            text = f.read()
        for name in _RESULT.findall(text):
            _shown_on[name] = file.src_uri
        for questions in _RESULTS_OF.findall(text):
            for question in questions.split():
                _questions_on[question] = file.src_uri
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = _README.sub(lambda m: _readme(), markdown)
    markdown = _WEIGHTS.sub(lambda m: weights_table(), markdown)
    markdown = _RECIPES.sub(lambda m: recipes_table(), markdown)
    depth = page.file.src_uri.count("/")
    markdown = _RESULT.sub(lambda m: render_result(_load(m.group(1)), m.group(1), depth), markdown)
    markdown = _RESULTS_OF.sub(lambda m: _render_questions(m.group(1).split(), depth), markdown)
    markdown = _INDEX.sub(lambda m: _results_index(depth), markdown)
    return _REFERENCE.sub(lambda m: cell_of(m.group(1), page.file.src_uri), markdown)


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    # The README links docs pages as docs/NAME.md; the site holds them at its root.
    return re.sub(r"\]\(docs/", "](", text)


def _document_this_checkout():
    """Imports `resnet_tf` from the checkout being built, not from an installed copy."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


# -- pretrained weights ------------------------------------------------------------------

def weights_table():
    """The registry as a Markdown table, one row per `list_weights()` entry."""
    _document_this_checkout()
    from resnet_tf.models.registry import IMAGENET_MEAN, IMAGENET_STD, list_weights

    def preprocessing(p):
        if p.mode == "caffe":
            parts = ["caffe BGR mean subtraction"]
        elif tuple(p.mean) == IMAGENET_MEAN and tuple(p.std) == IMAGENET_STD:
            parts = ["ImageNet mean/std"]
        else:
            parts = [f"mean {tuple(p.mean)} std {tuple(p.std)}"]
        if p.resize:
            parts.append(f"resize {p.resize}")
        parts.append(f"crop {p.crop}")
        if p.interpolation:
            parts.append(p.interpolation)
        return ", ".join(parts)

    lines = ["| name | source | licence | ImageNet top-1 (published) | preprocessing | build_resnet |",
             "|---|---|---|---:|---|---|"]
    for entry in list_weights():
        top1 = "—" if entry.top1 is None else f"{entry.top1:.2f} %"
        build = ", ".join(f"{key}={value!r}" for key, value in entry.build.items())
        lines.append(f"| `{entry.name}` | {entry.source} | {entry.licence} | {top1} | "
                     f"{preprocessing(entry.preprocessing)} | {build} |")
    return "\n".join(lines)


# -- recipes ---------------------------------------------------------------------------

def recipes_table():
    """`RECIPES` as a Markdown table: each recipe's own description and the values it sets."""
    _document_this_checkout()
    from resnet_tf.training.recipes import RECIPES

    def values(r):
        lr, wd = r["lr_wd"][r["optimizer"]]
        parts = [f"ResNet-{r['depth']}", f"{r['epochs']} epochs",
                 f"{r['optimizer']} lr {lr:g} per 256, wd {wd:g}",
                 f"{r['warmup_epochs']} warmup epoch{'s' if r['warmup_epochs'] != 1 else ''}",
                 f"label smoothing {r['label_smoothing']:g}", f"{r['loss']} loss",
                 f"augment {r['augment']}"]
        parts += [f"{name} {r[key]:g}" for key, name in (
            ("mixup", "MixUp"), ("cutmix", "CutMix"), ("random_erasing", "random erasing"),
            ("ema", "weight EMA")) if r[key]]
        if r["preset"] == "cifar":
            parts.append(f"pad-crop-flip, {r['crop_padding']} px padding")
        if r["train_size"]:
            parts.append(f"{r['train_size']} px training crops")
        if r["stem"]:
            parts.append(f"{r['stem']} stem")
        if r["tta"] != "none":
            parts.append(f"{r['tta']} TTA")
        return ", ".join(parts)

    lines = ["| recipe | what | values |", "|---|---|---|"]
    lines += [f"| `{name}` | {_cell(r['description'])} | {values(r)} |" for name, r in RECIPES.items()]
    return "\n".join(lines)


# -- result files ------------------------------------------------------------------------

def _result_names():
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(ROOT, RESULTS_DIR, "*.json")))


def _load(name):
    path = os.path.join(ROOT, RESULTS_DIR, name + ".json")
    where = f"{RESULTS_DIR}/{name}.json"
    if not os.path.isfile(path):
        raise PluginError(f"A page names a result file that does not exist. Received: {where}; "
                          f"expected one of {_result_names()}.")
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except ValueError as e:
        raise PluginError(f"{where} is not JSON: {e}.") from None
    _check(result, where)
    return result


def _check(result, where):
    def fail(what):
        raise PluginError(f"{where} does not follow the results schema: {what}.")

    if not isinstance(result, dict):
        fail(f"Received: {type(result).__name__}; expected an object")
    for key, kind in SCHEMA_KEYS.items():
        if not isinstance(result.get(key), kind):
            fail(f"Received: {key}={result.get(key)!r}; expected a {kind.__name__}")
    for key in ("machine", "date", "notes"):
        if result.get(key) is not None and not isinstance(result[key], str):
            fail(f"Received: {key}={result[key]!r}; expected a str or null")
    for i, table in enumerate(result["tables"]):
        for key, kind in TABLE_KEYS.items():
            if not isinstance(table, dict) or not isinstance(table.get(key), kind):
                fail(f"Received: tables[{i}].{key} missing or not a {kind.__name__}; expected one")
        width = len(table["columns"])
        for j, row in enumerate(table["rows"]):
            if not isinstance(row, list) or len(row) != width:
                fail(f"Received: tables[{i}].rows[{j}]={row!r}; expected a list of {width} cells")


def _plain(value):
    """A cell as prose reads it: no bold, no code quotes, no surrounding space."""
    return "" if value is None else str(value).replace("**", "").replace("`", "").strip()


def cell_of(reference, page="a page"):
    """The cell `NAME | [CAPTION |] ROW | COLUMN` names (see the module's docstring)."""
    quoted = "{{" + reference + "}}"
    parts = [part.strip() for part in reference.split("|")]
    if len(parts) not in (3, 4) or not all(parts):
        raise PluginError(f"{page}: a result reference has {len(parts)} parts. Received: "
                          f"{quoted}; expected {{{{ NAME | ROW | COLUMN }}}} or "
                          f"{{{{ NAME | CAPTION | ROW | COLUMN }}}}.")
    name, *caption, row_key, column = parts
    result = _load(name)
    wanted = [_plain(key) for key in row_key.split("&")]
    tables = [t for t in result["tables"] if not caption or caption[0] in t["caption"]]
    found = []
    for exact in (True, False):  # whole cells first, else cells that start with the keys
        for table in tables:
            if column in table["columns"]:
                j = table["columns"].index(column)
                found += [row[j] for row in table["rows"] if _holds(row, wanted, exact)]
        if found:
            break
    if len(found) != 1:
        columns = sorted({c for t in tables for c in t["columns"]})
        why = ("no table with that caption" if not tables else
               f"no column {column!r}; the columns are {columns}"
               if column not in columns else
               "no row holding every cell of ROW" if not found else
               f"{len(found)} cells (add the table's CAPTION, or more cells to ROW)")
        raise PluginError(f"{page}: a result reference matches {why}. Received: {quoted}; "
                          f"expected exactly one cell of {RESULTS_DIR}/{name}.json.")
    return _plain(found[0])


def _holds(row, keys, exact):
    cells = [_plain(v) for v in row]
    return all(any(c == key if exact else c.startswith(key) for c in cells) for key in keys)


def _cell(value):
    if value is None:
        return ""
    return str(value).replace("\n", " ").replace("|", "\\|")


def _table(table):
    columns = table["columns"]
    cells = [[_cell(v) for v in row] for row in table["rows"]]
    # Right-align a column whose every filled cell is a number (with %, x, ms, ... after it).
    right = [any(col) and all(_NUMERIC.match(v) for v in col if v) for col in zip(*cells)]
    right = right or [False] * len(columns)
    lines = [f"**{table['caption']}**", "",
             "| " + " | ".join(_cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    if table.get("notes"):
        lines += ["", table["notes"]]
    return "\n".join(lines)


def render_result(result, name, depth=0, heading=None):
    """One result file as Markdown: its tables, the command that reproduces them, its notes."""
    up = "../" * depth
    source = f"[`{name}.json`]({up}{RESULTS_DIR}/{name}.json)"
    facts = [f"Command: `{result['command']}`"]
    if result.get("machine"):
        facts.append(f"machine: {result['machine']}")
    if result.get("date"):
        facts.append(f"date: {result['date']}")
    parts = [heading] if heading else []
    parts += [_table(table) for table in result["tables"]]
    if result.get("notes"):
        parts.append(result["notes"])
    parts.append("; ".join(facts) + f" ({source}).")
    return "\n\n".join(parts) + "\n"


def _render_questions(questions, depth):
    of_questions = [n for n in _result_names() if _load(n)["question"] in questions]
    names = [n for n in of_questions if n not in _shown_on]
    if not of_questions:
        return (f"*No result file of question {', '.join(questions)} in `{RESULTS_DIR}/` yet: "
                f"the reports listed in the [results overview]({'../' * depth}results.md) hold "
                "the figures.*\n")
    return "\n".join(render_result(_load(n), n, depth, f"### {_load(n)['title']}") for n in names)


def _results_index(depth):
    up = "../" * depth
    lines = ["| file | what | shown on |", "|---|---|---|"]
    rest = []
    for path in sorted(glob.glob(os.path.join(ROOT, RESULTS_DIR, "*"))):
        base = os.path.basename(path)
        link = f"[`{base}`]({up}{RESULTS_DIR}/{base})"
        if base.endswith(".json"):
            name = base[:-5]
            result = _load(name)
            page = _shown_on.get(name) or _questions_on.get(result["question"])
            if page is None:
                rest.append(name)
                shown = "below"
            else:
                shown = f"[{page[:-3]}]({up}{page})"
            lines.append(f"| {link} | {_cell(result['title'])} ({result['question']}) | {shown} |")
        else:
            what = {".md": "report", ".csv": "table", ".png": "picture"}.get(
                os.path.splitext(base)[1], "file")
            lines.append(f"| {link} | {what} | |")
    text = "\n".join(lines) + "\n"
    for name in rest:
        text += "\n" + render_result(_load(name), name, depth, f"### {_load(name)['title']}")
    return text
