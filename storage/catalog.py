"""The SQL catalog: regions, nodes, shards, placements, tier membership and residency audits.

:class:`SqlCatalog` implements the :class:`~geoshard.storage.base.Catalog` interface with
the SQLAlchemy 2.0 typed ORM over SQLite (the default, ``sqlite:///catalog.db``) or
PostgreSQL (``postgresql+psycopg2://user@host:port/db``).

Schema migrations are a small versioned mechanism, not Alembic: :data:`MIGRATIONS` is an
ordered list of functions, migration *n* takes the schema from version *n-1* to *n*, and
:func:`migrate` applies the missing ones, each in its own transaction together with the
row it adds to ``schema_version``. A failed migration leaves the database at the
previous version. To change the schema, append a function; never edit a released one.

Tier membership rows name a key (``user_features:eu:42``), which is personal data of
that user: writing one goes through the residency guard of the catalog's region.
Audit events carry jurisdiction, data class, region and decision, never a user id.

Examples:
    >>> cat = SqlCatalog(SqlCatalogConfig(url="sqlite:////tmp/cat.db"), "eu-west", policy)  # doctest: +SKIP
    >>> cat.register_spec(load_spec("examples/local.yaml"))                                  # doctest: +SKIP
    >>> [r.name for r in cat.list_regions()]                                                 # doctest: +SKIP
    ['eu-central', 'eu-west', 'us-east']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, Self

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from geoshard.errors import BackendError, InputError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import DATA_CLASSES, Spec
from geoshard.storage.base import (
    AuditEvent,
    BackendConfig,
    Catalog,
    DrainRecord,
    Membership,
    NodeInfo,
    PlacementInfo,
    RegionInfo,
)
from geoshard.storage.keylayout import key_text, require_data_key

__all__ = [
    "MIGRATIONS",
    "SqlCatalog",
    "SqlCatalogConfig",
    "current_version",
    "make_engine",
    "migrate",
]

TIERS = ("hot", "warm", "cold")


class SqlCatalogConfig(BackendConfig):
    """Config of the SQL catalog (``type: sql``).

    Attributes:
        url: a SQLAlchemy URL: ``sqlite:///path.db`` or ``postgresql+psycopg2://...``.
        echo: log every statement (debugging).
    """

    type: Literal["sql"] = "sql"
    url: str = "sqlite:///catalog.db"
    echo: bool = False


# --------------------------------------------------------------------------- ORM (latest schema)


class Base(DeclarativeBase):
    """Declarative base of the catalog's ORM classes (the latest schema version)."""


class SchemaVersionRow(Base):
    """One applied migration."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(primary_key=True)
    applied_at: Mapped[float]


class RegionRow(Base):
    """A region of the topology."""

    __tablename__ = "regions"
    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    jurisdiction: Mapped[str] = mapped_column(sa.String(40))
    cloud_region: Mapped[str] = mapped_column(sa.String(64))
    lat: Mapped[float]
    lon: Mapped[float]


class NodeRow(Base):
    """A storage node (hot ring node or warm node) of a region."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    region: Mapped[str] = mapped_column(sa.ForeignKey("regions.name"))
    tier: Mapped[str] = mapped_column(sa.String(16))
    healthy: Mapped[bool] = mapped_column(default=True)


class ShardRow(Base):
    """A shard: an item-attribute shard or a user-ring node's key range."""

    __tablename__ = "shards"
    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))


class PlacementRow(Base):
    """Where a shard's replicas live at one epoch (rank 0 is the primary)."""

    __tablename__ = "placements"
    shard: Mapped[str] = mapped_column(sa.ForeignKey("shards.name"), primary_key=True)
    node: Mapped[str] = mapped_column(sa.ForeignKey("nodes.name"), primary_key=True)
    rank: Mapped[int]
    epoch: Mapped[int]


