"""The cold tier on Parquet: append-only records in a hive-partitioned pyarrow dataset.

Layout under ``root`` (a local directory, or any URI ``pyarrow.fs.FileSystem.from_uri``
understands: ``file:///...``, ``s3://bucket/prefix``, ``gs://...``), named by
:func:`~geoshard.storage.keylayout.cold_partition` and
:func:`~geoshard.storage.keylayout.cold_bucket`::

    region=eu-west/data_class=interactions/shard=0007/date=2024-05-01/part-<uuid>.parquet

Each file holds ``owner`` (the user key text or item id), ``value`` (bytes), ``ts``
(nanoseconds, strictly increasing within a writer) and ``writer`` (a random id per
process); ``(ts, writer)`` identifies a record, so a record seen twice is one record.

Atomicity: a file is written under a dot-name ending in ``.tmp`` in its final
directory and renamed into place; readers skip dot- and underscore-names
(``ignore_prefixes``), so they never see a partial file. :meth:`ParquetColdStore.compact`
merges the small files of a partition into one the same way, then removes the old
ones; records that briefly exist in both are de-duplicated by ``(ts, writer)``.

Examples:
    >>> store = ParquetColdStore(ParquetColdStoreConfig(root="/tmp/cold"), "eu-west", policy)  # doctest: +SKIP
    >>> store.append([(DataKey("interactions", UserKey("eu", 1)), b"click")], date="2024-05-01")  # doctest: +SKIP
    1
    >>> store.read(DataKey("interactions", UserKey("eu", 1)))                                   # doctest: +SKIP
    b'click'
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar, Literal, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field

from geoshard.errors import BackendError, InputError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import DATA_CLASSES
from geoshard.storage.base import MAX_VALUE_BYTES, BackendConfig, ColdStore, validate_value
from geoshard.storage.keylayout import cold_bucket, cold_partition, require_data_key

__all__ = ["RECORD_SCHEMA", "ParquetColdStore", "ParquetColdStoreConfig"]

#: Columns of every data file (the partition columns live in the path).
RECORD_SCHEMA = pa.schema(
    [("owner", pa.string()), ("value", pa.binary()), ("ts", pa.int64()), ("writer", pa.int64())]
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_IGNORE = [".", "_"]
_PARTITION_FIELDS = pa.schema([("shard", pa.string()), ("date", pa.string())])
_PARTITIONING = ds.partitioning(_PARTITION_FIELDS, flavor="hive")
#: A dataset's schema, given rather than inferred: a directory whose only file is still a
#: hidden temp file (a write in progress) has no file to infer ``owner`` from.
_DATASET_SCHEMA = pa.unify_schemas([RECORD_SCHEMA, _PARTITION_FIELDS])


class ParquetColdStoreConfig(BackendConfig):
    """Config of the Parquet cold tier (``type: parquet``).

    Attributes:
        root: a local directory or a pyarrow filesystem URI.
        shards: hash buckets per (region, data class); a point read opens one bucket.
        compression: Parquet codec.
        max_value_bytes: the largest value one record may carry.
        fsync: on a local filesystem, fsync each file and its directory before it counts
            as written (survives power loss, not only a process crash).
    """

    type: Literal["parquet"] = "parquet"
    root: str
    shards: int = Field(default=16, gt=0, le=4096)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    max_value_bytes: int = Field(default=MAX_VALUE_BYTES, gt=0)
    fsync: bool = True


class _Clock:
    """Strictly increasing nanosecond stamps for this process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_CLOCK = _Clock()
_WRITER = secrets.randbits(62)


