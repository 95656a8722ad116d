"""Anomalies benchmark: NAB scores of Lumin's detector against a windowed Gaussian, and scale.

NAB (../shared/data/nab: 4 of NAB's 7 categories, 34 series, 50 windows) is scored with
`nab_scorer.py` (NAB v1.1 rules): one threshold per profile for the whole corpus, never per
file; normalised so the null detector scores 0 and the perfect one 100. The peer is NAB's
`windowedGaussian` idea run in the same process: a point's score is ``erf(|z| / sqrt 2)`` of its
z-score against the mean and standard deviation of the previous 1,000 points.

Scale: `anomalies()` over 1,000 synthetic daily-seasonal metric series x 10,000 points
(10 M events, one events frame), target <= 10 s.

    python benchmarks/bench_anomalies.py [--quick]   # --quick: scale run on 200 x 10,000
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time

import nab_scorer as ns
import numpy as np
import polars as pl

from lumin_nb.analysis.anomalies import DEFAULT_THRESHOLD, anomalies, score_series
from lumin_nb.event import batch_from_columns

RESULTS = pathlib.Path(__file__).with_name("results")
NAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
PUBLISHED = {"ARTime": 74.9, "Numenta HTM": 70.1, "windowed Gaussian": 39.6}


def windowed_gaussian(values: np.ndarray, window: int = 1000) -> np.ndarray:
    """NAB's windowedGaussian idea: tail probability of the point under the past window's normal."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    c = np.r_[0.0, np.cumsum(x)]
    c2 = np.r_[0.0, np.cumsum(x * x)]
    i = np.arange(1, n)
    lo = np.maximum(0, i - window)
    m = i - lo
    mu = (c[i] - c[lo]) / m
    sd = np.sqrt(np.maximum((c2[i] - c2[lo]) / m - mu * mu, 0.0))
    sd[sd == 0] = 1e-6
    z = np.abs(x[1:] - mu) / sd
    erf = np.vectorize(math.erf)
    return np.r_[0.0, erf(z / math.sqrt(2))]


def run_nab() -> dict[str, dict[str, object]]:
    files = ns.load_corpus(NAB)
    profiles = ns.load_profiles(NAB / "profiles.json")
    detectors = {
        "lumin": lambda f: score_series(f.values, f.timestamps),
        "windowed_gaussian": lambda f: windowed_gaussian(f.values),
    }
    out: dict[str, dict[str, object]] = {}
    for name, detect in detectors.items():
        t0 = time.perf_counter()
        scores = {f.name: detect(f) for f in files}
        elapsed = time.perf_counter() - t0
        row: dict[str, object] = {"detect_s": round(elapsed, 3)}
        for profile, cost in profiles.items():
            r = ns.score_corpus(files, scores, profile, cost)
            row[profile] = {
                "score": round(r.normalised, 2),
                "threshold": r.threshold,
                "raw": round(r.raw, 4),
                "tp": r.tp,
                "fp": r.fp,
                "fn": r.fn,
                "windows_detected": sum(
                    1
                    for f in files
                    for left, right in f.windows
                    if (scores[f.name][left : right + 1] >= r.threshold).any()
                ),
            }
        out[name] = row
    out["corpus"] = {
        "series": len(files),
        "windows": sum(len(f.windows) for f in files),
        "points": sum(f.n for f in files),
    }
    return out


def run_scale(n_series: int, n_points: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    step = 60_000_000_000  # 1-minute samples: 1,440 a day
    t = np.arange(n_points)
    base = np.sin(2 * np.pi * t / 1440)
    amp = rng.uniform(1, 20, (n_series, 1))
    values = 100 + amp * base + rng.normal(0, 1, (n_series, n_points))
    values[:, n_points // 2] += 50  # one planted spike per series
    ts = 1_700_000_000_000_000_000 + t.astype(np.int64) * step
    parts = []
    for lo in range(0, n_series, 100):  # Arrow arrays stay under 2 GiB per batch
        k = min(100, n_series - lo)
        batch = batch_from_columns(
            k * n_points,
            ts=np.tile(ts, k),
            kind="metric",
            source_type="metric",
            entity=np.repeat(np.array([f"m{i:04d}" for i in range(lo, lo + k)]), n_points),
            value=values[lo : lo + k].ravel(),
            producer="bench",
        )
        part = pl.from_arrow(batch)
        assert isinstance(part, pl.DataFrame)
        parts.append(part)
    events = pl.concat(parts)
    t0 = time.perf_counter()
    frame = anomalies(events)
    elapsed = time.perf_counter() - t0
    flagged = frame.filter(pl.col("is_anomaly"))
    spike_ts = frame["ts"][n_points // 2]
    found = flagged.filter(pl.col("ts") == spike_ts)["series"].n_unique()
    return {
        "series": n_series,
        "points_per_series": n_points,
        "events": n_series * n_points,
        "seconds": round(elapsed, 2),
        "events_per_s": round(n_series * n_points / elapsed),
        "planted_spikes_found": found,
        "flagged_total": flagged.height,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale run on 200 series")
    args = parser.parse_args()
    nab = run_nab()
    scale = run_scale(200 if args.quick else 1000, 10_000)

    profiles = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    print("NAB, 4 of 7 categories (artificialNoAnomaly, artificialWithAnomaly,")
    print(
        "realAWSCloudwatch, realAdExchange): 34 series, 50 windows; thresholds once per profile\n"
    )
    print("| detector | " + " | ".join(profiles) + " | windows found (std) | FP rows (std) |")
    print("|---|" + "---|" * (len(profiles) + 2))
    for name in ("lumin", "windowed_gaussian"):
        row = nab[name]
        cells = [f"{row[p]['score']:.1f}" for p in profiles]  # type: ignore[index]
        std = row["standard"]
        print(
            f"| {name} | " + " | ".join(cells) + f" | {std['windows_detected']}/50 | {std['fp']} |"  # type: ignore[index]
        )
    print(
        "\npublished, full corpus (7 categories), standard: "
        + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items())
    )
    print(f"default threshold in lumin_nb.analysis.anomalies: {DEFAULT_THRESHOLD}")
    print("\n| scale run | series | points/series | seconds | events/s | planted spikes found |")
    print("|---|---|---|---|---|---|")
    print(
        f"| anomalies() | {scale['series']} | {scale['points_per_series']} | {scale['seconds']} "
        f"| {scale['events_per_s']:,} | {scale['planted_spikes_found']}/{scale['series']} |"
    )
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "nab": nab,
        "published_full_corpus_standard": PUBLISHED,
        "scale": scale,
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    (RESULTS / "anomalies.json").write_text(json.dumps(payload, indent=2, default=float))


if __name__ == "__main__":
    main()
