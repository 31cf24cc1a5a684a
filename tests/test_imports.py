"""The modules of resnet_tf import each other without a circle.

Every import of a resnet_tf module counts, at module level or inside a function: a
function-level import that dodges a circle is still a circle in the design. A package's
`__init__` importing its own submodules is how a package exposes them, not a circle.
"""

import ast
import pathlib

# Read from the files, not imported: the test needs no Keras.
ROOT = pathlib.Path(__file__).resolve().parents[1] / "resnet_tf"
PACKAGE = ROOT.name


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(name, source, modules, is_package=False):
    """The resnet_tf modules the code of module `name` imports, anywhere in it;
    `from package import submodule` names the submodule."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    found = {_owner(target, modules) for target in found}
    found.discard(None)
    found.discard(name)
    if is_package:  # a package exposing its own submodules
        found = {target for target in found if not target.startswith(name + ".")}
    return found


def _owner(target, modules):
    """The resnet_tf module an import name refers to (its longest known prefix)."""
    parts = target.split(".")
    if parts[0] != PACKAGE:
        return None
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def import_graph():
    """{module: set of resnet_tf modules it imports}."""
    modules = _modules()
    return {name: _imports(name, path.read_text(), modules, path.name == "__init__.py")
            for name, path in modules.items()}


def find_cycle(graph):
    """One circle of the graph as a list of modules (first repeated at the end), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_imports_inside_functions_and_of_submodules_count():
    modules = {f"{PACKAGE}.{m}" for m in ("a", "b", "c", "pkg", "pkg.d")}
    source = (f"import os\nfrom {PACKAGE} import a\n"
              f"def f():\n    from {PACKAGE}.pkg import d\n    import {PACKAGE}.b.x\n"
              f"class C:\n    def g(self):\n        from . import c\n")
    assert _imports(f"{PACKAGE}.e", source, modules) == {
        f"{PACKAGE}.a", f"{PACKAGE}.pkg.d", f"{PACKAGE}.b", f"{PACKAGE}.c"}


def test_a_package_importing_its_own_submodules_is_no_edge():
    modules = {PACKAGE, f"{PACKAGE}.models", f"{PACKAGE}.models.spec", f"{PACKAGE}.errors"}
    source = f"from {PACKAGE}.models.spec import X\nfrom {PACKAGE}.errors import E\n"
    assert _imports(f"{PACKAGE}.models", source, modules, is_package=True) == {
        f"{PACKAGE}.errors"}


def test_find_cycle_reports_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_resnet_tf():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)