class TierMembershipRow(Base):
    """Which tier holds a key, and how it is used (the tiering policy reads these)."""

    __tablename__ = "tier_membership"
    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    data_class: Mapped[str] = mapped_column(sa.String(32))
    tier: Mapped[str] = mapped_column(sa.String(8), index=True)
    last_access_s: Mapped[float]
    access_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class AuditRow(Base):
    """One residency decision taken on a write or processing step."""

    __tablename__ = "residency_audit"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at_s: Mapped[float]
    jurisdiction: Mapped[str] = mapped_column(sa.String(40))
    data_class: Mapped[str] = mapped_column(sa.String(32))
    region: Mapped[str] = mapped_column(sa.String(40))
    purpose: Mapped[str] = mapped_column(sa.String(16))
    allowed: Mapped[bool]
    action: Mapped[str] = mapped_column(sa.String(64))
    detail: Mapped[str] = mapped_column(sa.Text, default="")


class DrainRow(Base):
    """One batch of a region's write log drained into the cold tier."""

    __tablename__ = "drains"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(sa.String(40), index=True)
    stream: Mapped[str] = mapped_column(sa.String(128))
    first_id: Mapped[str] = mapped_column(sa.String(40))
    last_id: Mapped[str] = mapped_column(sa.String(40))
    records: Mapped[int]
    at_s: Mapped[float]


# --------------------------------------------------------------------------- migrations


