"""The catalog contract, run over SQLite and a real PostgreSQL server.

Every catalog is built from a config mapping through the ``BACKENDS`` registry
(``build_backend``) and used through the :class:`~geoshard.storage.base.Catalog`
interface only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from geoshard.errors import InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import Spec, load_spec
from geoshard.storage.base import Catalog, build_backend
from geoshard.storage.catalog import MIGRATIONS, SqlCatalog


@pytest.fixture(scope="module")
def spec(repo_root: Path) -> Spec:
    return load_spec(repo_root / "examples" / "local.yaml")


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path, spec: Spec) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        db = f"t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {db}"))
        admin.dispose()
        url = base.rsplit("/", 1)[0] + f"/{db}"
    cat = build_backend(
        "catalog",
        {"type": "sql", "url": url},
        region="eu-west",
        residency=ResidencyPolicy.from_spec(spec),
    )
    yield cat
    cat.close()


def test_schema_is_at_the_latest_version(catalog: Catalog) -> None:
    assert isinstance(catalog, SqlCatalog) and catalog.version == len(MIGRATIONS)


def test_register_and_list_topology(catalog: Catalog, spec: Spec) -> None:
    catalog.register_spec(spec)
    catalog.register_spec(spec)  # idempotent
    assert [r.name for r in catalog.list_regions()] == ["eu-central", "eu-west", "us-east"]
    assert catalog.list_regions()[1].jurisdiction == "eu"
    hot = catalog.list_nodes(region="eu-west", tier="hot")
    assert [n.name for n in hot] == ["eu-west/hot-0", "eu-west/hot-1", "eu-west/hot-2"]
    assert len(catalog.list_nodes(tier="warm")) == 3
    catalog.set_node_health("eu-west/hot-1", False)
    assert not catalog.list_nodes(region="eu-west", tier="hot")[1].healthy


def test_placements_replace_per_shard(catalog: Catalog, spec: Spec) -> None:
    catalog.register_spec(spec)
    catalog.record_placement("items-a", ["eu-west/hot-0", "us-east/hot-0"], epoch=1)
    catalog.record_placement("items-a", ["eu-central/hot-2"], epoch=2)
    assert [(p.node, p.rank, p.epoch) for p in catalog.placements("items-a")] == [
        ("eu-central/hot-2", 0, 2)
    ]
    with pytest.raises(InputError, match="node 'mars/hot-0' is not in the catalog"):
        catalog.record_placement("items-a", ["mars/hot-0"], epoch=3)
    assert len(catalog.placements("items-a")) == 1


def test_tier_membership_counts_accesses(catalog: Catalog) -> None:
    k = DataKey("user_features", UserKey("eu", 7))
    catalog.record_access(k, "hot", now_s=10.0)
    catalog.record_access(k, "hot", now_s=20.0)
    catalog.set_tier(k, "cold", now_s=30.0)
    m = catalog.membership(k)
    assert m is not None and (m.tier, m.access_count, m.last_access_s) == ("cold", 2, 30.0)
    assert [x.key for x in catalog.members("cold")] == ["user_features:eu:7"]
    assert catalog.membership(DataKey("user_features", UserKey("eu", 8))) is None
    assert catalog.forget(k) and catalog.membership(k) is None


def test_membership_rows_follow_residency(spec: Spec, tmp_path: Path) -> None:
    us = build_backend(
        "catalog",
        {"type": "sql", "url": f"sqlite:///{tmp_path / 'us.db'}"},
        region="us-east",
        residency=ResidencyPolicy.from_spec(spec),
    )
    with pytest.raises(ResidencyError, match="eu user_features may not be stored in 'us-east'"):
        us.record_access(DataKey("user_features", UserKey("eu", 1)), "hot", now_s=1.0)
    assert us.members() == []
    us.close()


def test_audit_events_round_trip(catalog: Catalog) -> None:
    a = catalog.record_audit(
        jurisdiction="eu",
        data_class="interactions",
        region="us-east",
        purpose="store",
        allowed=False,
        action="cold.append",
        at_s=1.0,
    )
    b = catalog.record_audit(
        jurisdiction="us",
        data_class="interactions",
        region="eu-west",
        purpose="store",
        allowed=True,
        action="cold.append",
        at_s=2.0,
    )
    assert b > a
    evs = catalog.audit_events()
    assert [(e.jurisdiction, e.allowed) for e in evs] == [("eu", False), ("us", True)]
    assert [e.id for e in catalog.audit_events(jurisdiction="us")] == [b]
    with pytest.raises(InputError, match="purpose 'keep' must be 'store' or 'process'"):
        catalog.record_audit(
            jurisdiction="eu",
            data_class="interactions",
            region="eu-west",
            purpose="keep",
            allowed=True,
            action="x",
            at_s=3.0,
        )


def test_bad_tier_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InputError, match="tier 'lukewarm' is unknown"):
        catalog.record_access(DataKey("item_catalog", "sku-1"), "lukewarm", now_s=1.0)


def test_drain_log_round_trip(catalog: Catalog) -> None:
    a = catalog.record_drain(
        region="eu-west",
        stream="{gs:eu-west}:log",
        first_id="1-0",
        last_id="5-0",
        records=4,
        at_s=10.0,
    )
    b = catalog.record_drain(
        region="us-east",
        stream="{gs:us-east}:log",
        first_id="2-0",
        last_id="3-1",
        records=2,
        at_s=11.0,
    )
    c = catalog.record_drain(
        region="eu-west",
        stream="{gs:eu-west}:log",
        first_id="5-1",
        last_id="9-0",
        records=0,
        at_s=12.0,
    )
    assert a < b < c
    assert [(d.region, d.last_id, d.records) for d in catalog.drains()] == [
        ("eu-west", "5-0", 4),
        ("us-east", "3-1", 2),
        ("eu-west", "9-0", 0),
    ]
    assert [d.id for d in catalog.drains(region="eu-west")] == [a, c]
    assert [d.id for d in catalog.drains(limit=1)] == [c]  # the newest, oldest first
    with pytest.raises(InputError, match=r"records\(=-1\) must be an integer >= 0"):
        catalog.record_drain(
            region="eu-west", stream="s", first_id="1-0", last_id="1-0", records=-1, at_s=1.0
        )
    with pytest.raises(InputError, match="needs the stream and its first and last ids"):
        catalog.record_drain(
            region="eu-west", stream="s", first_id="", last_id="1-0", records=1, at_s=1.0
        )
    assert len(catalog.drains()) == 3
