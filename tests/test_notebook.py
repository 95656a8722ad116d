"""A real kernel (nbclient) loads the extension, traces a cell that raises and logs.

This is the product as a user meets it: `%load_ext lumin`, `%%lumin_trace`, `lm.events`,
`lm.sql`, `%lumin status`, executed by a real IPython kernel over ZeroMQ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

SETUP = """\
%load_ext lumin
import lumin as lm, logging, json
log = logging.getLogger("job")

def parse(x):
    if x == 3:
        raise ValueError(f"bad record {x}")
    return x * 2

def finish(out):
    raise RuntimeError(f"finish failed after {len(out)} records")

def job(n):
    out = []
    for i in range(n):
        try:
            out.append(parse(i))
        except ValueError:
            log.warning("skipped %d", i, exc_info=True)
    log.info("job done")
    return finish(out)
"""

TRACED = """\
%%lumin_trace nightly
job(5)
"""

UNTRACED_ERROR = """\
{}["missing"]
"""

QUERY = """\
def rows(df):
    return json.loads(df.write_json())

cols = ["entity", "span_id", "parent_span_id", "trace_id", "duration_ns"]
calls = lm.events(kind="call", columns=cols)
spans = lm.events(kind="span", columns=["entity", "span_id", "trace_id"])
exc = lm.events(kind="exception", columns=["entity", "message", "severity", "attrs", "span_id"])
logs = lm.events(kind="log", entity="job", columns=["message", "severity", "attrs"])
p99 = lm.sql("select entity, count(*) as n, quantile_cont(duration_ns, 0.99) as p99 "
             "from events where kind = 'call' group by 1 order by 1")
def hexed(df):
    binary = [c for c in df.columns if str(df[c].dtype) == "Binary"]
    return rows(df.with_columns([df[c].bin.encode("hex") for c in binary]))

print(json.dumps({"calls": hexed(calls), "spans": hexed(spans), "exc": hexed(exc),
                  "logs": rows(logs), "p99": rows(p99)}))
"""

STATUS = "%lumin status"


def _run(tmp_path: Path) -> list[Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, TRACED, UNTRACED_ERROR)]
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    nb.cells[2].metadata["tags"] = ["raises-exception"]
    nb.cells += [nbformat.v4.new_code_cell(QUERY), nbformat.v4.new_code_cell(STATUS)]
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return list(nb.cells)


def _text(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_traced_cell_that_raises_and_logs(tmp_path: Path) -> None:
    cells = _run(tmp_path)
    assert "Lumin" in _text(cells[0]) and ".lumin" in _text(cells[0])
    assert any(o.get("ename") == "RuntimeError" for o in cells[1].outputs), "the error shows"
    data = json.loads(_text(cells[3]).strip().splitlines()[-1])

    calls = data["calls"]
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        by_entity.setdefault(c["entity"], []).append(c)
    assert len(by_entity["__main__:parse"]) == 5
    (job,) = by_entity["__main__:job"]
    (finish,) = by_entity["__main__:finish"]
    assert all(c["parent_span_id"] == job["span_id"] for c in by_entity["__main__:parse"])
    assert finish["parent_span_id"] == job["span_id"]
    (cell_span,) = [s for s in data["spans"] if s["entity"] == "nightly"]
    # the cell's own code runs as a `<module>` call under the cell's span
    (cell_code,) = [
        c for c in by_entity["__main__:<module>"] if c["span_id"] == job["parent_span_id"]
    ]
    assert cell_code["parent_span_id"] == cell_span["span_id"]
    assert {c["trace_id"] for c in calls} == {cell_span["trace_id"]}
    assert all(c["duration_ns"] <= cell_code["duration_ns"] for c in calls)
    assert not any(e.startswith(("logging", "lumin", "IPython")) for e in by_entity)

    exc = data["exc"]
    phases = {(e["entity"], json.loads(e["attrs"])["phase"]) for e in exc}
    assert ("__main__:parse", "raised") in phases
    assert ("__main__:job", "handled") in phases
    assert ("__main__:finish", "raised") in phases
    unhandled = [e for e in exc if json.loads(e["attrs"])["phase"] == "unhandled"]
    assert {e["message"].split(":")[0] for e in unhandled} == {"RuntimeError", "KeyError"}
    assert all(e["severity"] == 17 for e in unhandled)
    raised = next(e for e in exc if e["entity"] == "__main__:parse")
    assert raised["message"] == "ValueError: bad record 3"
    assert "bad record 3" in json.loads(raised["attrs"])["exception.stacktrace"]
    assert raised["span_id"] in {c["span_id"] for c in by_entity["__main__:parse"]}

    logs = data["logs"]
    assert [(r["message"], r["severity"]) for r in logs] == [("skipped 3", 13), ("job done", 9)]
    assert "ValueError: bad record 3" in json.loads(logs[0]["attrs"])["exception.stacktrace"]

    p99 = {r["entity"]: r for r in data["p99"]}
    assert p99["__main__:parse"]["n"] == 5 and p99["__main__:job"]["p99"] > 0

    status = _text(cells[4])
    assert "running" in status and "native" in status and "events_stored" in status
    assert (tmp_path / ".lumin").is_dir()
