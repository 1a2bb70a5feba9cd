"""The wheel check imports an explicit module list; it must name every module we ship."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {
    "core": "geoshard",
    "cluster": "geoshard.cluster",
    "shards": "geoshard.shards",
    "regions": "geoshard.regions",
    "storage": "geoshard.storage",
    "sim": "geoshard.sim",
    "cli": "geoshard.cli",
}


def _source_modules() -> set[str]:
    found = set()
    for folder, package in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.add(".".join([package, *parts]))
    return found


def test_wheel_module_list_matches_the_source_tree() -> None:
    listed = set((REPO / "scripts" / "wheel-modules.txt").read_text().split())
    source = _source_modules()
    assert not source - listed, f"add to scripts/wheel-modules.txt: {sorted(source - listed)}"
    assert not listed - source, f"remove from scripts/wheel-modules.txt: {sorted(listed - source)}"


def test_package_dir_maps_every_root_folder() -> None:
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = cfg["tool"]["setuptools"]["package-dir"]
    assert mapping == {v: k for k, v in ROOTS.items()}
    assert "packages" not in cfg["tool"]["setuptools"], "a packages list drops new subpackages"
