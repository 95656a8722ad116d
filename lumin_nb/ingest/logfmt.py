"""logfmt lines (``ts=... level=info msg="hello world" user=bob``) to events.

Pairs are found with one regex pass over all lines (polars ``str.extract_all``: RE2's
``extract_regex`` captures only the first match of a line), exploded to (row, key, value)
and pivoted back to one column per key, so no Python code runs per line on the happy path.
Quoted values follow Go's ``strconv.Quote`` escapes (``\\"``, ``\\\\``, ``\\n``); a bare key is
``true``; a repeated key keeps its last value.

Invariant: a line with text that is not a pair (an unterminated quote) or without any
``key=value`` pair is rejected with its line number and byte offset.
"""

from __future__ import annotations

import json
import re
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.ingest.fields import (
    ParseResult,
    concat_rejected,
    empty_batch,
    events_from_fields,
    rejected_table,
    split_lines,
)

# As go-logfmt: keys and bare values end at ASCII space or control bytes (not Unicode spaces).
_PAIR: Final = r'[^\x00-\x20="]+(?:=(?:"(?:[^"\\]|\\.)*"|[^\x00-\x20"]*))?'
_PAIR_RE: Final = re.compile(_PAIR)


def parse_logfmt(
    data: bytes, *, service: str | None = None, host: str | None = None
) -> ParseResult:
    """Return the events of the logfmt lines of `data` and the lines it could not read."""
    lines, line_no, bad_utf8 = split_lines(data)
    if len(lines) == 0:
        return ParseResult(empty_batch(), bad_utf8)
    frame = pl.DataFrame({"line": pl.from_arrow(lines)})
    frame = frame.with_columns(
        pl.col("line").str.extract_all(_PAIR).alias("pairs"),
        pl.col("line").str.replace_all(_PAIR, "").str.strip_chars().alias("leftover"),
        pl.col("line").str.contains("=", literal=True).alias("has_eq"),
    )
    ok = (frame["leftover"] == "") & frame["has_eq"]
    ok_np = ok.to_numpy()
    rejected = _reject(lines, line_no, ~ok_np)
    rows = frame.with_row_index("row").filter(ok).select("row", "pairs")
    if rows.height == 0:
        return ParseResult(empty_batch(), concat_rejected([bad_utf8, rejected]))
    pairs = rows.explode("pairs").drop_nulls("pairs")
    key = pl.col("pairs").str.extract(r"^([^=]+)", 1)
    raw = pl.col("pairs").str.extract(r"^[^=]+=(.*)$", 1)
    quoted = raw.str.starts_with('"')
    long = pairs.select(
        "row",
        key.alias("key"),
        pl.when(raw.is_null())
        .then(pl.lit("true"))
        .when(quoted)
        .then(raw.str.slice(1, raw.str.len_chars() - 2))
        .otherwise(raw)
        .alias("value"),
        (quoted & raw.str.contains("\\", literal=True)).alias("escaped"),
        raw.alias("raw"),
    )
    if long["escaped"].any():
        fixed = long.filter(pl.col("escaped"))["raw"].to_list()
        long = long.with_columns(
            pl.when(pl.col("escaped"))
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(pl.col("value"))
            .alias("value")
        )
        unq = pl.Series("u", [_unquote(v) for v in fixed], dtype=pl.String)
        idx = np.flatnonzero(long["escaped"].to_numpy())
        values = long["value"].to_numpy().astype(object)
        values[idx] = unq.to_numpy()
        long = long.with_columns(pl.Series("value", values, dtype=pl.String))
    long = long.select("row", "key", "value").unique(subset=["row", "key"], keep="last")
    wide = (
        long.pivot(on="key", index="row", values="value", aggregate_function=None)
        .join(rows.select("row"), on="row", how="right")
        .sort("row")
        .drop("row")
    )
    table = wide.to_arrow()
    batch = events_from_fields(table, service=service, host=host)
    return ParseResult(batch, concat_rejected([bad_utf8, rejected]))


def _unquote(raw: str) -> str:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value if isinstance(value, str) else raw[1:-1]


def _reject(lines: pa.Array, line_no: pa.Array, bad: np.ndarray) -> pa.Table:
    """Name the byte offset where each bad line stops being logfmt (bad lines only)."""
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        return rejected_table()
    texts = pc.take(lines, pa.array(idx)).to_pylist()
    numbers = pc.take(line_no, pa.array(idx)).to_pylist()
    reasons = []
    for no, text in zip(numbers, texts, strict=True):
        pos = 0
        stop: int | None = None
        for m in _PAIR_RE.finditer(text):
            if text[pos : m.start()].strip():
                stop = pos + len(text[pos : m.start()]) - len(text[pos : m.start()].lstrip())
                break
            pos = m.end()
        if stop is None and text[pos:].strip():
            stop = pos + len(text[pos:]) - len(text[pos:].lstrip())
        if stop is not None:
            byte = len(text[:stop].encode())
            what = (
                "unterminated quoted value" if text[stop] == '"' else f"unexpected {text[stop]!r}"
            )
            reasons.append(f"line {no}: not logfmt at byte {byte}: {what}")
        else:
            reasons.append(f"line {no}: no key=value pairs")
    return rejected_table(numbers, texts, reasons)
