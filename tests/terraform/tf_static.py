"""Static checks over the Terraform code in ``terraform/``, with no terraform binary.

The rules tflint's ``terraform_documented_variables`` / ``terraform_typed_variables`` /
``terraform_documented_outputs`` enforce, plus two of our own that checkov misses: no
ingress rule opens the Redis port (6379) to the world, and every inline checkov skip
carries a reason. A small HCL block scanner (strings, heredocs and comments masked, braces
matched) is enough for that, so this needs only the standard library.

Run alone (``scripts/terraform-checks`` does)::

    python3 tests/terraform/tf_static.py terraform

Exit status 0 when every check passes, 1 otherwise, one problem a line on stdout.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Block",
    "attributes",
    "checkov_skips_without_reason",
    "iter_blocks",
    "nested_blocks",
    "outputs_without_description",
    "variables_without_description_or_type",
    "world_open_ingress",
]

REDIS_PORT = 6379
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
_IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_SKIP = re.compile(r"#\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::(?P<reason>.*))?")


@dataclass(frozen=True)
class Block:
    """One HCL block: ``kind "label" ... { body }``, with its file and first line."""

    kind: str
    labels: tuple[str, ...]
    body: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        """``file:line kind.label.label`` for messages."""
        return f"{self.path}:{self.line} {'.'.join((self.kind, *self.labels))}"


def _mask(text: str) -> str:
    """``text`` with comments and string/heredoc contents blanked, same length and lines.

    Braces that remain are structural, so blocks can be matched by counting them.
    """
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif text.startswith("<<", i) and (m := re.match(r"<<-?([A-Za-z_]+)\n", text[i:])):
            end = re.compile(rf"^\s*{m.group(1)}\s*$", re.MULTILINE)
            e = end.search(text, i + m.end())
            j = n if e is None else e.end()
            blank(i + 2, j)
            i = j
        elif c == '"':
            j = _string_end(text, i)
            blank(i + 1, j - 1)
            i = j
        else:
            i += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal opening at ``start`` (handles ``${...}``)."""
    i, depth = start + 1, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if depth == 0 and c == '"':
            return i + 1
        if text.startswith("${", i) or text.startswith("%{", i):
            depth += 1
            i += 2
            continue
        if depth and c == '"':
            i = _string_end(text, i)
            continue
        if depth and c == "{":
            depth += 1
        elif depth and c == "}":
            depth -= 1
        i += 1
    return len(text)


