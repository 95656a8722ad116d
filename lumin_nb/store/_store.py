"""The Store: Lumin's durable, append-only event log and the domain-event journal beside it.

On disk, under the folder the caller gives (``./.lumin`` or ``LUMIN_HOME``)::

    writer.lock                 flock held by the one writing process (readers test it)
    hot/000000000007.arrows     Arrow IPC stream segments; the highest is being written
    cold/000000000003.parquet   sealed segments compacted to zstd Parquet (same number)
    journal/000000000002.arrows domain events of writer session 2 (seq, ts, type, data)

Invariants: files are append-only and a sealed segment never changes; compaction writes the
Parquet file (temp, fsync, rename) before it deletes the hot one, so a crash at any point
leaves every event in at least one file (a hot file whose number is also cold is a leftover and
is ignored). A writer always starts a new segment and a new journal file; when it opens a
store whose last segment was torn by a crash it cuts the torn bytes off with a warning.

Concurrency: one writing process (``writer.lock``), any number of read-only processes, which
re-list the folder on every query and skip a partial tail while the writer is alive. Inside
the writing process one lock guards the catalogue, the queue and the writer's progress, so
every query sees each accepted row exactly once: in a segment or still queued.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import threading
import time
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lumin_nb.config import Config
from lumin_nb.errors import SchemaError, StoreError, UnknownColumnError, closest
from lumin_nb.event import COLUMNS, EVENT_SCHEMA, problems
from lumin_nb.store import journal
from lumin_nb.store._writer import APPEND_MAX_WAIT_S, Catalog, SegmentInfo, Writer
from lumin_nb.store.dedupe import SeqIndex
from lumin_nb.store.segment import (
    COLD_DIR,
    COLD_SUFFIX,
    HOT_DIR,
    HOT_SUFFIX,
    cold_info,
    read_hot,
    segment_name,
    segment_number,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb
    from numpy.typing import NDArray

    Mask = NDArray[np.bool_]
    #: a vectorised row predicate: a table in, one bool per row out
    RowMask = Callable[[pa.Table], Mask]

LOCK_FILE: Final = "writer.lock"
_NO_HISTORY: Final = journal.JOURNAL_SCHEMA.empty_table()
_TS_TYPE: Final = pa.timestamp("ns", tz="UTC")


def _ts(ns: int) -> pa.Scalar:
    return pa.scalar(ns, type=pa.int64()).cast(_TS_TYPE)


def _time_expr(since_ns: int | None, until_ns: int | None) -> pc.Expression | None:
    expr: pc.Expression | None = None
    if since_ns is not None:
        expr = pc.field("ts") >= _ts(since_ns)
    if until_ns is not None:
        cond = pc.field("ts") < _ts(until_ns)
        expr = cond if expr is None else expr & cond
    return expr


def check_columns(columns: list[str] | None, valid: tuple[str, ...] = COLUMNS) -> None:
    """Raise UnknownColumnError for any name in `columns` that is not an event column."""
    for name in columns or ():
        if name not in valid:
            raise UnknownColumnError(
                f"column {name!r} is not an event column.{closest(name, valid)}\n"
                f"The event columns are: {', '.join(valid)}.\n"
                "Fix: store.scan(columns=['ts', 'kind', 'entity'])"
            )


def time_mask(table: pa.Table, since_ns: int | None, until_ns: int | None) -> Mask:
    """Return the rows of `table` with since_ns <= ts < until_ns as a numpy mask."""
    ts = np.concatenate(
        [c.to_numpy(zero_copy_only=False).view(np.int64) for c in table.column("ts").chunks]
        or [np.empty(0, np.int64)]
    )
    mask = np.ones(len(ts), dtype=bool)
    if since_ns is not None:
        mask &= ts >= since_ns
    if until_ns is not None:
        mask &= ts < until_ns
    return mask


def _overlaps(seg: SegmentInfo, since_ns: int | None, until_ns: int | None) -> bool:
    if seg.rows == 0 or seg.min_ts is None or seg.max_ts is None:
        return seg.rows > 0
    if since_ns is not None and seg.max_ts < since_ns:
        return False
    return not (until_ns is not None and seg.min_ts >= until_ns)


def _is_writer_alive(root: pathlib.Path) -> bool:
    """Whether another process holds the writer lock of the store at `root`."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False


