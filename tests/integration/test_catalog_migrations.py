"""Catalog schema migrations: upgrade from v1 keeps the data; a failure rolls back."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from geoshard.errors import BackendError
from geoshard.spec import load_spec
from geoshard.storage import catalog as catalog_mod
from geoshard.storage.catalog import (
    MIGRATIONS,
    SqlCatalog,
    SqlCatalogConfig,
    current_version,
    make_engine,
    migrate,
)

pytestmark = pytest.mark.integration


def _v1_database(url: str) -> None:
    eng = make_engine(url)
    assert migrate(eng, target=1) == 1
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO regions VALUES ('eu-west', 'eu', 'eu-west-1', 53.3, -6.2)"))
        c.execute(sa.text("INSERT INTO nodes VALUES ('eu-west/hot-0', 'eu-west', 'hot')"))
    eng.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_from_v1_to_latest_keeps_rows(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("DROP DATABASE IF EXISTS upgrade_test"))
            c.execute(sa.text("CREATE DATABASE upgrade_test"))
        admin.dispose()
        url = base.rsplit("/", 1)[0] + "/upgrade_test"
    _v1_database(url)
    cat = SqlCatalog(SqlCatalogConfig(url=url), "eu-west", None)
    try:
        assert cat.version == len(MIGRATIONS) == current_version(cat.engine)
        (node,) = cat.list_nodes()
        assert (node.name, node.healthy) == ("eu-west/hot-0", True)  # v3 column, backfilled
        assert [r.name for r in cat.list_regions()] == ["eu-west"]
        assert cat.audit_events() == []  # v2 table exists
    finally:
        cat.close()


def test_a_failing_migration_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _v1_database(url)

    def broken(conn: sa.Connection) -> None:
        catalog_mod._m2_tiers_and_audit(conn)  # creates tables, then fails: must roll back
        conn.execute(sa.text("ALTER TABLE no_such_table ADD COLUMN x INTEGER"))

    monkeypatch.setattr(catalog_mod, "MIGRATIONS", [MIGRATIONS[0], broken, MIGRATIONS[2]])
    eng = make_engine(url)
    with pytest.raises(
        BackendError, match=r"(?s)migration 2 \(broken\) failed.*stays at version 1"
    ):
        catalog_mod.migrate(eng)
    assert current_version(eng) == 1
    assert not sa.inspect(eng).has_table("residency_audit")
    eng.dispose()


def test_the_spec_registers_after_upgrade(tmp_path: Path, repo_root: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _v1_database(url)
    cat = SqlCatalog(SqlCatalogConfig(url=url), "eu-west", None)
    cat.register_spec(load_spec(repo_root / "examples" / "local.yaml"))
    assert len(cat.list_regions()) == 3
    cat.close()


def test_unreachable_database_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unreachable"):
        SqlCatalog(SqlCatalogConfig(url="postgresql+psycopg2://x@127.0.0.1:1/db"), "eu-west", None)