def _close(masked: str, open_at: int) -> int:
    """Index of the brace closing the one at ``open_at`` in masked text."""
    depth = 0
    for k in range(open_at, len(masked)):
        if masked[k] == "{":
            depth += 1
        elif masked[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    raise ValueError(f"unbalanced braces after offset {open_at}")


_HEADER = re.compile(rf'^[ \t]*({_IDENT})((?:[ \t]+"[^"\n]*")*)[ \t]*\{{', re.MULTILINE)


def _top_level(text: str, masked: str) -> list[tuple[str, tuple[str, ...], str, int]]:
    """Blocks at nesting depth 0 of ``text``: (kind, labels, body, offset)."""
    found: list[tuple[str, tuple[str, ...], str, int]] = []
    pos = 0
    while True:
        m = _HEADER.search(masked, pos)
        if m is None:
            return found
        if masked[: m.start()].count("{") != masked[: m.start()].count("}"):
            pos = m.end()
            continue
        open_at = m.end() - 1
        close_at = _close(masked, open_at)
        labels = tuple(re.findall(r'"([^"]*)"', text[m.start(2) : m.end(2)]))
        found.append((m.group(1), labels, text[open_at + 1 : close_at], m.start()))
        pos = close_at + 1


def iter_blocks(root: Path) -> list[Block]:
    """Top-level blocks of every ``*.tf`` file under ``root`` (``.terraform`` dirs skipped)."""
    blocks = []
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        text = path.read_text()
        masked = _mask(text)
        for kind, labels, body, offset in _top_level(text, masked):
            line = text.count("\n", 0, offset) + 1
            blocks.append(Block(kind, labels, body, path, line))
    return blocks


def nested_blocks(body: str, kind: str) -> list[str]:
    """Bodies of the blocks named ``kind`` directly inside ``body``."""
    return [b for k, _, b, _ in _top_level(body, _mask(body)) if k == kind]


def attributes(body: str) -> dict[str, str]:
    """Attributes directly inside ``body``: name -> expression source (comments kept)."""
    masked = _mask(body)
    attrs: dict[str, str] = {}
    depth = 0
    i = 0
    line_start = True
    while i < len(body):
        c = masked[i]
        if line_start and depth == 0:
            m = re.match(rf"[ \t]*({_IDENT})[ \t]*=(?!=)", masked[i:])
            if m:
                start = i + m.end()
                j, d = start, 0
                while j < len(body) and not (d == 0 and masked[j] == "\n"):
                    d += masked[j] in "([{"
                    d -= masked[j] in ")]}"
                    j += 1
                attrs[m.group(1)] = body[start:j].strip()
                i = j
                continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        line_start = c == "\n"
        i += 1
    return attrs


################################################################################
# Checks
################################################################################


def variables_without_description_or_type(blocks: list[Block]) -> list[str]:
    """Variables missing a non-empty ``description`` or a ``type``."""
    problems = []
    for b in blocks:
        if b.kind != "variable":
            continue
        attrs = attributes(b.body)
        if not attrs.get("description", "").strip('"'):
            problems.append(f"{b.where}: variable has no description")
        if "type" not in attrs:
            problems.append(f"{b.where}: variable has no type")
    return problems


def outputs_without_description(blocks: list[Block]) -> list[str]:
    """Outputs missing a non-empty ``description``."""
    return [
        f"{b.where}: output has no description"
        for b in blocks
        if b.kind == "output" and not attributes(b.body).get("description", "").strip('"')
    ]


def _locals(blocks: list[Block], module_dir: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for b in blocks:
        if b.kind == "locals" and b.path.parent == module_dir:
            values.update(attributes(b.body))
    return values


def _port(expr: str, local_values: dict[str, str]) -> int | None:
    """A port number from a literal or a ``local.x`` literal; None when not static."""
    expr = expr.strip()
    m = re.fullmatch(r"local\.(\w+)", expr)
    if m:
        expr = local_values.get(m.group(1), "").strip()
    return int(expr) if re.fullmatch(r"\d+", expr) else None


def _opens(attrs: dict[str, str], local_values: dict[str, str], port: int) -> bool:
    """True unless the rule's ports are static and exclude ``port``."""
    protocol = attrs.get("ip_protocol", attrs.get("protocol", "")).strip('"')
    if protocol in ("-1", "all"):
        return True
    low = _port(attrs.get("from_port", ""), local_values)
    high = _port(attrs.get("to_port", ""), local_values)
    if low is None or high is None:
        return True  # a variable port could be set to 6379: treat as open
    return low <= port <= high


def _world(attrs: dict[str, str]) -> bool:
    cidrs = " ".join(
        attrs.get(k, "") for k in ("cidr_ipv4", "cidr_ipv6", "cidr_blocks", "ipv6_cidr_blocks")
    )
    return any(f'"{w}"' in cidrs for w in WORLD_CIDRS)


def world_open_ingress(blocks: list[Block], port: int = REDIS_PORT) -> list[str]:
    """Ingress rules that let 0.0.0.0/0 or ::/0 reach ``port``.

    Covers inline ``ingress`` blocks of ``aws_security_group``, ``aws_security_group_rule``
    with ``type = "ingress"`` and ``aws_vpc_security_group_ingress_rule``. A rule whose
    ports are not literals (or ``local`` literals) counts as covering ``port``.
    """
    problems = []
    for b in blocks:
        if b.kind != "resource" or not b.labels:
            continue
        rtype = b.labels[0]
        rules: list[dict[str, str]] = []
        if rtype == "aws_security_group":
            rules = [attributes(body) for body in nested_blocks(b.body, "ingress")]
        elif rtype == "aws_vpc_security_group_ingress_rule":
            rules = [attributes(b.body)]
        elif rtype == "aws_security_group_rule":
            attrs = attributes(b.body)
            if attrs.get("type", "").strip('"') == "ingress":
                rules = [attrs]
        local_values = _locals(blocks, b.path.parent)
        for attrs in rules:
            if _world(attrs) and _opens(attrs, local_values, port):
                problems.append(f"{b.where}: ingress open to the world reaches port {port}")
    return problems


def checkov_skips_without_reason(root: Path, min_words: int = 4) -> list[str]:
    """Inline ``#checkov:skip=ID:reason`` comments whose reason is missing or too short,
    in Terraform code (``.tf``) and in its tests and mocks (``.hcl``)."""
    problems = []
    for path in sorted([*root.rglob("*.tf"), *root.rglob("*.hcl")]):
        if ".terraform" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = _SKIP.search(line)
            if m and len((m.group("reason") or "").split()) < min_words:
                problems.append(
                    f"{path}:{number}: checkov skip of {m.group('id')} "
                    f"has no reason (write '#checkov:skip=ID:why')"
                )
    return problems


def main(argv: list[str]) -> int:
    """Run every check over the directory in ``argv[0]`` (default ``terraform``)."""
    root = Path(argv[0] if argv else "terraform")
    if not root.is_dir():
        print(f"{root} is not a directory; pass the terraform/ folder", file=sys.stderr)
        return 2
    blocks = iter_blocks(root)
    problems = (
        variables_without_description_or_type(blocks)
        + outputs_without_description(blocks)
        + world_open_ingress(blocks)
        + checkov_skips_without_reason(root)
    )
    for p in problems:
        print(p)
    counts = {k: sum(b.kind == k for b in blocks) for k in ("resource", "variable", "output")}
    print(
        f"tf_static: {counts['resource']} resources, {counts['variable']} variables, "
        f"{counts['output']} outputs checked; {len(problems)} problems",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
