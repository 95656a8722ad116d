"""Segments: the files that hold events. Hot ones are Arrow IPC streams, cold ones Parquet.

A hot segment (``hot/<number>.arrows``) is an Arrow IPC *stream*: the schema, then one
record batch per appended batch, each preceded by its own dictionaries when they changed (the
stream format allows replacing dictionaries between batches; the IPC file format does not).
It is written append-only by one writer and never changes once sealed (end-of-stream marker,
fsync, close). It is read through a memory map, so reading the hot tail copies nothing.

A cold segment (``cold/<number>.parquet``) is a sealed hot segment rewritten as zstd Parquet
(about 3.7x smaller), with its row count and ts range in the file's key-value metadata.

A crash can leave the last hot segment torn (a batch cut part way). `read_hot` keeps every
complete batch and reports the bytes after the last one; the writer cuts them off on its next
open, a reader only skips them.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

HOT_DIR: Final = "hot"
COLD_DIR: Final = "cold"
HOT_SUFFIX: Final = ".arrows"
COLD_SUFFIX: Final = ".parquet"
PARQUET_COMPRESSION: Final = "zstd"
#: small enough that a time window skips most row groups by their ts statistics
PARQUET_ROW_GROUP_ROWS: Final = 1 << 16

_META_ROWS: Final = b"lumin.rows"
_META_MIN_TS: Final = b"lumin.min_ts"
_META_MAX_TS: Final = b"lumin.max_ts"


def segment_name(number: int, suffix: str) -> str:
    """Return the file name of segment `number` (zero-padded so names sort by number)."""
    return f"{number:012d}{suffix}"


def segment_number(path: pathlib.Path) -> int:
    """Return the number in a segment's file name."""
    return int(path.name.split(".", 1)[0])


def fsync_dir(path: pathlib.Path) -> None:
    """Make the directory entries of `path` durable (new and renamed files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class HotRead:
    """The complete batches of a hot segment and where its readable part ends."""

    batches: list[pa.RecordBatch]
    good_bytes: int
    size_bytes: int

    @property
    def torn_bytes(self) -> int:
        """Bytes after the last complete batch (a cut write), 0 for an intact segment."""
        return self.size_bytes - self.good_bytes


def read_hot(path: pathlib.Path, *, max_batches: int | None = None) -> HotRead:
    """Return the complete batches of the hot segment at `path` (zero-copy, memory-mapped).

    Stops after `max_batches` when given (a consistent snapshot of a segment being written).
    A torn tail is not an error: reading stops at the last complete batch.
    """
    source = pa.memory_map(str(path))
    size = source.size()
    batches: list[pa.RecordBatch] = []
    good = 0
    try:
        reader = ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError):
        return HotRead(batches, 0, size)  # not even a whole schema message yet
    while max_batches is None or len(batches) < max_batches:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            good = source.tell()
            break
        except (pa.ArrowInvalid, OSError):
            break
        batches.append(batch)
        good = source.tell()
    return HotRead(batches, good, size)


class HotWriter:
    """Appends batches to a new hot segment; `sync` makes them durable, `seal` closes it."""

    def __init__(self, path: pathlib.Path, schema: pa.Schema) -> None:
        self.path = path
        self.number = segment_number(path)
        self._file = pa.OSFile(str(path), "wb")
        self._ipc = ipc.new_stream(self._file, schema)
        self.batches = 0
        self.rows = 0
        self.min_ts: int | None = None
        self.max_ts: int | None = None
        self.is_sealed = False

    @property
    def bytes(self) -> int:
        """Bytes written so far."""
        return int(self._file.tell())

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch (visible to readers of the file once this returns)."""
        self._ipc.write_batch(batch)
        self.batches += 1
        self.rows += batch.num_rows
        if "ts" in batch.schema.names and batch.num_rows:
            lo, hi = pc.min_max(batch.column("ts")).values()
            lo_ns, hi_ns = lo.value, hi.value
            self.min_ts = lo_ns if self.min_ts is None else min(self.min_ts, lo_ns)
            self.max_ts = hi_ns if self.max_ts is None else max(self.max_ts, hi_ns)

    def sync(self) -> None:
        """fsync the segment: everything written so far survives a crash."""
        os.fsync(self._file.fileno())

    def seal(self) -> None:
        """Write the end-of-stream marker, fsync and close; the segment never changes again."""
        if self.is_sealed:
            return
        self._ipc.close()
        self.sync()
        self._file.close()
        self.is_sealed = True


def ts_range(table: pa.Table) -> tuple[int | None, int | None]:
    """Return the smallest and largest ts of `table` in epoch ns (None when empty)."""
    if table.num_rows == 0:
        return None, None
    lo, hi = pc.min_max(table.column("ts")).values()
    return lo.value, hi.value


def write_cold(table: pa.Table, path: pathlib.Path) -> None:
    """Write `table` as a zstd Parquet segment at `path` atomically (temp file, fsync, rename)."""
    lo, hi = ts_range(table)
    meta = dict(table.schema.metadata or {})
    meta[_META_ROWS] = str(table.num_rows).encode()
    meta[_META_MIN_TS] = str(lo if lo is not None else "").encode()
    meta[_META_MAX_TS] = str(hi if hi is not None else "").encode()
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(
        table.replace_schema_metadata(meta),
        tmp,
        compression=PARQUET_COMPRESSION,
        row_group_size=PARQUET_ROW_GROUP_ROWS,
    )
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def cold_info(path: pathlib.Path) -> tuple[int, int | None, int | None]:
    """Return (rows, min_ts, max_ts) of a cold segment from its metadata alone."""
    meta = pq.read_metadata(path)
    kv = meta.metadata or {}
    lo = kv.get(_META_MIN_TS, b"")
    hi = kv.get(_META_MAX_TS, b"")
    return meta.num_rows, int(lo) if lo else None, int(hi) if hi else None
