"""The background writer: the only thread that writes event data and journal rows to disk.

`Writer.submit` puts a batch on a bounded queue (bounded in bytes, `QUEUE_MAX_BYTES`); the
writer thread wakes, takes everything queued, appends it to the active hot segment, fsyncs the
segment, then writes and fsyncs the journal rows describing it. So data becomes durable within
milliseconds of being appended when the disk keeps up, and never later than
``config.flush_interval_s`` while the writer is waiting for more. A segment is sealed and a
new one started once it reaches ``config.segment_max_bytes``.

Invariants, all under the shared lock: a batch is always in exactly one of the queue, the
in-flight list, or a segment's committed batch count, so a snapshot taken under the lock
sees every accepted row exactly once. ``durable`` only grows; `flush` waits for it.
"""

from __future__ import annotations

import collections
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, cast

import pyarrow as pa

from lumin_nb.errors import StoreError
from lumin_nb.event import EVENT_SCHEMA
from lumin_nb.store import journal
from lumin_nb.store.segment import HOT_SUFFIX, HotWriter, fsync_dir, segment_name

if TYPE_CHECKING:
    from lumin_nb.config import Config

#: bytes of appended batches waiting for the writer before `append` blocks
QUEUE_MAX_BYTES: Final = 256 << 20
#: the longest `append` waits for queue space before raising StoreError
APPEND_MAX_WAIT_S: Final = 10.0


@dataclass
class SegmentInfo:
    """One segment of the catalogue; `batches` counts the batches a reader may use."""

    number: int
    path: pathlib.Path
    is_cold: bool
    rows: int = 0
    batches: int = 0
    bytes: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    is_sealed: bool = True


@dataclass
class Catalog:
    """The segments of a store, oldest first. Guarded by the writer's lock."""

    segments: list[SegmentInfo] = field(default_factory=list)
    next_number: int = 1

    def take_number(self) -> int:
        """Return a fresh segment number."""
        n = self.next_number
        self.next_number += 1
        return n


@dataclass
class _Item:
    batch: pa.RecordBatch
    meta: dict[str, object]
    journal_seq: int


