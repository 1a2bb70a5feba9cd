"""The search grammar of ``geoshard plan --search``: values, sizes and errors.

A bad expression is a usage error (exit 2) whose message names the bad token and
restates the grammar; nothing is planned or written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoshard.cli.app import app
from geoshard.errors import ConfigError
from geoshard.sim.search import GRAMMAR, default_search, parse_search
from geoshard.spec import Spec, load_spec


@pytest.fixture(scope="module")
def local(repo_root: Path) -> Spec:
    return load_spec(repo_root / "examples/local.yaml")


def test_ranges_steps_and_lists(local: Spec) -> None:
    space = parse_search(
        "api.servers=16..64:16, warm.nodes=1|3|2, l2.capacity_items=1e6..1e8", local
    )
    assert space.values("api.servers") == [16, 32, 48, 64]
    assert space.values("warm.nodes") == [1, 2, 3]
    caps = space.values("l2.capacity_items")
    assert caps[0] == 1e6 and caps[-1] == 1e8 and len(caps) == 9  # 4 per decade, ends kept
    assert space.pool_dims == ["api.servers", "warm.nodes"]
    assert space.cache_dims == ["l2.capacity_items"]
    # every region picks its own pool sizes: (4 x 3) ** 3 regions, times 9 cache sizes
    assert space.size == 9 * 12**3


def test_a_range_keeps_its_end_and_geometric_steps_round_counts(local: Spec) -> None:
    space = parse_search("api.servers=1..10:4,hot.nodes=2..40:x2", local)
    assert space.values("api.servers") == [1, 5, 9, 10]
    assert space.values("hot.nodes") == [2, 4, 8, 16, 32, 40]


def test_regions_restrict_the_pool_dimensions(local: Spec) -> None:
    space = parse_search("api.servers=1..3", local, ["eu-west"])
    assert space.regions == ("eu-west",) and space.size == 3


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        (
            "warm.nodez=8..64",
            (
                r"bad token 'warm.nodez=8..64': unknown dimension 'warm.nodez'; "
                r"did you mean 'warm.nodes'\?"
            ),
        ),
        ("warm.nodes=64..8", r"the range starts above its end \(64 > 8\)"),
        ("warm.nodes=8..x", r"'x' is not a number"),
        ("warm.nodes=8..64:2.5", r"the step of warm.nodes must be an integer"),
        ("warm.nodes=1.5|2", r"whole nodes or workers, so 1.5 must be an integer"),
        ("warm.nodes", r"no '=' between the name and its values"),
        ("api.servers=1..4,,warm.nodes=1", r"an empty dimension"),
        ("api.servers=1..4,api.servers=2", r"api.servers is given twice"),
        ("l2.capacity_items=1e6..1e8:x1", r"a geometric step x1 must be above 1"),
        ("l2.capacity_bytes=1e6", r"caches.l2 gives capacity_items, not capacity_bytes"),
        ("api.servers=0..4", r"'0' must be a finite number > 0"),
        ("api.servers=100|20000", r"api.servers=20000 is above its bound 10000"),
        ("api.servers=1..20000", r"more than 10000 values; use a larger :STEP"),
    ],
)
def test_bad_tokens_are_named_with_the_grammar(local: Spec, expr: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_search(expr, local)
    assert GRAMMAR in str(err.value)


def test_a_cache_level_the_spec_lacks_is_refused(repo_root: Path) -> None:
    pair = load_spec(repo_root / "examples/pair.yaml")  # only an L1
    with pytest.raises(ConfigError, match=r"the spec has no caches.l2"):
        parse_search("l2.capacity_items=1e3..1e4", pair)


def test_the_default_search_has_four_dimensions_around_the_spec(repo_root: Path) -> None:
    spec = load_spec(repo_root / "examples/global.yaml")
    text = default_search(spec)
    space = parse_search(text, spec)
    assert [n for n, _ in space.dims] == [
        "api.servers",
        "warm.nodes",
        "hot.nodes",
        "l2.capacity_items",
    ]
    # 0.5x the fewest (16) to 1.5x the most (20) API servers of the regions
    assert space.values("api.servers")[0] == 8 and space.values("api.servers")[-1] == 30
    assert 2e6 in space.values("l2.capacity_items") and 2e8 in space.values("l2.capacity_items")


def test_the_cli_exits_2_naming_the_token_and_writes_nothing(
    repo_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plan"
    res = CliRunner().invoke(
        app,
        [
            "plan",
            str(repo_root / "examples/local.yaml"),
            "--search",
            "api.servers=1..4,warm.nodez=1..2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["error"]["category"] == "config"
    assert "bad token 'warm.nodez=1..2'" in doc["error"]["message"]
    assert "grammar: NAME=LO..HI" in doc["error"]["message"]
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (
            ["--scenarios", "normal,region-los"],
            "'region-los' is not a scenario; did you mean 'region-loss'",
        ),
        (["--regions", "eu-wset"], "'eu-wset' is not a region of the spec; did you mean 'eu-west'"),
        (["--objective", "cheap"], "--objective 'cheap' is unknown"),
        (["--confirm", "99"], r"--confirm\(=99\) must be in \[0, 20\]"),
        (["--scale", "2"], r"--scale\(=2\) must be in \(0, 1\]"),
    ],
)
def test_bad_flags_exit_2_before_any_work(
    repo_root: Path, tmp_path: Path, flags: list[str], match: str
) -> None:
    res = CliRunner().invoke(
        app, ["plan", str(repo_root / "examples/local.yaml"), "--out", str(tmp_path / "p"), *flags]
    )
    assert res.exit_code == 2
    assert re.search(match, res.stderr), res.stderr
