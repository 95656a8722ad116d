"""The durable event store and its query layer (DESIGN.md, data flow step 4).

`Store` appends event batches to append-only, immutable segments (Arrow IPC hot, zstd
Parquet cold) through a background writer, keeps a journal of domain events, deduplicates
replays by (producer, seq) and answers `scan`, `history` and DuckDB `sql`;
`events_frame` and `sql_table` return polars frames and Arrow tables. See
`lumin_nb.store._store` for the on-disk layout and `docs/design/store.md` for the measurements.
"""

from __future__ import annotations

from lumin_nb.store._store import Store
from lumin_nb.store.query import events_frame, sql_table

__all__ = ["Store", "events_frame", "sql_table"]