class Writer:
    """Owns the writer thread, its bounded queue, the active hot segment and the journal file."""

    def __init__(
        self,
        root: pathlib.Path,
        config: Config,
        cond: threading.Condition,
        catalog: Catalog,
        journal_path: pathlib.Path,
        journal_seq: int,
    ) -> None:
        self._root = root
        self._config = config
        self._cond = cond
        self._catalog = catalog
        self._queue: collections.deque[_Item] = collections.deque()
        self.queue_bytes = 0
        self.in_flight: list[pa.RecordBatch] = []
        self.journal_pending: list[dict[str, object]] = []
        self.journal_seq = journal_seq
        self.submitted = 0
        self.durable = 0
        self.last_flush_ns: int | None = None
        self.events_written = 0
        self.error: BaseException | None = None
        self._flush_requested = False
        self._closing = False
        self._active: HotWriter | None = None
        self._active_info: SegmentInfo | None = None
        self._journal = HotWriter(journal_path, journal.JOURNAL_SCHEMA)
        fsync_dir(journal_path.parent)
        self._thread = threading.Thread(target=self._run, name="lumin-store-writer", daemon=True)
        self._thread.start()

    # -- called by the store, lock held -------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Batches waiting for the writer."""
        return len(self._queue)

    def pending_batches(self) -> list[pa.RecordBatch]:
        """Return the accepted batches not yet in a segment (lock held)."""
        return [*self.in_flight, *(item.batch for item in self._queue)]

    def has_room(self, nbytes: int) -> bool:
        """Whether a batch of `nbytes` fits in the queue now (an empty queue takes anything)."""
        return not self._queue or self.queue_bytes + nbytes <= QUEUE_MAX_BYTES

    def enqueue(self, batch: pa.RecordBatch, meta: dict[str, object]) -> None:
        """Queue an accepted batch for the writer (lock held, room checked)."""
        self.check()
        self.journal_seq += 1  # the journal order is the order of the appends
        self._queue.append(_Item(batch, meta, self.journal_seq))
        self.queue_bytes += batch.nbytes
        self.submitted += 1
        self._cond.notify_all()

    def record(self, type: str, data: dict[str, object]) -> None:
        """Queue a domain event; it is written with the next flush (lock held)."""
        self.journal_seq += 1
        self.journal_pending.append(journal.encode(self.journal_seq, type, data))
        self.submitted += 1
        self._cond.notify_all()

    def check(self) -> None:
        """Raise StoreError when the writer thread has failed or stopped."""
        if self.error is not None:
            raise StoreError(
                f"the Lumin store writer for {self._root} failed: {self.error!r}. Accepted "
                "batches are kept in memory. Fix: free disk space or check permissions, then "
                "reopen the store."
            ) from self.error
        if self._closing:
            raise StoreError(f"the Lumin store at {self._root} is closed. Fix: Store.open(...)")

    # -- called by the store, lock not held -------------------------------------------------

    def flush(self, timeout_s: float) -> None:
        """Return when everything submitted so far is durable; StoreError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self.submitted
            self._flush_requested = True
            self._cond.notify_all()
            while self.durable < target:
                if self.error is not None:
                    self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"flush of the Lumin store at {self._root} did not finish within "
                        f"{timeout_s} s ({target - self.durable} appends still pending). "
                        "Fix: Store.flush(timeout_s=60) on a slow disk."
                    )
                self._cond.wait(left)

    def close(self) -> None:
        """Write everything, seal the active segment, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self._config.flush_interval_s
        try:
            while True:
                with self._cond:
                    while (
                        not self._queue
                        and not self.journal_pending
                        and not self._flush_requested
                        and not self._closing
                    ):
                        self._cond.wait(interval)
                    items = list(self._queue)
                    self._queue.clear()
                    self.queue_bytes = 0
                    self.in_flight = [item.batch for item in items]
                    self._flush_requested = False
                    closing = self._closing
                    self._cond.notify_all()  # room in the queue again
                self._write(items)
                if closing:
                    with self._cond:
                        if self._queue or self.journal_pending:
                            continue
                    self._seal()
                    self._journal.seal()
                    return
        except BaseException as exc:  # the thread must report, never die silently
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _write(self, items: list[_Item]) -> None:
        rows: list[dict[str, object]] = []
        for item in items:
            seg = self._segment()
            seg.write(item.batch)
            with self._cond:
                info = self._active_info
                assert info is not None
                info.rows, info.batches, info.bytes = seg.rows, seg.batches, seg.bytes
                info.min_ts, info.max_ts = seg.min_ts, seg.max_ts
                self.in_flight.pop(0)
                self.events_written += item.batch.num_rows
                meta = {**item.meta, "segment": seg.path.name}
                rows.append(journal.encode(item.journal_seq, "EventBatchRecorded", meta))
            if seg.bytes >= self._config.segment_max_bytes:
                self._seal()
        if self._active is not None and items:
            self._active.sync()
        with self._cond:
            target = self.submitted
            rows.extend(self.journal_pending)
            self.journal_pending = []
        if rows:
            rows.sort(key=lambda r: cast(int, r["seq"]))
            self._journal.write(journal.rows_to_batch(rows))
            self._journal.sync()
        with self._cond:
            self.durable = max(self.durable, target)
            self.last_flush_ns = time.time_ns()
            self._cond.notify_all()

    def _segment(self) -> HotWriter:
        if self._active is None:
            with self._cond:
                number = self._catalog.take_number()
                path = self._root / "hot" / segment_name(number, HOT_SUFFIX)
                info = SegmentInfo(number, path, is_cold=False, is_sealed=False)
                self._active = HotWriter(path, EVENT_SCHEMA)
                self._active_info = info
                self._catalog.segments.append(info)
            fsync_dir(path.parent)
        return self._active

    def _seal(self) -> None:
        if self._active is not None:
            self._active.seal()
            with self._cond:
                assert self._active_info is not None
                self._active_info.is_sealed = True
                self._active_info.bytes = self._active.path.stat().st_size
            self._active = None
            self._active_info = None
