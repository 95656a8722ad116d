"""NAB scoring (Numenta Anomaly Benchmark v1.1), reimplemented with numpy.

Follows numenta/NAB `nab/sweeper.py` (per-point sweep scores), `nab/optimizer.py` (one
threshold per profile for the whole corpus) and `nab/runner.py` (normalisation):

- Each labelled *window* ``[start, end]`` covers the rows with ``start <= ts <= end``.
- The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of a file are probationary: never scored,
  neither as detections nor as misses.
- A detection inside a window at row ``i`` is worth
  ``tpWeight * scaledSigmoid(-(right - i + 1) / width) / scaledSigmoid(-1)``: 1.0 on the
  window's first row, falling towards 0 at its right edge. Only the earliest detection of a
  window counts (NAB keeps the max of the sweep scores, which is the earliest). A window with
  no detection costs ``-fnWeight``.
- A detection outside every window costs ``fpWeight * scaledSigmoid(d)`` where ``d`` is its
  distance past the preceding window's right edge over ``width - 1`` (a detection just after a
  window costs almost nothing, one ``>= 3`` widths away the full ``-fpWeight``); before any
  window it costs ``-fpWeight``.
- A detection is a row whose anomaly score is ``>= threshold``. The threshold is chosen once per
  profile for the whole corpus, as the value maximising the corpus's raw score (NAB's
  sweeper: every distinct score is a candidate; ties go to the highest threshold).
- ``normalised = 100 * (raw - null) / (perfect - null)`` where ``perfect`` is
  ``tpWeight * number of windows`` and ``null`` is the raw score of NAB's null detector
  (a constant score of 0.5) with its own optimised threshold.

Sources: https://github.com/numenta/NAB (MIT for the data; the scoring rules are restated here,
no NAB code is copied).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class CostMatrix:
    """The weights of one NAB profile (``profiles.json``)."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class LabelledFile:
    """One NAB series: its timestamps and its windows as inclusive row ranges."""

    name: str
    timestamps: np.ndarray  # datetime64[ns]
    values: np.ndarray  # float64
    windows: tuple[tuple[int, int], ...]

    @property
    def n(self) -> int:
        return len(self.timestamps)


@dataclass
class CorpusScore:
    """One detector's score on the corpus for one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int
    tn: int
    per_file: dict[str, float] = field(default_factory=dict)

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def load_profiles(path: pathlib.Path) -> dict[str, CostMatrix]:
    """Return NAB's profiles (standard, reward_low_FP_rate, reward_low_FN_rate)."""
    raw = json.loads(path.read_text())
    return {
        name: CostMatrix(
            tp_weight=float(p["CostMatrix"]["tpWeight"]),
            fp_weight=float(p["CostMatrix"]["fpWeight"]),
            fn_weight=float(p["CostMatrix"]["fnWeight"]),
        )
        for name, p in raw.items()
    }


def window_rows(timestamps: np.ndarray, limits: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Return each window ``[start, end]`` as the inclusive row range it covers."""
    out = []
    ts = timestamps.astype("datetime64[ns]")
    for start, end in limits:
        lo = int(np.searchsorted(ts, np.datetime64(start, "ns"), side="left"))
        hi = int(np.searchsorted(ts, np.datetime64(end, "ns"), side="right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


def load_corpus(root: pathlib.Path) -> list[LabelledFile]:
    """Return every series under ``root/data`` with its windows from ``combined_windows.json``."""
    limits = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = []
    for path in sorted((root / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if name not in limits:
            continue
        df = pl.read_csv(path, try_parse_dates=True)
        ts = df["timestamp"].cast(pl.Datetime("ns")).to_numpy()
        values = df["value"].cast(pl.Float64).to_numpy()
        files.append(
            LabelledFile(name, ts, values, tuple(window_rows(ts, [tuple(w) for w in limits[name]])))
        )
    return files


def probation_rows(n: int, probation_percent: float = PROBATION_PERCENT) -> int:
    """Return how many leading rows NAB leaves unscored (``util.getProbationPeriod``)."""
    return int(min(math.floor(probation_percent * n), probation_percent * 5000))


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5 x) - 1``, and -1 from ``x >= 3`` on."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0)


def sweep(
    n: int,
    windows: Sequence[tuple[int, int]],
    cost: CostMatrix,
    probation_percent: float = PROBATION_PERCENT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per row: what a detection there is worth, its window (-1: none), is it scored."""
    worth = np.empty(n)
    window_of = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n, dtype=np.float64)
    max_tp = float(scaled_sigmoid(-1.0))
    prev_right: int | None = None
    prev_width = 0
    pos = 0
    for w, (left, right) in enumerate(windows):
        _fill_outside(worth, pos, left, prev_right, prev_width, cost, idx)
        width = right - left + 1
        rel = -(right - idx[left : right + 1] + 1) / width
        worth[left : right + 1] = scaled_sigmoid(rel) * cost.tp_weight / max_tp
        window_of[left : right + 1] = w
        prev_right, prev_width, pos = right, width, right + 1
    _fill_outside(worth, pos, n, prev_right, prev_width, cost, idx)
    scored = np.arange(n) >= probation_rows(n, probation_percent)
    return worth, window_of, scored


def _fill_outside(
    worth: np.ndarray,
    lo: int,
    hi: int,
    prev_right: int | None,
    prev_width: int,
    cost: CostMatrix,
    idx: np.ndarray,
) -> None:
    if hi <= lo:
        return
    if prev_right is None or prev_width <= 1:
        worth[lo:hi] = -cost.fp_weight
    else:
        rel = np.abs(prev_right - idx[lo:hi]) / (prev_width - 1)
        worth[lo:hi] = scaled_sigmoid(rel) * cost.fp_weight


