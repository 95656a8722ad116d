"""Crash safety: kill -9 of a writing process, torn segments, readers beside a live writer."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from conftest import make_batch, wait_until

from lumin_nb.errors import StoreError
from lumin_nb.store import Store

HELPER = pathlib.Path(__file__).with_name("_writer_proc.py")


def _progress(path: pathlib.Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece may be a partial line
    return [(int(a), int(b)) for a, b in (line.split() for line in lines)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["flush", "noflush"])
def test_sigkill_keeps_every_event_flushed_a_second_before(
    tmp_path: pathlib.Path, mode: str
) -> None:
    store_path, progress = tmp_path / "store", tmp_path / "progress.txt"
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(store_path), str(progress), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def reported_for_1_5_s() -> bool:
            lines = _progress(progress)
            spans = len(lines) >= 40 and lines[-1][1] - lines[0][1] >= 1_500_000_000
            return spans or proc.poll() is not None

        wait_until(
            reported_for_1_5_s,
            timeout_s=30,
            what="the writer process to report 40 batches over 1.5 s",
        )
        assert proc.poll() is None, proc.communicate()[1].decode()
        # A reader beside the live writer: no torn-tail warning, sees what was flushed.
        reported = _progress(progress)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reader = Store.open(store_path, read_only=True)
            seqs = reader.scan(columns=["seq"]).column("seq").to_numpy()
        if mode == "flush":
            assert len(seqs) >= reported[-1][0] + 1
        kill_ns = time.time_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported = _progress(progress)
    if mode == "flush":
        must_have = reported[-1][0]  # flush() had returned before this line was written
    else:
        must_have = max(s for s, t in reported if t <= kill_ns - 1_000_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the kill may have torn the last batch
        store = Store.open(store_path, read_only=True)
        seqs = np.sort(store.scan(columns=["seq"]).column("seq").to_numpy())
    assert len(seqs) >= must_have + 1
    np.testing.assert_array_equal(seqs[: must_have + 1], np.arange(must_have + 1))
    assert len(np.unique(seqs)) == len(seqs)


def _two_session_store(path: pathlib.Path) -> tuple[pathlib.Path, int]:
    with Store.open(path) as store:
        store.append(make_batch(0, 1000))
    with Store.open(path) as store:
        for first in range(1000, 4000, 1000):
            store.append(make_batch(first, 1000))
            store.flush()
    last = sorted((path / "hot").glob("*.arrows"))[-1]
    return last, last.stat().st_size


def test_truncated_last_segment_is_cut_off_with_a_warning(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store"
    last, size = _two_session_store(path)
    os.truncate(last, size - 3000)  # into the last batch (and past the end-of-stream marker)

    with pytest.warns(RuntimeWarning, match=r"torn write.*dropped the last \d+ bytes") as rec:
        reader = Store.open(path, read_only=True)
    assert last.name in str(rec[0].message)
    seqs = np.sort(reader.scan(columns=["seq"]).column("seq").to_numpy())
    np.testing.assert_array_equal(seqs, np.arange(3000))  # the cut batch is gone, rest intact
    assert last.stat().st_size == size - 3000  # a reader never writes

    with pytest.warns(RuntimeWarning, match="torn write"):
        writer = Store.open(path)
    try:
        assert last.stat().st_size < size - 3000  # cut back to the last complete batch
        assert writer.append(make_batch(0, 5000)) == 2000  # 3000..4999 were missing
        writer.flush()
    finally:
        writer.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seqs = np.sort(Store.open(path, read_only=True).scan().column("seq").to_numpy())
    np.testing.assert_array_equal(seqs, np.arange(5000))


def test_segment_cut_inside_its_schema_is_survived(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store"
    last, _ = _two_session_store(path)
    os.truncate(last, 10)
    with pytest.warns(RuntimeWarning, match="torn write"):
        store = Store.open(path, read_only=True)
    assert store.scan().num_rows == 1000


def test_second_writer_is_refused_and_readers_are_not(tmp_path: pathlib.Path) -> None:
    with Store.open(tmp_path / "s") as store:
        with pytest.raises(StoreError, match="read_only=True"):
            Store.open(tmp_path / "s")
        store.append(make_batch(0, 10))
        store.flush()
        reader = Store.open(tmp_path / "s", read_only=True)
        assert reader.scan().num_rows == 10
        with pytest.raises(StoreError, match="read-only"):
            reader.append(make_batch(10, 10))


def test_read_only_open_of_a_missing_folder_says_so(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nothing", read_only=True)
