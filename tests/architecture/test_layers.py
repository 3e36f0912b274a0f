"""The package's layers, read from the code's own imports (function-level ones included).

A package imports only from the layers below it, and from itself; nothing imports
``recallseg.commands`` but the entry points. docs/architecture.md describes the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recallseg"

# Bottom to top; packages on one line may not import each other.
LAYERS = [
    {"errors"},
    {"atomic_files"},
    {"config"},
    {"runtime", "data", "models", "losses"},
    {"pipeline", "checkpoints"},
    {"evaluation"},
    {"training"},
    {"commands"},
]
MAX_LINES = 300
MAX_MODULES_PER_FOLDER = 12


def layer_of(part: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if part in names)


def part_of(module: str) -> str | None:
    """``recallseg.losses.recall`` -> ``losses``; None outside recallseg or for the package root."""
    pieces = module.split(".")
    if pieces[0] != "recallseg" or len(pieces) < 2:
        return None
    return pieces[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every recallseg module ``path`` imports, at any depth of the file, relative ones resolved."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # ``from pkg import module``
    return {name for name in found if name.startswith("recallseg")}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "configs" not in p.parts)


def upward_edges() -> list[str]:
    edges = []
    for path in modules():
        source = part_of(module_name(path))
        if source is None:
            continue
        for target in imports_of(path):
            goal = part_of(target)
            if goal is None or goal == source or goal not in set().union(*LAYERS):
                continue
            if layer_of(goal) >= layer_of(source):
                edges.append(f"{module_name(path)} -> {target}")
    return sorted(edges)


def test_every_import_goes_down_the_layers():
    assert upward_edges() == []


def test_there_are_no_import_circles_between_modules():
    graph = {module_name(p): {t for t in imports_of(p) if t in {module_name(q) for q in modules()}} for p in modules()}
    visiting, done, circles = set(), set(), []

    def visit(node, trail):
        visiting.add(node)
        for target in graph.get(node, ()):
            if target in visiting:
                circles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else f"{node} -> {target}")
            elif target not in done:
                visit(target, trail + [target])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        if node not in done:
            visit(node, [node])
    # a package's __init__ importing its own modules is not a circle of code
    assert [c for c in circles if not all(part.count(".") <= 1 for part in c.split(" -> "))] == []


def test_every_package_has_its_place_in_the_layers():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"configs"}
    modules_at_root = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert packages | modules_at_root <= set().union(*LAYERS)


def test_no_module_is_longer_than_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_folder_holds_more_than_12_modules():
    folders = {p.parent for p in modules()}
    crowded = {str(f.relative_to(PACKAGE.parent)): n for f in folders if (n := len([p for p in f.glob("*.py") if p.name != "__init__.py"])) > MAX_MODULES_PER_FOLDER}
    assert crowded == {}


@pytest.mark.parametrize("entry", ["train.py", "evaluate.py"])
def test_the_entry_points_are_a_few_lines_over_commands(entry):
    text = (PACKAGE.parent / entry).read_text()
    assert "from recallseg.commands" in text and len(text.splitlines()) <= 8


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a loss that imports the trainer is an upward edge."""
    fake = tmp_path / "recallseg"
    (fake / "losses").mkdir(parents=True)
    (fake / "losses" / "bad.py").write_text("def f():\n    from recallseg.training.trainer import Trainer\n")
    (fake / "losses" / "__init__.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_edges() == ["recallseg.losses.bad -> recallseg.training.trainer", "recallseg.losses.bad -> recallseg.training.trainer.Trainer"]