def score_file(
    detections: np.ndarray,
    windows: Sequence[tuple[int, int]],
    cost: CostMatrix,
    probation_percent: float = PROBATION_PERCENT,
) -> float:
    """Return one file's raw NAB score for boolean detections (a direct, unvectorised reading)."""
    n = len(detections)
    worth, window_of, scored = sweep(n, windows, cost, probation_percent)
    hit = np.asarray(detections, dtype=bool) & scored
    total = 0.0
    for left, right in windows:
        if not scored[left : right + 1].any():
            continue  # a window entirely in probation is not scored
        inside = np.flatnonzero(hit[left : right + 1])
        total += worth[left + inside[0]] if len(inside) else -cost.fn_weight
    total += float(worth[hit & (window_of < 0)].sum())
    return total


def threshold_curve(
    files: Sequence[LabelledFile],
    scores: Mapping[str, np.ndarray],
    cost: CostMatrix,
    probation_percent: float = PROBATION_PERCENT,
) -> tuple[np.ndarray, np.ndarray]:
    """Return every candidate threshold (descending, first 1.1 = no detection) and its raw score.

    The corpus score at threshold t counts as detections the scored rows with score >= t.
    """
    all_score, all_worth, all_win = [], [], []
    n_windows = 0
    for f in files:
        s = np.asarray(scores[f.name], dtype=np.float64)
        if len(s) != f.n:
            raise ValueError(f"{f.name}: {len(s)} scores for {f.n} rows")
        worth, window_of, scored = sweep(f.n, f.windows, cost, probation_percent)
        win = np.where(window_of >= 0, window_of + n_windows, -1)
        all_score.append(s[scored])
        all_worth.append(worth[scored])
        all_win.append(win[scored])
        n_windows += len(f.windows)
    score = np.concatenate(all_score) if all_score else np.empty(0)
    worth = np.concatenate(all_worth) if all_worth else np.empty(0)
    win = np.concatenate(all_win) if all_win else np.empty(0, dtype=np.int64)
    # a window with no scored row is not counted (NAB: probationary rows have no window)
    live_windows = np.unique(win[win >= 0])
    base = -cost.fn_weight * len(live_windows)

    order = np.argsort(-score, kind="stable")
    score, worth, win = score[order], worth[order], win[order]
    is_fp = win < 0
    fp_delta = np.where(is_fp, worth, 0.0)
    # inside windows: the window's contribution is the running max of its detections' worth,
    # starting at -fnWeight; the delta of that running max per row, summed, gives the total.
    tp_delta = np.zeros(len(score))
    if (~is_fp).any():
        pos = np.flatnonzero(~is_fp)
        frame = pl.DataFrame({"pos": pos, "win": win[pos], "worth": worth[pos]})
        frame = frame.with_columns(
            best=pl.max_horizontal(pl.col("worth"), pl.lit(-cost.fn_weight)).cum_max().over("win")
        ).with_columns(
            prev=pl.col("best").shift(1).over("win").fill_null(-cost.fn_weight),
        )
        tp_delta[frame["pos"].to_numpy()] = (frame["best"] - frame["prev"]).to_numpy()
    running = base + np.cumsum(fp_delta + tp_delta)
    # one entry per distinct threshold: the state after the last row holding that score
    last = np.flatnonzero(np.r_[score[1:] != score[:-1], True]) if len(score) else np.empty(0, int)
    thresholds = np.r_[1.1, score[last]]
    raws = np.r_[base, running[last]]
    return thresholds, raws


def best_threshold(
    files: Sequence[LabelledFile],
    scores: Mapping[str, np.ndarray],
    cost: CostMatrix,
    probation_percent: float = PROBATION_PERCENT,
) -> tuple[float, float]:
    """Return NAB's threshold for the whole corpus and the raw score it reaches."""
    thresholds, raws = threshold_curve(files, scores, cost, probation_percent)
    best = int(np.argmax(raws))  # first maximum: the highest threshold among ties
    return float(thresholds[best]), float(raws[best])


def score_corpus(
    files: Sequence[LabelledFile],
    scores: Mapping[str, np.ndarray],
    profile: str,
    cost: CostMatrix,
    probation_percent: float = PROBATION_PERCENT,
    threshold: float | None = None,
) -> CorpusScore:
    """Return the detector's NAB score for one profile (threshold optimised unless given)."""
    if threshold is None:
        threshold, _ = best_threshold(files, scores, cost, probation_percent)
    null_scores = {f.name: np.full(f.n, 0.5) for f in files}
    _, null_raw = best_threshold(files, null_scores, cost, probation_percent)
    per_file: dict[str, float] = {}
    tp = fp = fn = tn = 0
    for f in files:
        s = np.asarray(scores[f.name], dtype=np.float64)
        hit = s >= threshold
        per_file[f.name] = score_file(hit, f.windows, cost, probation_percent)
        _, window_of, scored = sweep(f.n, f.windows, cost, probation_percent)
        inside = window_of >= 0
        tp += int((hit & inside & scored).sum())
        fp += int((hit & ~inside & scored).sum())
        fn += int((~hit & inside & scored).sum())
        tn += int((~hit & ~inside & scored).sum())
    n_windows = sum(len(f.windows) for f in files)  # NAB's tpCount: every labelled window
    return CorpusScore(
        profile=profile,
        threshold=threshold,
        raw=sum(per_file.values()),
        null=null_raw,
        perfect=cost.tp_weight * n_windows,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        per_file=per_file,
    )
