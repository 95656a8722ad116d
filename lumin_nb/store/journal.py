"""The journal: the store's ordered log of domain events (StoreOpened, EventBatchRecorded, ...).

Every domain event is a row ``(seq, ts, type, data)``: a store-wide sequence number, the
time it was recorded, its type name and its payload as JSON text. Each writer session appends
to its own IPC stream ``journal/<session>.arrows`` (one batch per flush, fsynced after the
event data it describes), so a torn journal tail is handled exactly like a torn segment and a
new session never writes into a file a crash may have cut. Reading concatenates the sessions
in order; seq keeps increasing across sessions.
"""

from __future__ import annotations

import json
import pathlib
import time
import warnings
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.store.segment import HOT_SUFFIX, read_hot, segment_number

JOURNAL_DIR: Final = "journal"

JOURNAL_SCHEMA: Final = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("data", pa.string(), nullable=False),
    ]
)


def encode(
    seq: int, type: str, data: dict[str, object], ts_ns: int | None = None
) -> dict[str, object]:
    """Return one journal row (a dict of column values) for a domain event."""
    return {
        "seq": seq,
        "ts": time.time_ns() if ts_ns is None else ts_ns,
        "type": type,
        "data": json.dumps(data, default=str, ensure_ascii=False),
    }


def rows_to_batch(rows: list[dict[str, object]]) -> pa.RecordBatch:
    """Return journal rows as one batch of JOURNAL_SCHEMA (domain events are few)."""
    return pa.RecordBatch.from_pylist(rows, schema=JOURNAL_SCHEMA)


def journal_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Return the journal files of the store at `root`, oldest session first."""
    folder = root / JOURNAL_DIR
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{HOT_SUFFIX}"), key=segment_number)


def read_journal(root: pathlib.Path, *, live: bool) -> pa.Table:
    """Return every durable domain event of the store at `root`, ordered by seq.

    A torn tail is skipped; when no writer is `live` that is a crash and it is warned about.
    """
    batches: list[pa.RecordBatch] = []
    for path in journal_files(root):
        read = read_hot(path)
        if read.torn_bytes and not live:
            warnings.warn(
                f"Lumin store journal {path} ends with a torn write: dropped the last "
                f"{read.torn_bytes} bytes after {read.good_bytes} good bytes (a crash cut it).",
                RuntimeWarning,
                stacklevel=3,
            )
        batches.extend(read.batches)
    table = pa.Table.from_batches(batches, schema=JOURNAL_SCHEMA)
    return table.take(pc.sort_indices(table, [("seq", "ascending")]))
