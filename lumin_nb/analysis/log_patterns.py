"""Log templates: which messages are the same line with different parameters.

Place in the flow: analysis reads an events frame (from `lm.events`, a view or any polars
DataFrame with the event columns) and returns a frame; it never touches the store.

Algorithm (online, Drain-like, with vectorised masking and deduplication):

1. **Mask** (vectorised: three regex passes of polars over the whole column): what is
   obviously a parameter becomes ``<*>``: paths of two segments or more (``/var/log/x``,
   ``hdfs://host/dir``), UUIDs, ``0x`` hex, numbers with an optional sign and dotted parts
   (so IPv4 addresses, versions and decimals), numbers with a unit (``12ms``, ``3.5GB``,
   durations and sizes) and hex words that contain a digit (``0a90fc``). A number is masked
   only where it starts a token or follows punctuation (``blk_-42``, ``port:22``), never when
   glued to letters (``ssh2``, ``log4j`` stay). Whitespace is untouched, so a masked line has the
   same tokens as its raw line.
2. **Deduplicate** the masked lines (polars ``group_by``); the Python loop below runs over
   unique masked lines only, in order of first appearance, so identical masked lines always
   share a template.
3. **Prefix tree** (Drain, He et al., ICWS 2017): a unique line is routed by its token count,
   then by its first token (a token holding ``<*>`` or a digit goes to the ``<*>`` branch).
   In that leaf it joins the template with the highest similarity, the fraction of positions
   whose tokens are equal (a ``<*>`` in the template counts as equal only to ``<*>``; ties go
   to the template with more ``<*>``), when that similarity is at least
   `SIMILARITY_THRESHOLD`; otherwise it starts a new template. Joining generalises the
   template: positions that differ become ``<*>``.

Invariants: streaming (lines are processed in order, once); templates only generalise, never
split, and a template never changes its token count; deterministic (the same lines in the same
order give the same ids and templates).

Parameters of the algorithm (one configuration for every kind of log, no per-system tuning):
``SIMILARITY_THRESHOLD = 0.7`` (Drain's ``st``; drain3's default is 0.4, which merges
templates that differ in two constant words out of seven), tree depth 1 (token count, then
the first token), the masking rules of `MASK_PATTERNS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from lumin_nb._time import TimeLike, parse_time
from lumin_nb.errors import UnknownColumnError, closest

if TYPE_CHECKING:
    import polars as pl

__all__ = ["SIMILARITY_THRESHOLD", "WILDCARD", "log_patterns", "mine_templates"]

WILDCARD: Final = "<*>"
SIMILARITY_THRESHOLD: Final = 0.7

_UNITS: Final = "ns|us|ms|s|sec|secs|m|min|mins|h|d|B|KB|kB|MB|GB|TB|K|M|G|k"
_B: Final = r"(?-u:\b)"  # ASCII word boundary: keeps the regex on its fast DFA engines
# A parameter, alternatives tried left to right: UUID, 0x-hex, number (dotted parts: IPv4,
# versions), number with a unit, hex word holding a digit, number glued to letters after it.
_PARAM: Final = (
    r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|0[xX][0-9a-fA-F]+"
    rf"|[0-9]+(?:\.[0-9]+)*{_B}"
    rf"|[0-9]+(?:\.[0-9]+)?(?:{_UNITS}){_B}"
    rf"|[a-fA-F]*[0-9][0-9a-fA-F]*{_B}"
    r"|[0-9]+(?:\.[0-9]+)*)"
)
# Two passes without capture groups (captures cost twice the time): parameters after an
# underscore (``blk_-42``, ``attempt_1445_0020``), where ``\b`` sees no word start, then
# parameters that start a word (with their minus sign unless it is a hyphen: ``a-1`` keeps it).
MASK_PATTERNS: Final = (
    (r"(?-u:\B)(?:/[\w.:@+~-]*){2,}", WILDCARD),  # a path of two segments or more
    (rf"_-?{_PARAM}", "_" + WILDCARD),
    (rf"(?:(?-u:\B)-)?{_B}{_PARAM}", WILDCARD),
)

COLUMNS: Final = (
    "template_id",
    "template",
    "count",
    "first_seen",
    "last_seen",
    "example",
    "params",
    "services",
)


class _Miner:
    """The prefix tree and templates; `add` takes unique masked lines in stream order."""

    __slots__ = ("_leaves", "_seen", "templates", "threshold")

    def __init__(self, threshold: float = SIMILARITY_THRESHOLD) -> None:
        self.threshold = threshold
        self.templates: list[list[str]] = []
        self._leaves: dict[tuple[int, str], list[int]] = {}
        self._seen: dict[str, int] = {}

    def add(self, lines: Sequence[str]) -> np.ndarray:
        """Return the template id of each masked line, updating the templates."""
        out = np.empty(len(lines), dtype=np.int64)
        seen = self._seen
        templates = self.templates
        leaves = self._leaves
        threshold = self.threshold
        w = WILDCARD
        for k, line in enumerate(lines):
            known = seen.get(line)
            if known is not None:
                out[k] = known
                continue
            tokens = line.split()
            n = len(tokens)
            first = tokens[0] if n else ""
            if w in first or any(c.isdigit() for c in first):
                first = w
            leaf = leaves.setdefault((n, first), [])
            best, best_sim, best_params = -1, -1.0, -1
            for tid in leaf:
                same = params = 0
                for a, b in zip(templates[tid], tokens, strict=True):
                    if a == b:
                        same += 1
                    elif a == w:
                        params += 1
                sim = same / n if n else 1.0
                if sim > best_sim or (sim == best_sim and params > best_params):
                    best, best_sim, best_params = tid, sim, params
            if best >= 0 and best_sim >= threshold:
                t = templates[best]
                if best_sim < 1.0:
                    templates[best] = [a if a == b else w for a, b in zip(t, tokens, strict=True)]
            else:
                best = len(templates)
                templates.append(tokens)
                leaf.append(best)
            seen[line] = best
            out[k] = best
        return out


def _as_series(lines: pl.Series | Sequence[str]) -> pl.Series:
    import polars as pl

    if isinstance(lines, pl.Series):
        return lines.cast(pl.String)
    return pl.Series("message", list(lines), dtype=pl.String)


def _mask(lines: pl.Series) -> pl.Series:
    import polars as pl

    return (
        pl.DataFrame({"m": lines})
        .select(
            pl.col("m")
            .fill_null("")
            .str.strip_chars()
            .str.replace_all(*MASK_PATTERNS[0])
            .str.replace_all(*MASK_PATTERNS[1])
            .str.replace_all(*MASK_PATTERNS[2])
        )
        .to_series()
    )


def mine_templates(
    lines: pl.Series | Sequence[str], *, threshold: float = SIMILARITY_THRESHOLD
) -> tuple[np.ndarray, list[str]]:
    """Return the template id of every line and the templates (``<*>`` marks a parameter).

    The low-level miner behind `log_patterns`: ``templates[ids[i]]`` is the template of
    ``lines[i]``; ids number templates in order of creation. A null line is an empty line.

    Examples
    --------
    >>> ids, templates = mine_templates(["took 3 ms", "took 15 ms", "ready"])
    >>> ids.tolist(), templates
    ([0, 0, 1], ['took <*> ms', 'ready'])
    """
    import polars as pl

    series = _as_series(lines)
    if len(series) == 0:
        return np.empty(0, dtype=np.int64), []
    masked = _mask(series)
    # Unique masked lines in order of first appearance, and each line's index into them.
    frame = pl.DataFrame({"m": masked})
    unique = frame.select(pl.col("m").unique(maintain_order=True)).to_series()
    inverse = (
        frame.join(
            pl.DataFrame({"m": unique, "u": pl.int_range(len(unique), eager=True)}),
            on="m",
            how="left",
            maintain_order="left",
        )
        .get_column("u")
        .to_numpy()
    )
    miner = _Miner(threshold)
    per_unique = miner.add(unique.to_list())
    return per_unique[inverse], [" ".join(t) for t in miner.templates]


def _params(template: str, line: str) -> list[str]:
    """Return the text each ``<*>`` of `template` stands for in `line` (empty if no match)."""
    parts = []
    for token in template.split(" "):
        pieces = [re.escape(p) for p in token.split(WILDCARD)]
        parts.append("(.*?)".join(pieces))
    match = re.fullmatch(r"\s*" + r"\s+".join(parts) + r"\s*", line, flags=re.DOTALL)
    return list(match.groups()) if match else []


def _filter_values(
    frame: pl.DataFrame, name: str, value: str | Sequence[str] | None
) -> pl.DataFrame:
    import polars as pl

    if value is None:
        return frame
    if name not in frame.columns:
        raise UnknownColumnError(
            f"{name}={value!r} filters a column the frame does not have. "
            f"Its columns are: {', '.join(frame.columns)}."
        )
    values = [value] if isinstance(value, str) else list(value)
    col = pl.col(name).cast(pl.String)
    cond = pl.lit(False)
    for v in values:
        if "*" in v:
            pattern = "^" + ".*".join(re.escape(p) for p in v.split("*")) + "$"
            cond = cond | col.str.contains(pattern)
        else:
            cond = cond | (col == v)
    out = frame.filter(cond)
    if out.height == 0 and frame.height > 0 and not any("*" in v for v in values):
        known = frame.get_column(name).cast(pl.String).drop_nulls().unique().sort().to_list()
        raise UnknownColumnError(
            f"{name}={value!r} matches no event.{closest(values[0], known)} "
            f"Known {name} values: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}.\n"
            f'Fix: lm.log_patterns({name}="{known[0] if known else "..."}")'
        )
    return out


def _empty() -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame(
        schema={
            "template_id": pl.Int64,
            "template": pl.String,
            "count": pl.Int64,
            "first_seen": pl.Datetime("ns", "UTC"),
            "last_seen": pl.Datetime("ns", "UTC"),
            "example": pl.String,
            "params": pl.List(pl.String),
            "services": pl.List(pl.String),
        }
    )


def log_patterns(
    events: pl.DataFrame | pl.Series | Sequence[str],
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    service: str | Sequence[str] | None = None,
    entity: str | Sequence[str] | None = None,
    kind: str | None = "log",
    column: str = "message",
    threshold: float = SIMILARITY_THRESHOLD,
) -> pl.DataFrame:
    """Return the log templates of `events`: one row per template, most frequent first.

    Mines templates online (see the module docstring): parameters such as numbers, ids,
    addresses and user names become ``<*>``.

    Parameters
    ----------
    events
        An events frame (columns ``message``, ``ts``, ``service``, ``entity``, ``kind``; only
        `column` is required), or a Series or list of lines.
    since, until
        Keep events with ``since <= ts < until`` (datetime, ISO text or "-5m").
    service, entity
        Keep events of these values (a value or a list; ``*`` is a wildcard).
    kind
        Keep events of this kind (default "log"; None keeps every kind with a message).
    column
        The text column mined.
    threshold
        The similarity (0..1) a line needs to join a template; higher splits more.

    Returns
    -------
    polars.DataFrame
        ``template_id`` (Int64), ``template`` (``<*>`` for parameters), ``count``,
        ``first_seen``/``last_seen`` (Datetime ns UTC, null without ``ts``), ``example`` (the
        first line), ``params`` (the parameter values of the example), ``services``
        (sorted), sorted by count descending then template_id.

    Raises
    ------
    UnknownColumnError
        `column`, or a filter's column, is not in the frame; a service/entity without
        wildcards that matches no event (the closest value is suggested).

    Examples
    --------
    >>> log_patterns(["took 3 ms", "took 15 ms", "ready"]).select("template", "count")
    shape: (2, 2)
    ┌─────────────┬───────┐
    │ template    ┆ count │
    │ ---         ┆ ---   │
    │ str         ┆ i64   │
    ╞═════════════╪═══════╡
    │ took <*> ms ┆ 2     │
    │ ready       ┆ 1     │
    └─────────────┴───────┘
    """
    import polars as pl

    frame = (
        events if isinstance(events, pl.DataFrame) else pl.DataFrame({column: _as_series(events)})
    )
    if column not in frame.columns:
        raise UnknownColumnError(
            f"column={column!r} is not in the frame.{closest(column, frame.columns)} "
            f"Its columns are: {', '.join(frame.columns)}.\n"
            'Fix: lm.log_patterns(events, column="message")'
        )
    if kind is not None and "kind" in frame.columns:
        frame = frame.filter(pl.col("kind").cast(pl.String) == kind)
    since_ns = parse_time(since, name="since")
    until_ns = parse_time(until, name="until")
    if (since_ns is not None or until_ns is not None) and "ts" in frame.columns:
        ts = pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.epoch("ns")
        if since_ns is not None:
            frame = frame.filter(ts >= since_ns)
        if until_ns is not None:
            frame = frame.filter(ts < until_ns)
    frame = _filter_values(frame, "service", service)
    frame = _filter_values(frame, "entity", entity)
    frame = frame.filter(pl.col(column).is_not_null())
    if frame.height == 0:
        return _empty()

    ids, templates = mine_templates(frame.get_column(column), threshold=threshold)
    has_ts = "ts" in frame.columns
    has_service = "service" in frame.columns
    work = pl.DataFrame(
        {
            "template_id": ids,
            "line": frame.get_column(column).cast(pl.String),
            "ts": (
                frame.get_column("ts").cast(pl.Datetime("ns", "UTC"))
                if has_ts
                else pl.repeat(None, frame.height, dtype=pl.Datetime("ns", "UTC"), eager=True)
            ),
            "service": (
                frame.get_column("service").cast(pl.String)
                if has_service
                else pl.repeat(None, frame.height, dtype=pl.String, eager=True)
            ),
        }
    )
    out = work.group_by("template_id").agg(
        pl.len().cast(pl.Int64).alias("count"),
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"),
        pl.col("line").first().alias("example"),
        pl.col("service").drop_nulls().unique().sort().alias("services"),
    )
    tid = out.get_column("template_id").to_list()
    examples = out.get_column("example").to_list()
    out = out.with_columns(
        pl.Series("template", [templates[i] for i in tid], dtype=pl.String),
        pl.Series(
            "params",
            [_params(templates[i], ex) for i, ex in zip(tid, examples, strict=True)],
            dtype=pl.List(pl.String),
        ),
    )
    return out.select(COLUMNS).sort(["count", "template_id"], descending=[True, False])
