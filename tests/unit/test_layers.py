"""Layers import downwards only (docs: ARCHITECTURE.md, "Layers").

Every ``import`` and ``from ... import`` in the package's source counts, at module level
or inside a function (a lazy import is still a dependency), relative imports resolved.
A module may import its own layer or a lower one; an import of a higher layer fails the
test, naming the file, the line and both layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {
    "core": "geoshard",
    "regions": "geoshard.regions",
    "shards": "geoshard.shards",
    "cluster": "geoshard.cluster",
    "storage": "geoshard.storage",
    "sim": "geoshard.sim",
    "cli": "geoshard.cli",
}

# (layer number, name, module prefixes); the longest matching prefix decides
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "spec/errors/keys", ("geoshard", "geoshard.spec", "geoshard.errors", "geoshard.keys")),
    (1, "pure logic", ("geoshard.regions", "geoshard.shards", "geoshard.cluster.routing")),
    (2, "storage", ("geoshard.storage",)),
    (3, "sim and cluster", ("geoshard.sim", "geoshard.cluster")),
    (4, "cli", ("geoshard.cli",)),
]


def layer_of(module: str) -> tuple[int, str]:
    """The layer of a ``geoshard`` module: the one with the longest matching prefix."""
    best: tuple[int, int, str] | None = None
    for number, name, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), number, name)
    if best is None:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS")
    return best[1], best[2]


def source_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found: dict[str, Path] = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [
                p for p in path.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"
            ]
            found[".".join([package, *parts])] = path
    return found


def imported_modules(
    module: str, is_package: bool, source: str, known: set[str]
) -> list[tuple[int, str]]:
    """``(line, module)`` for every geoshard module that ``source`` imports."""
    out: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "geoshard"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "geoshard":
                continue
            for a in node.names:  # `from geoshard.sim import report` imports a module
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if sub in known else target))
    return out


def upward_imports(modules: dict[str, Path], sources: dict[str, str]) -> list[str]:
    """One line per import of a higher layer."""
    known = set(modules)
    problems = []
    for module, path in modules.items():
        mine, my_name = layer_of(module)
        for line, target in imported_modules(
            module, path.name == "__init__.py", sources[module], known
        ):
            theirs, their_name = layer_of(target)
            if theirs > mine:
                rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                problems.append(
                    f"{rel}:{line}: {module} (layer {mine}, {my_name}) imports "
                    f"{target} (layer {theirs}, {their_name})"
                )
    return problems


def test_every_import_goes_downwards() -> None:
    modules = source_modules()
    sources = {m: p.read_text(encoding="utf-8") for m, p in modules.items()}
    problems = upward_imports(modules, sources)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_every_module_has_a_layer() -> None:
    for module in source_modules():
        layer_of(module)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "geoshard.spec",
            "def f():\n    from geoshard.cli import main\n",
            "core/spec.py:2: geoshard.spec (layer 0, spec/errors/keys) imports geoshard.cli (layer 4, cli)",
        ),
        (
            "geoshard.sim.run",
            "from ..cli import main\n",
            "geoshard.sim.run (layer 3, sim and cluster) imports geoshard.cli (layer 4, cli)",
        ),
        (
            "geoshard.cluster.routing",
            "import geoshard.storage.base\n",
            "imports geoshard.storage.base (layer 2, storage)",
        ),
        (
            "geoshard.storage.caches",
            "from geoshard.sim import report\n",
            "imports geoshard.sim.report (layer 3, sim and cluster)",
        ),
    ],
)
def test_an_upward_import_is_reported_with_its_place(
    module: str, source: str, expected: str
) -> None:
    modules = source_modules()
    sources = dict.fromkeys(modules, "")
    sources[module] = source
    problems = upward_imports(modules, sources)
    assert len(problems) == 1 and expected in problems[0], problems


def test_downward_and_same_layer_imports_pass() -> None:
    modules = source_modules()
    sources = dict.fromkeys(modules, "")
    sources["geoshard.cli.app"] = "from geoshard.sim.run import simulate_spec\n"
    sources["geoshard.sim.engine"] = "from geoshard.cluster.routing import Router\n"
    sources["geoshard.cluster.routing"] = "from geoshard.shards import HashRing\n"
    assert upward_imports(modules, sources) == []
