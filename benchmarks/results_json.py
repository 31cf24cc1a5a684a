"""The result files in benchmarks/results/: one JSON document per question and machine.

Every script that is re-run writes its result through `write`, in the schema the docs
site renders (each `results/*.json` becomes a page):

    {"title": str, "question": "speed" | "pipeline" | "serving" | "accuracy" | "tflite",
     "command": str (reproduces it), "machine": str or null, "date": str or null,
     "tables": [{"caption": str, "columns": [str, ...], "rows": [[cell, ...], ...],
                 "notes": str (markdown) or null}],
     "notes": str (markdown) or null}

Scripts whose report is markdown text (run.py, cpu_configs.py) hand it to
`from_markdown`, which keeps every table as rows and every sentence as notes.
"""

import datetime
import json
import os
import platform
import re
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
QUESTIONS = ("speed", "pipeline", "serving", "accuracy", "tflite")


def table(caption, columns, rows, notes=None):
    """One table: `rows` are lists of cells (str or numbers), as many as `columns`."""
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    bad = [r for r in rows if len(r) != len(columns)]
    if bad:
        raise ValueError(f"Every row needs {len(columns)} cells ({columns}). Received: {bad[0]}")
    return {"caption": caption, "columns": columns, "rows": rows, "notes": notes or None}


def result(title, question, command, tables, notes=None, machine=None, date=None):
    """A result document; `question` is one of `QUESTIONS`."""
    if question not in QUESTIONS:
        raise ValueError(f"Unknown question. Received: question={question!r}; expected one of {QUESTIONS}")
    return {"title": title, "question": question, "command": command, "machine": machine,
            "date": date, "tables": list(tables), "notes": notes or None}


def dumps(document):
    """Indented JSON with one table row per line, so that a re-run's diff reads by row."""
    def one(value):
        return json.dumps(value, ensure_ascii=False)

    def tab(t):
        rows = ",\n".join(f"    {one(r)}" for r in t["rows"])
        return (f'  {{"caption": {one(t["caption"])},\n   "columns": {one(t["columns"])},\n'
                f'   "rows": [\n{rows}\n   ],\n   "notes": {one(t["notes"])}}}')

    head = ",\n".join(f" {one(k)}: {one(v)}" for k, v in document.items() if k not in ("tables", "notes"))
    tables = ",\n".join(tab(t) for t in document["tables"])
    text = f'{{\n{head},\n "tables": [\n{tables}\n ],\n "notes": {one(document["notes"])}\n}}\n'
    assert json.loads(text) == document
    return text


def write(path, document):
    """Writes `document` (from `result`) as JSON; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps(document))
    return path


def command_line():
    """How this process was started, as a command to paste."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(HERE))
    return shlex.join(["python", script, *sys.argv[1:]])


def today():
    return datetime.date.today().isoformat()


def cpu_model():
    """lscpu's model name (/proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(kind=None):
    """`"<lscpu model>, <cores> cores (<machine kind>)"`; the kind as resnet_tf's CPU
    tuning names it (ONEDNN_MAX_CPU_ISA counts) unless given."""
    if kind is None:
        from resnet_tf.training.cpu_tuning import choose_cpu_config

        kind = choose_cpu_config(table=False)["kind"]
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores ({kind})"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- markdown reports -------------------------------------------------------------------


def _cells(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def _blocks(text):
    """Splits markdown into ("table", lines) and ("text", lines) blocks, headings as their
    own ("heading", level, text) blocks."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(("table", lines[i:j]))
            i = j
        elif re.match(r"#{1,6} ", line):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(("heading", level, line[level:].strip()))
            i += 1
        else:
            if blocks and blocks[-1][0] == "text":
                blocks[-1][1].append(line)
            else:
                blocks.append(("text", [line]))
            i += 1
    return blocks


def _join(parts):
    text = "\n\n".join(p.strip("\n") for p in parts if p and p.strip())
    return text or None


def from_markdown(text, title=None):
    """`(title, tables, notes)` of a markdown report, every table cell and sentence kept.

    A table's caption is the heading above it (or the bold opening of the paragraph
    right before it, or `title`); its notes are the text under that heading before the
    table and the text after the table up to the next table's heading. Text before the
    first of those headings is the document's notes; a leading `#` heading is the title.
    """
    blocks = _blocks(text)
    if blocks and blocks[0][0] == "heading" and blocks[0][1] == 1:
        title = blocks.pop(0)[2]
    tables_at = [i for i, b in enumerate(blocks) if b[0] == "table"]
    tables, notes, start = [], [], 0
    for at in tables_at:
        # The caption: the last heading between the previous table and this one.
        heads = [i for i in range(start, at) if blocks[i][0] == "heading"]
        before = blocks[start:at]
        if heads:
            head = heads[-1]
            caption = blocks[head][2]
            trailing, preface = blocks[start:head], blocks[head + 1:at]
            if preface and preface[-1][0] == "text":
                last = "\n".join(preface[-1][1]).strip().split("\n\n")[-1]
                bold = re.match(r"\*\*(.+?)\*\*", last)
                if bold:
                    caption = f"{caption}: {bold.group(1)}"
        else:
            caption, trailing, preface = None, before, []
            last = before[-1] if before else None
            if last and last[0] == "text":
                paragraphs = "\n".join(last[1]).strip().split("\n\n")
                bold = re.match(r"\*\*(.+?)\*\*", paragraphs[-1].strip())
                if bold:
                    caption = bold.group(1)
                    trailing = before[:-1] + [("text", "\n\n".join(paragraphs[:-1]).splitlines())]
                    preface = [("text", paragraphs[-1].splitlines())]
            if caption is None:
                caption = tables[-1]["caption"] if tables else (title or "")
        rendered = [_render(b) for b in trailing]
        if tables:
            tables[-1]["notes"] = _join([tables[-1]["notes"], *rendered])
        else:
            notes.extend(rendered)
        lines = blocks[at][1]
        columns = _cells(lines[0])
        rows = [_cells(line) for line in lines[2:]]
        tables.append(table(caption, columns, rows, _join([_render(b) for b in preface])))
        start = at + 1
    rest = [_render(b) for b in blocks[start:]]
    if tables:
        tables[-1]["notes"] = _join([tables[-1]["notes"], *rest])
    else:
        notes.extend(rest)
    return title, tables, _join(notes)


def _render(block):
    if block[0] == "heading":
        return "#" * max(block[1], 3) + " " + block[2]
    return "\n".join(block[1])


def split_sections(text, prefix="## Machine kind: "):
    """`(preamble, {section name: text})` of a report with one section per machine kind;
    the sections' own headings move up one level."""
    parts = re.split(rf"^{re.escape(prefix)}(.*)$", text, flags=re.M)
    sections = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name.strip()] = re.sub(r"^#(#+ )", r"\1", body, flags=re.M)
    return parts[0], sections
