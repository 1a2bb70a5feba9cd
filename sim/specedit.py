"""Writing a planned spec back: the input's own text with only the planned values changed.

A capacity plan is reviewed as a diff, so the chosen spec keeps the input file's
comments, order and layout: :func:`planned_text` finds each changed value in the YAML
node graph (its exact character span) and replaces it there. When a value is not
written in the input (a default such as ``workers``), the whole spec is written out
instead (valid YAML, comments lost) and the caller is told. Either way the text is parsed
back and must give exactly the planned spec.

Examples:
    >>> text = "a: {servers: 4, workers: 8}  # keep me\\n"
    >>> _replace_scalars(text, {("a", "servers"): "6"})
    'a: {servers: 6, workers: 8}  # keep me\\n'
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from geoshard.spec import Spec, parse_spec

__all__ = ["diff", "planned_text"]

Path_ = tuple[str, ...]


def _changes(old: Spec, new: Spec) -> dict[Path_, str]:
    out: dict[Path_, str] = {}
    for r, a in old.regions.items():
        b = new.regions[r]
        for tier, fields in (
            ("api", ("servers", "workers")),
            ("warm", ("nodes", "workers")),
            ("hot", ("nodes", "workers")),
        ):
            for f in fields:
                va, vb = getattr(getattr(a, tier), f), getattr(getattr(b, tier), f)
                if va != vb:
                    out[("regions", r, tier, f)] = str(vb)
    for level in ("l1", "l2", "regional"):
        la, lb = getattr(old.caches, level), getattr(new.caches, level)
        if la is None or lb is None:
            continue
        for f in ("capacity_items", "capacity_bytes"):
            va, vb = getattr(la, f), getattr(lb, f)
            if va != vb and vb is not None:
                out[("caches", level, f)] = str(vb)
    return out


def _find(node: Any, path: Path_) -> yaml.ScalarNode | None:
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        nxt = None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                nxt = v
        if nxt is None:
            return None
        node = nxt
    return node if isinstance(node, yaml.ScalarNode) else None


def _replace_scalars(text: str, changes: dict[Path_, str]) -> str | None:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    spans = []
    for path, value in changes.items():
        node = _find(root, path)
        if node is None:
            return None
        spans.append((node.start_mark.index, node.end_mark.index, value))
    out = text
    for a, b, value in sorted(spans, reverse=True):
        out = out[:a] + value + out[b:]
    return out


def planned_text(input_text: str, old: Spec, new: Spec, source: str = "<plan>") -> tuple[str, bool]:
    """The planned spec as YAML: ``(text, in_place)``.

    ``in_place`` is True when the input's text was edited value by value (comments kept),
    False when the spec had to be written out whole.

    Raises:
        ValueError: the text does not parse back to ``new`` (a bug; never written).
    """
    changes = _changes(old, new)
    text: str | None = None
    try:
        text = _replace_scalars(input_text, changes)
        if text is not None and parse_spec(text, source).model_dump() != new.model_dump():
            text = None
    except yaml.YAMLError:
        text = None
    in_place = text is not None
    if text is None:
        text = yaml.safe_dump(
            new.model_dump(mode="json", exclude_none=True),
            sort_keys=False,
            default_flow_style=False,
            width=100,
        )
        if parse_spec(text, source).model_dump() != new.model_dump():
            raise ValueError("the planned spec does not read back as planned")
    return text, in_place


def diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified diff of two texts (empty when equal)."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=before_name,
            tofile=after_name,
        )
    )
