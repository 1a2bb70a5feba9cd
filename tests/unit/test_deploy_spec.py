"""The spec's storage: and deploy: sections: defaults, errors with file:line, the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoshard.cli import app
from geoshard.errors import SpecError
from geoshard.spec import STORAGE_TYPES, load_spec, parse_spec
from geoshard.storage.base import BACKENDS

REPO = Path(__file__).resolve().parents[2]
LOCAL = (REPO / "examples" / "local.yaml").read_text()


def test_local_yaml_needs_no_storage_section() -> None:
    spec = load_spec(REPO / "examples" / "local.yaml")
    assert spec.storage.hot.type == "redis_cluster"
    assert (spec.storage.hot.primaries, spec.storage.hot.replicas_per_primary) == (3, 1)
    assert spec.storage.hot.appendonly and spec.storage.hot.durable_writes
    assert (spec.storage.vector.type, spec.storage.vector.dim) == ("milvus", 64)
    assert spec.storage.cold.type == "parquet" and spec.storage.catalog.type == "sql"
    assert spec.deploy.api_workers is None and spec.deploy.ingest.buffer_items > 0


def test_every_storage_type_is_a_registered_backend() -> None:
    for tier, types in STORAGE_TYPES.items():
        for t in types:
            assert (tier, t) in BACKENDS, f"{tier}/{t} is not in BACKENDS"
    registered = {(tier, t) for tier, t in BACKENDS if t != "memory"}
    listed = {(tier, t) for tier, types in STORAGE_TYPES.items() for t in types}
    assert registered == listed, "a backend a deployment can run is missing from STORAGE_TYPES"


BROKEN = [
    (
        "storage:\n  hot: {type: redis_clustre}\n",
        "type: redis_clustre",
        r"storage\.hot\.type: .*\(got 'redis_clustre'\); did you mean 'redis_cluster'\?",
    ),
    (
        "storage:\n  hot: {primaries: 2}\n",
        "primaries: 2",
        r"storage\.hot\.primaries: a Redis Cluster needs at least 3 primaries \(got 2\)",
    ),
    (
        "storage:\n  hot: {replicas_per_primary: 0}\n",
        "replicas_per_primary: 0",
        r"storage\.hot\.wait_replicas: WAIT for 1 replica\(s\) with 0 per primary would fail every write",
    ),
    (
        "storage:\n  vector: {uri: /tmp/x.db}\n",
        "uri: /tmp/x.db",
        r"storage\.vector\.uri: '/tmp/x\.db' is not a Milvus server URI",
    ),
    (
        "storage:\n  catalog: {url: 'mysql://x'}\n",
        "mysql://x",
        r"storage\.catalog\.url: 'mysql://x' is not a SQL catalog URL",
    ),
    (
        "storage:\n  replication: {sync_classes: [item_catalog]}\n",
        "item_catalog",
        r"storage\.replication\.sync_classes\[0\]: personal data class 'item_catalog' is not in the spec",
    ),
    (
        "storage:\n  cold: {shardz: 4}\n",
        "shardz",
        r"storage\.cold\.shardz: unknown key 'shardz'; did you mean 'shards'\?",
    ),
    (
        "deploy:\n  api_workers: 0\n",
        "api_workers: 0",
        r"deploy\.api_workers: must be > 0 \(got 0\)",
    ),
    (
        "deploy:\n  ingest: {max_batch: 50, buffer_items: 10}\n",
        "max_batch: 50",
        r"deploy\.ingest\.max_batch: a batch of 50 can never fit a buffer of 10",
    ),
    ("deploy:\n  recall: faiss\n", "recall: faiss", r"deploy\.recall: .*\(got 'faiss'\)"),
]


@pytest.mark.parametrize(("extra", "line_text", "pattern"), BROKEN)
def test_bad_storage_and_deploy_settings_name_file_line_key_and_fix(
    extra: str, line_text: str, pattern: str
) -> None:
    text = LOCAL + "\n" + extra
    with pytest.raises(SpecError) as err:
        parse_spec(text, "bad.yaml")
    problems = err.value.problems
    hit = [p for p in problems if __import__("re").search(pattern, p)]
    assert hit, f"no problem matches {pattern!r} in {problems}"
    lineno = int(hit[0].split(":")[1])
    assert line_text in text.splitlines()[lineno - 1], (hit[0], text.splitlines()[lineno - 1])


def test_the_schema_shows_the_storage_and_deploy_sections() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"storage", "deploy"} <= set(schema["properties"])
    defs = schema["$defs"]
    assert defs["HotStorage"]["additionalProperties"] is False
    assert set(defs["HotStorage"]["properties"]["type"]["enum"]) == set(STORAGE_TYPES["hot"])


def test_up_down_status_seed_are_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    for cmd in ("up", "status", "down", "seed"):
        assert cmd in result.stdout
