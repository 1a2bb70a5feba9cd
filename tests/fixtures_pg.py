"""Pytest plugin: a real PostgreSQL server (``initdb`` + ``pg_ctl``) for the session.

``postgres_url`` starts one server per test session on a free loopback port and stops it
at the end, even when tests fail. Without the PostgreSQL binaries the tests that need it
are skipped with the reason, except under CI (``$CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a throw-away PostgreSQL server (database ``postgres``)."""
    from geoshard.cluster.local.postgres import PostgresServer, find_pg_bin

    if find_pg_bin() is None:
        msg = (
            "PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or set "
            "GEOSHARD_PG_BIN"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    server = PostgresServer().start()
    try:
        yield server.url
    finally:
        server.stop()