class Store:
    """Lumin's durable event store: append batches, record domain events, query everything.

    Open with `Store.open`; one process writes, others may open ``read_only=True`` at the
    same time. See the module docstring for the on-disk layout and its invariants.
    """

    path: pathlib.Path

    def __init__(self, path: pathlib.Path, config: Config, *, read_only: bool) -> None:
        self.path = path
        self.config = config
        self.is_read_only = read_only
        self._cond = threading.Condition(threading.Lock())
        self._append_lock = threading.Lock()
        self._catalog = Catalog()
        self._index = SeqIndex()
        self.rows_deduplicated = 0
        self._writer: Writer | None = None
        self._lock_fd: int | None = None
        self._warned: set[tuple[str, int]] = set()
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._duck_lock = threading.Lock()
        self._is_closed = False
        # Batches of hot segments read so far, by path. Segments are append-only, so the first
        # N batches of a path never change; queries re-read only what is new.
        self._hot_cache: dict[pathlib.Path, list[pa.RecordBatch]] = {}
        self._hot_cache_lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Config | None = None,
        read_only: bool = False,
    ) -> Store:
        """Open (creating when writable) the store in folder `path` and return it.

        Raises StoreError when the folder cannot be created, when another process is already
        writing to it (open it with ``read_only=True`` instead), or, read-only, when it does not
        exist. A torn last segment left by a crash is cut off with a RuntimeWarning.
        """
        root = pathlib.Path(path).absolute()
        store = cls(root, config or Config(), read_only=read_only)
        if read_only:
            if not root.is_dir():
                raise StoreError(
                    f"no Lumin store at {root}: the folder does not exist.\n"
                    "Expected the folder a writer created (default ./.lumin or $LUMIN_HOME).\n"
                    f"Fix: Store.open({str(root)!r}) once without read_only=True"
                )
            store._catalog = store._load_catalog(repair=False)
            return store
        store._open_writable()
        return store

    def _open_writable(self) -> None:
        root = self.path
        try:
            for sub in (HOT_DIR, COLD_DIR, journal.JOURNAL_DIR):
                (root / sub).mkdir(parents=True, exist_ok=True)
            fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the Lumin store at {root}: {exc.strerror}.\n"
                "Fix: pass a writable folder, e.g. Store.open('./.lumin'), or set LUMIN_HOME"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another process is writing to the Lumin store at {root} (it holds "
                f"{root / LOCK_FILE}).\nFix: Store.open({str(root)!r}, read_only=True) to read "
                "it, or give this process its own folder"
            ) from None
        self._lock_fd = fd
        self._catalog = self._load_catalog(repair=True)
        history = journal.read_journal(root, live=False)
        self._repair_journal()
        last_seq = int(pc.max(history.column("seq")).as_py() or 0) if history.num_rows else 0
        sessions = [segment_number(p) for p in journal.journal_files(root)]
        session = max(sessions, default=0) + 1
        journal_path = root / journal.JOURNAL_DIR / segment_name(session, HOT_SUFFIX)
        self._writer = Writer(root, self.config, self._cond, self._catalog, journal_path, last_seq)
        self.record(
            "StoreOpened",
            path=str(root),
            pid=os.getpid(),
            session=session,
            segments=len(self._catalog.segments),
            events=sum(s.rows for s in self._catalog.segments),
        )

    def _repair_journal(self) -> None:
        for path in journal.journal_files(self.path):
            read = read_hot(path)
            if read.torn_bytes:
                os.truncate(path, read.good_bytes)

    def _load_catalog(self, *, repair: bool) -> Catalog:
        """Return the segments on disk; `repair` cuts torn tails and removes leftovers."""
        root = self.path
        live = (not repair) and _is_writer_alive(root)
        segments: dict[int, SegmentInfo] = {}
        for path in sorted((root / COLD_DIR).glob(f"*{COLD_SUFFIX}")):
            rows, lo, hi = cold_info(path)
            n = segment_number(path)
            segments[n] = SegmentInfo(n, path, True, rows, 0, path.stat().st_size, lo, hi)
            if repair:
                self._index.add_batch(pq.read_table(path, columns=["producer", "seq"]))
        if repair:
            for tmp in (root / COLD_DIR).glob("*.tmp"):
                tmp.unlink()
        for path in sorted((root / HOT_DIR).glob(f"*{HOT_SUFFIX}")):
            n = segment_number(path)
            if n in segments:  # compaction finished writing the Parquet file; a leftover
                if repair:
                    path.unlink()
                continue
            try:
                read = read_hot(path)
            except FileNotFoundError:  # compacted by the live writer while we listed
                continue
            if read.torn_bytes and not live:
                self._warn_torn(path, read.torn_bytes, read.good_bytes)
                if repair:
                    os.truncate(path, read.good_bytes)
            info = SegmentInfo(n, path, False, batches=len(read.batches), bytes=read.good_bytes)
            for batch in read.batches:
                info.rows += batch.num_rows
                if batch.num_rows:
                    lo_s, hi_s = pc.min_max(batch.column("ts")).values()
                    lo_ns, hi_ns = lo_s.value, hi_s.value
                    info.min_ts = lo_ns if info.min_ts is None else min(info.min_ts, lo_ns)
                    info.max_ts = hi_ns if info.max_ts is None else max(info.max_ts, hi_ns)
                if repair:
                    self._index.add_batch(batch)
            segments[n] = info
        catalog = Catalog(sorted(segments.values(), key=lambda s: s.number))
        catalog.next_number = max(segments, default=0) + 1
        return catalog

    def _warn_torn(self, path: pathlib.Path, torn: int, good: int) -> None:
        key = (str(path), good)
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(
            f"Lumin store segment {path} ends with a torn write (a crash cut a batch): "
            f"dropped the last {torn} bytes, kept {good} bytes of complete batches. Every "
            "event flushed before the crash is intact. Silence with "
            "warnings.filterwarnings('ignore', 'Lumin store segment').",
            RuntimeWarning,
            stacklevel=4,
        )

    # -- writing ------------------------------------------------------------------------------

    def _live_writer(self) -> Writer:
        if self.is_read_only:
            raise StoreError(
                f"the Lumin store at {self.path} is open read-only.\n"
                f"Fix: Store.open({str(self.path)!r}) without read_only=True (one writer only)"
            )
        if self._writer is None or self._is_closed:
            raise StoreError(f"the Lumin store at {self.path} is closed. Fix: Store.open(...)")
        return self._writer

    def append(self, batch: pa.RecordBatch) -> int:
        """Accept a batch of events; return how many rows were new (not replays).

        Rows whose (producer, seq) the store already holds are dropped. The batch goes to the
        background writer's queue: this returns at once unless the queue holds
        ``QUEUE_MAX_BYTES`` already, then it waits for the writer (up to ``APPEND_MAX_WAIT_S``,
        then StoreError, with nothing accepted). Accepted rows are never lost by the process;
        they are durable after the next flush.
        """
        writer = self._live_writer()
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
            if batch is None:
                return 0
        if not batch.schema.equals(EVENT_SCHEMA):
            found = problems(batch)
            raise SchemaError(
                "the batch does not fit the Lumin event schema:\n  - "
                + "\n  - ".join(found or ["column order or nullability differs"])
                + "\nFix: build batches with lumin_nb.event.batch_from_columns(...)"
            )
        if batch.num_rows == 0:
            return 0
        with self._append_lock:
            plan = self._index.check(batch.column("producer"), batch.column("seq"))
            kept = batch.filter(pa.array(plan.keep)) if plan.duplicates else batch
            meta: dict[str, object] = {"rows": kept.num_rows, "duplicates": plan.duplicates}
            if kept.num_rows:
                producers = plan.producers
                lo, hi = pc.min_max(kept.column("seq")).values()
                meta.update(
                    producer=producers[0] if len(producers) == 1 else producers,
                    seq_first=lo.as_py(),
                    seq_last=hi.as_py(),
                )
            deadline = time.monotonic() + APPEND_MAX_WAIT_S
            with self._cond:
                while kept.num_rows and not writer.has_room(kept.nbytes):
                    writer.check()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StoreError(
                            f"the Lumin store writer for {self.path} has not drained its queue "
                            f"for {APPEND_MAX_WAIT_S} s ({writer.queue_bytes} bytes queued); "
                            "this batch was not accepted.\nFix: retry later, or check the disk."
                        )
                    self._cond.wait(left)
                self._index.commit(plan)
                self.rows_deduplicated += plan.duplicates
                if kept.num_rows:
                    writer.enqueue(kept, meta)
        return int(kept.num_rows)

    def record(self, type: str, **data: object) -> None:
        """Record a domain event (StoreOpened, DebugSessionStarted, ConfigChanged, ...).

        `data` must be JSON-serialisable (other values are stored as their str()); the event
        is durable after the next flush and shows in `history`.
        """
        writer = self._live_writer()
        with self._cond:
            writer.check()
            writer.record(type, data)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Return when everything appended and recorded so far is on disk (fsynced)."""
        self._live_writer().flush(timeout_s)

    # -- reading ------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[list[SegmentInfo], list[pa.RecordBatch]]:
        if self.is_read_only:
            return self._load_catalog(repair=False).segments, []
        with self._cond:
            segments = [replace(s) for s in self._catalog.segments]
            pending = self._writer.pending_batches() if self._writer else []
        return segments, pending

    def _read(
        self,
        *,
        since_ns: int | None,
        until_ns: int | None,
        columns: list[str] | None,
        where: RowMask | None = None,
        extra_columns: tuple[str, ...] = (),
        cold: bool = True,
    ) -> tuple[pa.Table, list[pathlib.Path]]:
        """Return the rows in [since_ns, until_ns) for which `where` holds, from every segment
        and the pending batches. With ``cold=False`` cold segments are not read; the paths of
        those that overlap the time range are returned instead (for DuckDB to scan itself).
        `extra_columns` are read for `where` and dropped before returning."""
        check_columns(columns)
        names = list(columns) if columns is not None else list(COLUMNS)
        read_names = names + [c for c in ("ts", *extra_columns) if c not in names]
        for attempt in range(5):
            segments, pending = self._snapshot()
            try:
                table, cold_paths = self._read_snapshot(
                    segments, pending, since_ns, until_ns, read_names, where, cold
                )
                return table.select(names), cold_paths
            except FileNotFoundError:  # compaction moved a segment between listing and read
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _hot_batches(self, seg: SegmentInfo) -> list[pa.RecordBatch]:
        """The first `seg.batches` batches of a hot segment, memory-mapped once and cached."""
        with self._hot_cache_lock:
            cached = self._hot_cache.get(seg.path)
        if cached is None or len(cached) < seg.batches:
            cached = read_hot(seg.path, max_batches=seg.batches).batches
            with self._hot_cache_lock:
                self._hot_cache[seg.path] = cached
        return cached[: seg.batches]

    def _forget_gone_segments(self, segments: list[SegmentInfo]) -> None:
        live = {seg.path for seg in segments if not seg.is_cold}
        with self._hot_cache_lock:
            for path in [p for p in self._hot_cache if p not in live]:
                del self._hot_cache[path]

    def _read_snapshot(
        self,
        segments: list[SegmentInfo],
        pending: list[pa.RecordBatch],
        since_ns: int | None,
        until_ns: int | None,
        names: list[str],
        where: RowMask | None,
        cold: bool,
    ) -> tuple[pa.Table, list[pathlib.Path]]:
        schema = pa.schema([EVENT_SCHEMA.field(n) for n in names])
        parts: list[pa.Table] = []
        cold_paths: list[pathlib.Path] = []
        ranged = since_ns is not None or until_ns is not None

        def add(table: pa.Table) -> None:
            table = table.select(names)
            mask = time_mask(table, since_ns, until_ns) if ranged else None
            if where is not None:
                found = where(table)
                mask = found if mask is None else mask & found
            if mask is not None and not mask.all():
                table = table.filter(pa.array(mask))
            if table.num_rows:
                parts.append(table)

        self._forget_gone_segments(segments)
        for seg in segments:
            if not _overlaps(seg, since_ns, until_ns):
                continue
            if seg.is_cold:
                if not cold:
                    cold_paths.append(seg.path)
                    continue
                table = pq.read_table(
                    seg.path, columns=names, filters=_time_expr(since_ns, until_ns)
                )
                add(table.cast(schema))
            else:
                add(pa.Table.from_batches(self._hot_batches(seg), schema=EVENT_SCHEMA))
        if pending:
            add(pa.Table.from_batches(pending, schema=EVENT_SCHEMA))
        if not parts:
            return schema.empty_table(), cold_paths
        return pa.concat_tables(parts), cold_paths

    def scan(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Return every stored event with since_ns <= ts < until_ns, in storage order.

        Includes cold Parquet segments, hot segments (read zero-copy) and batches accepted
        but not yet written. `columns` selects columns (UnknownColumnError for a bad name).
        """
        table, _ = self._read(since_ns=since_ns, until_ns=until_ns, columns=columns)
        return table

    def history(
        self,
        *,
        type: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> pa.Table:
        """Return the domain events, ordered by seq: columns seq, ts, type, data (JSON text).

        Includes events recorded but not yet flushed; an ``EventBatchRecorded`` appears once
        its batch is written to a segment (milliseconds after `append`).
        """
        live = True if not self.is_read_only else _is_writer_alive(self.path)
        table = journal.read_journal(self.path, live=live)
        if self._writer is not None and not self._is_closed:
            with self._cond:
                rows = list(self._writer.journal_pending)
            if rows:
                extra = pa.Table.from_batches([journal.rows_to_batch(rows)])
                table = pa.concat_tables([table, extra])
        expr = _time_expr(since_ns, until_ns)
        if type is not None:
            cond = pc.field("type") == type
            expr = cond if expr is None else expr & cond
        if expr is not None:
            table = table.filter(expr)
        return table.take(pc.sort_indices(table, [("seq", "ascending")]))

    def sql(self, text: str) -> pa.Table:
        """Run DuckDB SQL over views ``events`` (the whole store) and ``history``.

        Raises QueryError with DuckDB's message, the event columns and a fix.
        """
        from lumin_nb.store.query import sql_table

        return sql_table(self, text)

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        if self._duck is None:
            self._duck = duckdb.connect(":memory:")
        return self._duck

    def _run_sql(self, text: str) -> pa.Table:
        """Run `text` against fresh ``events``/``history`` views (raises duckdb errors)."""
        hot, cold_paths = self._read(since_ns=None, until_ns=None, columns=None, cold=False)
        with self._duck_lock:
            con = self._duckdb()
            con.register("_lumin_hot", hot)
            # the journal is read from disk, so only when the query can use it
            con.register("history", self.history() if "history" in text.lower() else _NO_HISTORY)
            if cold_paths:
                files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in cold_paths)
                con.execute(
                    "create or replace temp view events as select * from _lumin_hot "
                    f"union all by name select * from read_parquet([{files}])"
                )
            else:
                con.execute("create or replace temp view events as select * from _lumin_hot")
            try:
                rel = con.sql(text)
                return rel.to_arrow_table() if rel is not None else pa.table({})
            finally:
                con.unregister("_lumin_hot")
                con.unregister("history")

    # -- retention ----------------------------------------------------------------------------

    def compact(self, *, now_ns: int | None = None) -> dict[str, int]:
        """Apply retention; return counts of what it did.

        Sealed hot segments whose newest event is older than ``retention_age_s`` become zstd
        Parquet; cold segments older than twice that are deleted; then the oldest sealed
        segments are deleted while the store is above ``retention_max_bytes``. The active
        segment is never touched. Returned keys: compacted, deleted_by_age, deleted_by_size,
        bytes_before, bytes_after. A `StoreCompacted` domain event is recorded when anything
        was compacted or deleted (the observatory runs this every minute).
        """
        from lumin_nb.store.retention import apply_retention

        self._live_writer()
        counts = apply_retention(self, time.time_ns() if now_ns is None else now_ns)
        if counts["compacted"] or counts["deleted_by_age"] or counts["deleted_by_size"]:
            self.record("StoreCompacted", **counts)
        return counts

    # -- bookkeeping ----------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Return path, bytes on disk, segment counts, events stored, rows deduplicated, last
        flush time (epoch ns), writer queue depth (batches) and queued bytes."""
        segments, pending = self._snapshot()
        on_disk = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        writer = self._writer
        with self._cond:
            queue_depth = writer.queue_depth if writer else 0
            queue_bytes = writer.queue_bytes if writer else 0
            last_flush = writer.last_flush_ns if writer else None
        return {
            "path": str(self.path),
            "is_read_only": self.is_read_only,
            "bytes_on_disk": on_disk,
            "hot_segments": sum(1 for s in segments if not s.is_cold),
            "cold_segments": sum(1 for s in segments if s.is_cold),
            "events_stored": sum(s.rows for s in segments) + sum(b.num_rows for b in pending),
            "rows_deduplicated": self.rows_deduplicated,
            "last_flush_ns": last_flush,
            "queue_depth": queue_depth,
            "queue_bytes": queue_bytes,
        }

    def close(self) -> None:
        """Flush everything, seal the active segment and stop the writer. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        try:
            if self._writer is not None:
                self._writer.close()
                if self._writer.error is not None:
                    raise StoreError(
                        f"the Lumin store writer for {self.path} failed: {self._writer.error!r}"
                    ) from self._writer.error
        finally:
            if self._duck is not None:
                self._duck.close()
                self._duck = None
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.is_read_only else "writable"
        return f"<lumin Store {str(self.path)!r} {mode}{' closed' if self._is_closed else ''}>"
