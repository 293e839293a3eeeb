"""The package's layout: imports flow one way, as docs/architecture.md says.

The architecture page's table orders the modules; a module may import only
modules listed above it. The imports are read from the source with `ast`
(module level and inside functions alike), so a lazy import counts too.
"""

import ast
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
PACKAGE = os.path.join(ROOT, "aradals_tf")
PAGE = os.path.join(ROOT, "docs", "architecture.md")


def _documented_order():
    text = open(PAGE).read()
    table = text.split("<!-- module-order -->")[1].split("<!-- /module-order -->")[0]
    return re.findall(r"^\| *\d+ *\| `([\w.]+)` \|", table, flags=re.M)


def _modules():
    """Dotted names (without `aradals_tf.`) of every module of the package."""
    names = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            relative = os.path.relpath(os.path.join(folder, file), PACKAGE)[: -len(".py")]
            parts = relative.split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names[".".join(parts)] = os.path.join(folder, file)
    return names


def _imports(path, modules):
    """The package modules a file imports (`from aradals_tf.x import name`
    counts as importing `x.name` when that is a module, else `x`)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [
                t if t.removeprefix("aradals_tf.") in modules else node.module for t in targets
            ]
        else:
            continue
        for target in targets:
            if target == "aradals_tf" or target.startswith("aradals_tf."):
                found.add(target.removeprefix("aradals_tf").lstrip("."))
    return found - {""}


def test_every_module_is_on_the_architecture_page():
    order = _documented_order()
    assert len(order) == len(set(order))
    assert set(order) == set(_modules()) - {""}


def test_imports_flow_one_way():
    order = _documented_order()
    modules = _modules()
    rank = {name: index for index, name in enumerate(order)}
    violations = []
    for name in order:
        for imported in _imports(modules[name], modules):
            if rank[imported] >= rank[name]:
                violations.append(f"{name} imports {imported}, which is not above it")
    assert not violations, violations


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader is not blind: it finds an upward import in a file."""
    path = tmp_path / "module.py"
    path.write_text(
        "def f():\n    from aradals_tf.experiments import train\n    import aradals_tf.cli\n"
    )
    assert _imports(str(path), _modules()) == {"experiments.train", "cli"}


def test_no_module_over_500_lines():
    long = {
        name: count
        for name, path in _modules().items()
        if (count := sum(1 for _ in open(path))) > 500
    }
    assert not long, long
