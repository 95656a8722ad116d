"""benchmarks/nab_scorer.py scores as NAB defines it: hand-made cases and the real corpus."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys
from types import ModuleType

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAB = ROOT.parent / "shared" / "data" / "nab"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nab_scorer", ROOT / "benchmarks" / "nab_scorer.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("nab_scorer", module)
    spec.loader.exec_module(module)
    return module


ns = _load()
STANDARD = ns.CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)


def _ss(x: float) -> float:
    """NAB's scaled sigmoid, written out by hand."""
    return -1.0 if x >= 3 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _file(n: int, windows: tuple[tuple[int, int], ...], name: str = "a/x.csv") -> object:
    ts = np.datetime64("2024-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(5, "m")
    return ns.LabelledFile(name, ts, np.zeros(n), windows)


def test_scaled_sigmoid_matches_nab_anchor_values() -> None:
    assert float(ns.scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(ns.scaled_sigmoid(-0.5)) == pytest.approx(0.84828, abs=1e-5)
    assert float(ns.scaled_sigmoid(0.0)) == 0.0
    assert float(ns.scaled_sigmoid(1.0)) == pytest.approx(-0.98661, abs=1e-5)
    assert float(ns.scaled_sigmoid(3.0)) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_rows() -> None:
    assert ns.probation_rows(100) == 15
    assert ns.probation_rows(4032) == 604
    assert ns.probation_rows(10_000) == 750


def test_first_row_of_a_window_earns_the_full_true_positive_weight() -> None:
    det = np.zeros(100, dtype=bool)
    det[[40, 45, 49]] = True  # only the earliest one counts
    assert ns.score_file(det, [(40, 49)], STANDARD) == pytest.approx(1.0)


def test_hand_computed_mix_of_tp_fp_and_probation() -> None:
    # n=100: rows 0..14 are probationary; window rows 40..49 (width 10).
    det = np.zeros(100, dtype=bool)
    det[10] = True  # probationary: ignored
    det[20] = True  # before any window: -fpWeight
    det[45] = True  # half-way: ss(-(49-45+1)/10) / ss(-1)
    det[60] = True  # after the window: fpWeight * ss(|49-60| / 9)
    expected = -0.11 + _ss(-0.5) / _ss(-1.0) + 0.11 * _ss(11 / 9)
    assert expected == pytest.approx(0.640279, abs=1e-6)
    assert ns.score_file(det, [(40, 49)], STANDARD) == pytest.approx(expected)


def test_missed_windows_cost_the_false_negative_weight_per_profile() -> None:
    det = np.zeros(200, dtype=bool)
    low_fn = ns.CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
    assert ns.score_file(det, [(40, 49), (100, 120)], STANDARD) == -2.0
    assert ns.score_file(det, [(40, 49), (100, 120)], low_fn) == -4.0


def test_threshold_is_chosen_once_for_the_corpus() -> None:
    a = _file(100, ((40, 49),), "a/a.csv")
    b = _file(100, (), "a/b.csv")
    scores = {"a/a.csv": np.zeros(100), "a/b.csv": np.zeros(100)}
    scores["a/a.csv"][40] = 0.9
    scores["a/b.csv"][30] = 0.95  # higher than the true positive: costs 0.11 to include
    thr, raw = ns.best_threshold([a, b], scores, STANDARD)
    assert thr == 0.9
    assert raw == pytest.approx(1.0 - 0.11)
    result = ns.score_corpus([a, b], scores, "standard", STANDARD)
    assert result.raw == pytest.approx(1.0 - 0.11)
    assert result.normalised == pytest.approx(100 * (0.89 + 1.0) / 2.0)


def test_threshold_curve_agrees_with_direct_scoring_at_every_threshold() -> None:
    rng = np.random.default_rng(3)
    files = [_file(300, ((100, 130), (200, 220)), "a/a.csv"), _file(250, ((50, 80),), "a/b.csv")]
    scores = {f.name: rng.random(f.n).round(2) for f in files}
    thresholds, raws = ns.threshold_curve(files, scores, STANDARD)
    for t, raw in zip(thresholds, raws, strict=True):
        direct = sum(ns.score_file(scores[f.name] >= t, f.windows, STANDARD) for f in files)
        assert raw == pytest.approx(direct)


@pytest.fixture(scope="module")
def corpus() -> list[object]:
    assert NAB.exists(), f"NAB data is missing at {NAB}: shared/ must lie beside the repo"
    return list(ns.load_corpus(NAB))


def test_perfect_detector_scores_100_and_null_scores_0(corpus: list) -> None:
    profiles = ns.load_profiles(NAB / "profiles.json")
    assert set(profiles) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    perfect = {f.name: np.zeros(f.n) for f in corpus}
    for f in corpus:
        for left, _ in f.windows:
            perfect[f.name][left] = 1.0
    null = {f.name: np.full(f.n, 0.5) for f in corpus}
    for name, cost in profiles.items():
        assert ns.score_corpus(corpus, perfect, name, cost).normalised == pytest.approx(100.0)
        assert ns.score_corpus(corpus, null, name, cost).normalised == pytest.approx(0.0)


def test_corpus_windows_are_the_labelled_ones(corpus: list) -> None:
    assert len(corpus) == 34
    assert sum(len(f.windows) for f in corpus) == 50