class ParquetColdStore(ColdStore):
    """One region's cold records in a partitioned Parquet dataset.

    Args:
        config: the backend config.
        region: the region whose records this store holds (the ``region=`` partition).
        residency: checked before every write of personal data.
        filesystem: a pyarrow filesystem to use instead of resolving ``config.root``
            (``root`` is then a path inside it), e.g. a ``SubTreeFileSystem``.
    """

    config_model: ClassVar[type[BackendConfig]] = ParquetColdStoreConfig
    config: ParquetColdStoreConfig

    def __init__(
        self,
        config: ParquetColdStoreConfig,
        region: str,
        residency: ResidencyPolicy | None,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        super().__init__(region, residency)
        self.config = config
        if filesystem is not None:
            self.fs, base = filesystem, config.root
        elif "://" in config.root:
            try:
                self.fs, base = pafs.FileSystem.from_uri(config.root)
            except (pa.ArrowInvalid, OSError) as exc:
                raise BackendError(
                    f"cannot open cold-tier root '{config.root}': {exc}; use a "
                    "local path or a URI such as file:///data or s3://bucket/prefix"
                ) from None
        else:
            self.fs, base = pafs.LocalFileSystem(), os.path.abspath(config.root)
        self.base = base.rstrip("/") or "/"
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._region_dir = f"{self.base}/{cold_partition(region)}"
        self.fs.create_dir(self._region_dir, recursive=True)

    @classmethod
    def from_config(
        cls,
        config: ParquetColdStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        filesystem: pafs.FileSystem | None = None,
    ) -> Self:
        """Build a store from its config (the registry's entry point); ``filesystem`` as
        for the constructor."""
        return cls(config, region, residency, filesystem=filesystem)

    # -- paths --------------------------------------------------------------------
    def _class_dir(self, data_class: str) -> str:
        return f"{self.base}/{cold_partition(self.region, data_class)}"

    def _bucket_dir(self, key: DataKey, date: str | None = None) -> str:
        bucket = cold_bucket(str(key.owner), self.config.shards)
        return (
            f"{self.base}/{cold_partition(self.region, key.data_class, bucket=bucket, date=date)}"
        )

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    # -- validation ---------------------------------------------------------------
    @staticmethod
    def _check_date(date: object) -> str:
        if not isinstance(date, str) or not _DATE.match(date):
            raise InputError(f"date {date!r} is malformed; use 'YYYY-MM-DD' such as '2024-05-01'")
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise InputError(f"date '{date}' is not a calendar date; use 'YYYY-MM-DD'") from None
        return date

    # -- writing ------------------------------------------------------------------
    def _write_atomic(self, directory: str, table: pa.Table, prefix: str = "part") -> str:
        """Write ``table`` as a temp file in ``directory``; return the temp path."""
        self.fs.create_dir(directory, recursive=True)
        name = f"{prefix}-{uuid.uuid4().hex}.parquet"
        tmp = f"{directory}/.{name}.tmp"
        comp = None if self.config.compression == "none" else self.config.compression
        try:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out, compression=comp)
            if self._local and self.config.fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            self._remove_quietly(tmp)
            raise
        return tmp

    def _publish(self, tmp: str) -> str:
        directory, _, name = tmp.rpartition("/")
        final = f"{directory}/{name[1:].removesuffix('.tmp')}"
        self.fs.move(tmp, final)
        if self._local and self.config.fsync:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return final

    def append(self, records: Sequence[tuple[DataKey, bytes]], *, date: str) -> int:
        """Append records; returns the count.

        Every key, value and residency decision is checked before anything is written.
        Each partition's file is written under a temp name and renamed into place; if a
        write fails, the temp files are removed and nothing becomes visible. (A process
        crash between two renames of one multi-partition call can leave some partitions
        written: the records are then simply present, never partial, and re-appending
        them is harmless because reads take the newest value.)

        Raises:
            InputError: a malformed key, date or an oversized/non-bytes value.
            ResidencyError: personal data this region may not store.
        """
        date = self._check_date(date)
        rows: list[tuple[DataKey, bytes]] = []
        for key, value in records:
            require_data_key(key)
            rows.append((key, validate_value(value, max_bytes=self.config.max_value_bytes)))
        self.guard_write([k for k, _ in rows])
        if not rows:
            return 0
        groups: dict[str, list[tuple[str, bytes, int]]] = {}
        for key, value in rows:
            groups.setdefault(self._bucket_dir(key, date), []).append(
                (str(key.owner), value, _CLOCK.next())
            )
        temps: list[str] = []
        try:
            for d, grp in groups.items():
                table = pa.table(
                    {
                        "owner": [g[0] for g in grp],
                        "value": [g[1] for g in grp],
                        "ts": [g[2] for g in grp],
                        "writer": [_WRITER] * len(grp),
                    },
                    schema=RECORD_SCHEMA,
                )
                temps.append(self._write_atomic(d, table))
        except Exception as exc:
            for t in temps:
                self._remove_quietly(t)
            raise BackendError(
                f"cold-tier write under '{self._region_dir}' failed: {exc}; nothing was written"
            ) from exc
        for t in temps:
            self._publish(t)
        return len(rows)

    def _remove_quietly(self, path: str) -> None:
        with contextlib.suppress(OSError):  # cleaning up after a failure already reported
            self.fs.delete_file(path)

    # -- reading ------------------------------------------------------------------
    def _dataset(self, path: str) -> ds.Dataset | None:
        if not self._exists(path):
            return None
        return ds.dataset(
            path,
            filesystem=self.fs,
            format="parquet",
            partitioning=_PARTITIONING,
            ignore_prefixes=_IGNORE,
            schema=_DATASET_SCHEMA,
        )

    def _table(
        self, path: str, flt: ds.Expression | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        dset = self._dataset(path)
        if dset is None:
            return RECORD_SCHEMA.empty_table()
        cols = columns or ["owner", "value", "ts", "writer"]
        tab = dset.to_table(columns=cols, filter=flt)
        return _dedupe(tab)

    def read(self, key: DataKey) -> bytes | None:
        """The newest value written for ``key``, or None."""
        return self.read_many([key])[0]

    def read_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """The newest value of each key, in order (None for absent); one scan per bucket."""
        for k in keys:
            require_data_key(k)
        by_dir: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            by_dir.setdefault(self._bucket_dir(k), []).append(i)
        out: list[bytes | None] = [None] * len(keys)
        for d, idx in by_dir.items():
            owners = sorted({str(keys[i].owner) for i in idx})
            tab = self._table(d, ds.field("owner").isin(owners))
            newest = _newest_per_owner(tab)
            for i in idx:
                out[i] = newest.get(str(keys[i].owner))
        return out

    def history(self, key: DataKey) -> list[bytes]:
        """Every value written for ``key``, oldest first; one scan of the key's bucket."""
        require_data_key(key)
        tab = self._table(self._bucket_dir(key), ds.field("owner") == str(key.owner))
        tab = tab.sort_by([("ts", "ascending"), ("writer", "ascending")])
        return list(tab.column("value").to_pylist())

    def scan(
        self, data_class: str, *, date: str | None = None, latest_only: bool = False
    ) -> list[tuple[str, bytes]]:
        """Every (owner, value) of a class in this region, in write order.

        Args:
            data_class: the class to scan.
            date: only records appended with this date.
            latest_only: only the newest value per owner (sorted by owner).
        """
        if data_class not in DATA_CLASSES:
            raise InputError(
                f"data class '{data_class}' is unknown; use one of {', '.join(DATA_CLASSES)}"
            )
        flt = None if date is None else ds.field("date") == self._check_date(date)
        dset = self._dataset(self._class_dir(data_class))
        if dset is None:
            return []
        tab = _dedupe(dset.to_table(columns=["owner", "value", "ts", "writer"], filter=flt))
        if latest_only:
            return sorted(_newest_per_owner(tab).items())
        tab = tab.sort_by([("ts", "ascending"), ("writer", "ascending")])
        return list(
            zip(tab.column("owner").to_pylist(), tab.column("value").to_pylist(), strict=True)
        )

    def files(self, data_class: str | None = None) -> list[str]:
        """Paths of the visible data files (temp and hidden files excluded)."""
        root = self._region_dir if data_class is None else self._class_dir(data_class)
        if not self._exists(root):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(root, recursive=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith(tuple(_IGNORE))
        )

    # -- maintenance --------------------------------------------------------------
    def compact(self, data_class: str | None = None, *, min_files: int = 2) -> int:
        """Merge the data files of every leaf partition with ``>= min_files`` files into one.

        The merged file is written under a temp name and renamed into place before the
        old files are deleted, so a reader sees every record at every moment (a record in
        both files is one record: it is de-duplicated by ``(ts, writer)``).

        Returns:
            How many files were removed.
        """
        by_leaf: dict[str, list[str]] = {}
        for f in self.files(data_class):
            by_leaf.setdefault(f.rpartition("/")[0], []).append(f)
        removed = 0
        for leaf, paths in sorted(by_leaf.items()):
            if len(paths) < min_files:
                continue
            tab = _dedupe(
                pa.concat_tables(
                    [pq.read_table(p, filesystem=self.fs, schema=RECORD_SCHEMA) for p in paths]
                )
            )
            tab = tab.sort_by([("ts", "ascending"), ("writer", "ascending")])
            self._publish(self._write_atomic(leaf, tab, prefix="compact"))
            for p in paths:
                self.fs.delete_file(p)
                removed += 1
        return removed


def _dedupe(tab: pa.Table) -> pa.Table:
    """Drop repeated records (same ``(ts, writer)``), e.g. during a compaction."""
    if tab.num_rows == 0:
        return tab.select(["owner", "value", "ts", "writer"])
    tab = tab.select(["owner", "value", "ts", "writer"])
    idx = tab.append_column("_i", pa.array(range(tab.num_rows), pa.int64()))
    first = idx.group_by(["ts", "writer"], use_threads=False).aggregate([("_i", "min")])
    keep = pc.sort_indices(first.column("_i_min"))
    return tab.take(pc.take(first.column("_i_min"), keep))


def _newest_per_owner(tab: pa.Table) -> dict[str, bytes]:
    if tab.num_rows == 0:
        return {}
    tab = tab.sort_by([("owner", "ascending"), ("ts", "descending"), ("writer", "descending")])
    out: dict[str, bytes] = {}
    for owner, value in zip(
        tab.column("owner").to_pylist(), tab.column("value").to_pylist(), strict=True
    ):
        out.setdefault(owner, value)
    return out
