"""A writing process for the crash tests: appends forever and reports its progress.

    python _writer_proc.py STORE PROGRESS_FILE (flush|noflush)

Each line appended to PROGRESS_FILE is "<last seq> <time_ns>": with `flush`, the last seq
made durable by Store.flush(); with `noflush`, the last seq appended (durability then rests on
the background writer's flush interval).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import make_batch

from lumin_nb.config import Config
from lumin_nb.store import Store


def main() -> None:
    path, progress, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    store = Store.open(path, config=Config(flush_interval_s=0.2, segment_max_bytes=256 << 10))
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seq = 0
    n = 500
    while True:
        store.append(make_batch(seq, n))
        if mode == "flush":
            store.flush()
        seq += n
        os.write(fd, f"{seq - 1} {time.time_ns()}\n".encode())


if __name__ == "__main__":
    main()