def _m1_topology(conn: Connection) -> None:
    """v1: regions, nodes, shards, placements (without nodes.healthy)."""
    md = sa.MetaData()
    sa.Table(
        "regions",
        md,
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("jurisdiction", sa.String(40), nullable=False),
        sa.Column("cloud_region", sa.String(64), nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
    )
    sa.Table(
        "nodes",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("region", sa.String(40), sa.ForeignKey("regions.name"), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
    )
    sa.Table(
        "shards",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    sa.Table(
        "placements",
        md,
        sa.Column("shard", sa.String(100), sa.ForeignKey("shards.name"), primary_key=True),
        sa.Column("node", sa.String(100), sa.ForeignKey("nodes.name"), primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
    )
    md.create_all(conn)


def _m2_tiers_and_audit(conn: Connection) -> None:
    """v2: tier membership and residency audit events."""
    md = sa.MetaData()
    sa.Table(
        "tier_membership",
        md,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("data_class", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("last_access_s", sa.Float, nullable=False),
        sa.Column("access_count", sa.BigInteger, nullable=False),
        sa.Index("ix_tier_membership_tier", "tier"),
    )
    sa.Table(
        "residency_audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at_s", sa.Float, nullable=False),
        sa.Column("jurisdiction", sa.String(40), nullable=False),
        sa.Column("data_class", sa.String(32), nullable=False),
        sa.Column("region", sa.String(40), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    md.create_all(conn)


def _m3_node_health(conn: Connection) -> None:
    """v3: ``nodes.healthy`` (existing nodes count as healthy)."""
    conn.execute(sa.text("ALTER TABLE nodes ADD COLUMN healthy BOOLEAN NOT NULL DEFAULT TRUE"))


def _m4_drains(conn: Connection) -> None:
    """v4: the drain log (which write-log entries reached the cold tier)."""
    md = sa.MetaData()
    sa.Table(
        "drains",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(40), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("first_id", sa.String(40), nullable=False),
        sa.Column("last_id", sa.String(40), nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("at_s", sa.Float, nullable=False),
        sa.Index("ix_drains_region", "region"),
    )
    md.create_all(conn)


#: Ordered migrations: index i takes the schema from version i to version i + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _m1_topology,
    _m2_tiers_and_audit,
    _m3_node_health,
    _m4_drains,
]


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets real transactions (DDL included) and FK checks.

    Raises:
        BackendError: when the URL cannot be used.
    """
    try:
        engine = sa.create_engine(url, echo=echo, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise BackendError(
            f"catalog url '{url}' is not usable: {exc}; use sqlite:///path.db or "
            "postgresql+psycopg2://user@host:port/db"
        ) from None
    if engine.dialect.name == "sqlite":
        # pysqlite's own transaction handling skips DDL; take control so that a migration
        # and its schema_version row commit together (SQLAlchemy docs, "Serializable
        # isolation / Savepoints / Transactional DDL").
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def current_version(engine: Engine) -> int:
    """The schema version of the database (0 when it is empty)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        v = conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar()
        return int(v or 0)


def migrate(engine: Engine, target: int | None = None) -> int:
    """Apply the missing migrations up to ``target`` (default: the latest); return the version.

    Each migration runs in its own transaction with its ``schema_version`` row; on
    PostgreSQL an advisory lock serialises concurrent migrators.

    Raises:
        BackendError: when a migration fails (the database stays at the previous version)
            or the database is newer than this code.
    """
    latest = len(MIGRATIONS)
    target = latest if target is None else target
    if not 0 <= target <= latest:
        raise InputError(f"target version {target} is out of range; use 0..{latest}")
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(74561)"))
        SchemaVersionRow.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    version = current_version(engine)
    if version > latest:
        raise BackendError(
            f"catalog schema is at version {version} but this geoshard knows up "
            f"to {latest}; upgrade geoshard"
        )
    while version < target:
        fn = MIGRATIONS[version]
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(74561)"))
                now = conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar()
                if int(now or 0) != version:  # another process got there first
                    version = int(now or 0)
                    continue
                fn(conn)
                conn.execute(
                    sa.insert(SchemaVersionRow.__table__),  # type: ignore[arg-type]
                    {"version": version + 1, "applied_at": time.time()},
                )
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(
                f"catalog migration {version + 1} ({fn.__name__}) failed: {exc}; "
                f"the schema stays at version {version}"
            ) from exc
        version += 1
    return version


# --------------------------------------------------------------------------- the catalog


class SqlCatalog(Catalog):
    """The :class:`~geoshard.storage.base.Catalog` on SQLite or PostgreSQL; migrates the
    schema to the latest on open.

    Args:
        config: the backend config.
        region: the region this catalog instance serves (residency of membership rows).
        residency: checked before a tier-membership row of personal data is written.

    Raises:
        BackendError: when the database is unreachable or a migration fails.
    """

    config_model: ClassVar[type[BackendConfig]] = SqlCatalogConfig
    config: SqlCatalogConfig

    def __init__(
        self, config: SqlCatalogConfig, region: str, residency: ResidencyPolicy | None
    ) -> None:
        super().__init__(region, residency)
        self.config = config
        self.engine = make_engine(config.url, echo=config.echo)
        try:
            self.version = migrate(self.engine)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise BackendError(
                f"catalog database at '{self.engine.url!r}' is unreachable: "
                f"{exc.orig}; check the url and that the server is up"
            ) from None

    @classmethod
    def from_config(
        cls, config: SqlCatalogConfig, *, region: str, residency: ResidencyPolicy | None
    ) -> Self:
        """Build a catalog from its config (the registry's entry point)."""
        return cls(config, region, residency)

    def close(self) -> None:
        """Dispose of the connection pool. Safe to call twice."""
        self.engine.dispose()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- topology -----------------------------------------------------------------
    def register_spec(self, spec: Spec) -> None:
        """Record (insert or update) every region, hot and warm node and item shard of ``spec``."""
        with self._session() as s, s.begin():
            for name, reg in spec.regions.items():
                s.merge(
                    RegionRow(
                        name=name,
                        jurisdiction=reg.jurisdiction,
                        cloud_region=reg.cloud_region,
                        lat=reg.location.lat,
                        lon=reg.location.lon,
                    )
                )
            s.flush()
            for name, reg in spec.regions.items():
                for node in reg.hot_node_names(name):
                    s.merge(NodeRow(name=node, region=name, tier="hot", healthy=True))
                for i in range(reg.warm.nodes):
                    s.merge(
                        NodeRow(name=f"{name}/warm-{i}", region=name, tier="warm", healthy=True)
                    )
            items = spec.shards.items
            for shard in sorted({*items.shards.values(), items.default_shard}):
                s.merge(ShardRow(name=shard, kind="items"))
            for node in spec.hot_nodes():
                s.merge(ShardRow(name=node, kind="users"))

    def list_regions(self) -> list[RegionInfo]:
        """Every recorded region, by name."""
        with self._session() as s:
            rows = s.scalars(sa.select(RegionRow).order_by(RegionRow.name)).all()
            return [RegionInfo(r.name, r.jurisdiction, r.cloud_region, r.lat, r.lon) for r in rows]

    def list_nodes(self, region: str | None = None, tier: str | None = None) -> list[NodeInfo]:
        """Recorded nodes, optionally of one region and/or tier, by name."""
        q = sa.select(NodeRow).order_by(NodeRow.name)
        if region is not None:
            q = q.where(NodeRow.region == region)
        if tier is not None:
            q = q.where(NodeRow.tier == tier)
        with self._session() as s:
            return [NodeInfo(r.name, r.region, r.tier, r.healthy) for r in s.scalars(q).all()]

    def set_node_health(self, node: str, healthy: bool) -> None:
        """Mark a node (un)healthy.

        Raises:
            InputError: for an unknown node.
        """
        with self._session() as s, s.begin():
            row = s.get(NodeRow, node)
            if row is None:
                raise InputError(f"node '{node}' is not in the catalog; register the spec first")
            row.healthy = healthy

    def record_placement(self, shard: str, nodes: Sequence[str], *, epoch: int) -> None:
        """Replace ``shard``'s placement with ``nodes`` (primary first) at ``epoch``.

        Raises:
            InputError: for an unknown shard or node, or an empty node list.
        """
        if not nodes:
            raise InputError(f"placement of shard '{shard}' needs at least one node")
        with self._session() as s, s.begin():
            if s.get(ShardRow, shard) is None:
                raise InputError(f"shard '{shard}' is not in the catalog; register the spec first")
            for n in nodes:
                if s.get(NodeRow, n) is None:
                    raise InputError(f"node '{n}' is not in the catalog; register the spec first")
            s.execute(sa.delete(PlacementRow).where(PlacementRow.shard == shard))
            for rank, n in enumerate(nodes):
                s.add(PlacementRow(shard=shard, node=n, rank=rank, epoch=epoch))

    def placements(self, shard: str | None = None) -> list[PlacementInfo]:
        """Recorded placements (of one shard, or all), by shard then rank."""
        q = sa.select(PlacementRow).order_by(PlacementRow.shard, PlacementRow.rank)
        if shard is not None:
            q = q.where(PlacementRow.shard == shard)
        with self._session() as s:
            return [PlacementInfo(r.shard, r.node, r.rank, r.epoch) for r in s.scalars(q).all()]

    # -- tier membership ----------------------------------------------------------
    def record_access(self, key: DataKey, tier: str, *, now_s: float, count: bool = True) -> None:
        """Record that ``key`` lives in ``tier`` and was used at ``now_s``.

        Args:
            key: the datum.
            tier: ``hot``, ``warm`` or ``cold``.
            now_s: the access time (seconds; passed in, never read from a clock).
            count: add one to the access count (False for a pure move between tiers).

        Raises:
            InputError: for an unknown tier or data class.
            ResidencyError: a personal key this catalog's region may not store.
        """
        self._check(key, tier)
        self.guard_write([key])
        name = key_text(key)
        with self._session() as s, s.begin():
            row = s.get(TierMembershipRow, name, with_for_update=True)
            if row is None:
                s.add(
                    TierMembershipRow(
                        key=name,
                        data_class=key.data_class,
                        tier=tier,
                        last_access_s=now_s,
                        access_count=int(count),
                    )
                )
            else:
                row.tier = tier
                row.last_access_s = max(row.last_access_s, now_s)
                row.access_count += int(count)

    def membership(self, key: DataKey) -> Membership | None:
        """The membership row of ``key``, or None."""
        with self._session() as s:
            r = s.get(TierMembershipRow, key_text(key))
            return None if r is None else _membership(r)

    def members(self, tier: str | None = None) -> list[Membership]:
        """Membership rows (of one tier, or all), by key."""
        q = sa.select(TierMembershipRow).order_by(TierMembershipRow.key)
        if tier is not None:
            q = q.where(TierMembershipRow.tier == tier)
        with self._session() as s:
            return [_membership(r) for r in s.scalars(q).all()]

    def forget(self, key: DataKey) -> bool:
        """Drop ``key``'s membership row (erasure); True when it existed."""
        with self._session() as s, s.begin():
            r = s.get(TierMembershipRow, key_text(key))
            if r is None:
                return False
            s.delete(r)
            return True

    # -- residency audit ----------------------------------------------------------
    def record_audit(
        self,
        *,
        jurisdiction: str,
        data_class: str,
        region: str,
        purpose: str,
        allowed: bool,
        action: str,
        at_s: float,
        detail: str = "",
    ) -> int:
        """Record one residency decision; returns its id. Put no user id in ``detail``."""
        if data_class not in DATA_CLASSES:
            raise InputError(
                f"data class '{data_class}' is unknown; use one of {', '.join(DATA_CLASSES)}"
            )
        if purpose not in ("store", "process"):
            raise InputError(f"purpose '{purpose}' must be 'store' or 'process'")
        with self._session() as s, s.begin():
            row = AuditRow(
                at_s=at_s,
                jurisdiction=jurisdiction,
                data_class=data_class,
                region=region,
                purpose=purpose,
                allowed=allowed,
                action=action,
                detail=detail,
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def audit_events(
        self,
        *,
        jurisdiction: str | None = None,
        region: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Recorded audit events, oldest first, optionally filtered."""
        q = sa.select(AuditRow).order_by(AuditRow.id)
        if jurisdiction is not None:
            q = q.where(AuditRow.jurisdiction == jurisdiction)
        if region is not None:
            q = q.where(AuditRow.region == region)
        if limit is not None:
            q = q.limit(limit)
        with self._session() as s:
            return [
                AuditEvent(
                    r.id,
                    r.at_s,
                    r.jurisdiction,
                    r.data_class,
                    r.region,
                    r.purpose,
                    r.allowed,
                    r.action,
                    r.detail,
                )
                for r in s.scalars(q).all()
            ]

    # -- drain log ----------------------------------------------------------------
    def record_drain(
        self,
        *,
        region: str,
        stream: str,
        first_id: str,
        last_id: str,
        records: int,
        at_s: float,
    ) -> int:
        """Record one drained batch of ``region``'s log; returns the record's id.

        Raises:
            InputError: a negative ``records`` or an empty stream id.
        """
        if isinstance(records, bool) or not isinstance(records, int) or records < 0:
            raise InputError(f"records(={records!r}) must be an integer >= 0")
        if not first_id or not last_id or not stream:
            raise InputError("a drain record needs the stream and its first and last ids")
        with self._session() as s, s.begin():
            row = DrainRow(
                region=region,
                stream=stream,
                first_id=first_id,
                last_id=last_id,
                records=records,
                at_s=at_s,
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def drains(self, *, region: str | None = None, limit: int | None = None) -> list[DrainRecord]:
        """Recorded drains, oldest first (the newest ``limit`` when given)."""
        q = sa.select(DrainRow).order_by(DrainRow.id.desc())
        if region is not None:
            q = q.where(DrainRow.region == region)
        if limit is not None:
            q = q.limit(limit)
        with self._session() as s:
            rows = list(s.scalars(q).all())
        return [
            DrainRecord(r.id, r.region, r.stream, r.first_id, r.last_id, r.records, r.at_s)
            for r in reversed(rows)
        ]

    # -- helpers ------------------------------------------------------------------
    @staticmethod
    def _check(key: DataKey, tier: str) -> None:
        if tier not in TIERS:
            raise InputError(f"tier '{tier}' is unknown; use one of {', '.join(TIERS)}")
        require_data_key(key)  # a DataKey's text fits the 300-character column: ids are <= 128


def _membership(r: TierMembershipRow) -> Membership:
    return Membership(r.key, r.data_class, r.tier, r.last_access_s, r.access_count)
