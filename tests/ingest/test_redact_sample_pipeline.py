"""Redaction, sampling and the pipeline stages on event batches."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from lumin_nb.config import profile_config
from lumin_nb.event import batch_from_columns
from lumin_nb.ingest import AdaptiveSampler, IngestError, Pipeline, Redactor, redact, sample
from lumin_nb.ingest.redact import luhn_ok

# Text that cannot hold any rule's match: lower-case words, no digits, '@', '=', ':' or '.'.
_plain = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz ,!?"), max_size=40)
_local = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,15}", fullmatch=True)
_domain = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,8}){0,2}\.[a-z]{2,6}", fullmatch=True)


def _luhn_complete(prefix: list[int]) -> str:
    for d in range(10):
        if luhn_ok("".join(map(str, [*prefix, d]))):
            return "".join(map(str, [*prefix, d]))
    raise AssertionError


_cards = st.lists(st.integers(0, 9), min_size=15, max_size=15).map(
    lambda ds: _luhn_complete([4, *ds[1:]])
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_jwts = st.tuples(
    st.dictionaries(st.sampled_from(["sub", "name", "iat"]), st.text(max_size=10), min_size=1),
    st.binary(min_size=8, max_size=40),
).map(lambda t: f"{_b64(b'{"alg":"HS256"}')}.{_b64(json.dumps(t[0]).encode())}.{_b64(t[1])}")
_tokens = st.from_regex(r"[A-Za-z0-9._~+/-]{8,40}", fullmatch=True)


def _batch(messages: list[str | None], attrs: list[str | None] | None = None) -> pa.RecordBatch:
    n = len(messages)
    return batch_from_columns(
        n, kind="log", source_type="external_log", message=pa.array(messages, pa.string()),
        attrs=pa.array(attrs or [None] * n, pa.string()), seq=0,
    )  # fmt: skip


@given(_plain, _plain, _local, _domain, _cards, _jwts, _tokens)
def test_no_false_negatives(
    a: str, b: str, local: str, domain: str, card: str, jwt: str, token: str
) -> None:
    email = f"{local}@{domain}"
    spaced = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    messages = [
        f"{a} {email} {b}",
        f"{a} card {card} {b}",
        f"{a} card {spaced} {b}",
        f"{a} {jwt} {b}",
        f"Authorization: Bearer {token}",
    ]
    attrs = [json.dumps({"user": email, "password": token, "note": f"token={token}"})] * 5
    out, counts = redact(_batch(messages, attrs))
    got = out.column("message").to_pylist()
    assert email not in got[0] and "[REDACTED:email]" in got[0]
    assert card not in got[1] and spaced not in got[2]
    assert jwt not in got[3]
    assert token not in got[4]
    for text in out.column("attrs").to_pylist():
        assert email not in text and token not in text
        json.loads(text)  # still valid JSON
    assert counts["email"] >= 1 and counts["card"] == 2 and counts["secret"] >= 1


@given(st.lists(_plain, min_size=1, max_size=10))
def test_text_without_pii_is_unchanged(messages: list[str]) -> None:
    batch = _batch(messages, [json.dumps({"k": m}) for m in messages])
    out, counts = Redactor(ip=True)(batch)
    assert counts == {}
    assert out.column("message").to_pylist() == messages
    assert out.column("attrs").to_pylist() == batch.column("attrs").to_pylist()


def test_luhn_failing_numbers_ip_option_cloud_keys_and_extra_rules() -> None:
    messages = [
        "order 4111111111111112 ok",
        "from 10.1.2.3 and 2001:db8::8a2e:370:7334",
        "keys AKIAIOSFODNN7EXAMPLE AIzaSyA-1234567890abcdefghijklmnopqrstu "
        "sk-proj-abcdefghijklmnopqrstuv",
        "ref ORD-12345",
    ]
    out, counts = Redactor(extra={"order": r"ORD-\d+"})(_batch(messages))
    got = out.column("message").to_pylist()
    assert got[0] == messages[0]  # fails Luhn: kept
    assert got[1] == messages[1]  # IPs are kept by default
    assert got[2] == "keys [REDACTED:aws_key] [REDACTED:gcp_key] [REDACTED:api_key]"
    assert got[3] == "ref [REDACTED:order]"
    out, counts = Redactor(ip=True)(_batch(messages))
    assert out.column("message")[1].as_py() == "from [REDACTED:ipv4] and [REDACTED:ipv6]"
    assert counts["ipv4"] == 1 and counts["ipv6"] == 1
    with pytest.raises(IngestError, match="Did you mean 'email'"):
        Redactor(rules=["emial"])


def _traced(n: int, trace_ids: list[bytes | None], severity: int = 9) -> pa.RecordBatch:
    return batch_from_columns(
        n, kind="span", source_type="otel", severity=severity,
        trace_id=pa.array(trace_ids, pa.binary(16)), duration_ns=pa.array([10] * n), seq=0,
    )  # fmt: skip


def test_sampling_is_consistent_by_trace_and_keeps_errors_and_slow_spans() -> None:
    import os

    traces = [os.urandom(16) for _ in range(2000)]
    a = _traced(4000, traces + traces)
    kept, dropped = sample(a, 0.25)
    ids = kept.column("trace_id").to_pylist()
    assert 0.18 < len(set(ids)) / 2000 < 0.32
    # every process keeps the same traces: both copies of a kept trace are kept
    assert all(ids.count(t) == 2 for t in set(ids))
    assert dropped == 4000 - kept.num_rows
    errors = _traced(100, traces[:100], severity=17)
    assert sample(errors, 0.0)[0].num_rows == 100
    slow = batch_from_columns(
        3, kind="span", source_type="otel", duration_ns=pa.array([5, 2_000_000_000, 10]), seq=0
    )
    assert sample(slow, 0.0, slow_ns=1_000_000_000)[0].column("duration_ns").to_pylist() == [
        2_000_000_000
    ]
    untraced = _traced(4000, [None] * 4000)
    assert 0.2 < sample(untraced, 0.3)[0].num_rows / 4000 < 0.4


def test_adaptive_sampler_follows_the_input_rate() -> None:
    now = [0.0]
    sampler = AdaptiveSampler(1000, half_life_s=1.0, clock=lambda: now[0])
    for _ in range(20):
        sampler.observe(10_000)  # 10,000 events every second
        now[0] += 1.0
    assert sampler.rate == pytest.approx(0.1, rel=0.05)
    for _ in range(20):
        sampler.observe(500)
        now[0] += 1.0
    assert sampler.rate == 1.0


def test_pipeline_dead_letters_bad_rows_enriches_redacts_and_batches() -> None:
    sent: list[pa.RecordBatch] = []
    now = [0.0]
    pipe = Pipeline(
        profile_config("prod_safe"), service="orders", host="h1", sink=sent.append,
        max_batch_rows=100, max_delay_ms=50, clock=lambda: now[0],
    )  # fmt: skip
    good = _batch(["mail bob@example.com", "fine"])
    bad = batch_from_columns(
        2, kind=pa.array(["log", "nonsense"]), source_type="external_log",
        message=pa.array(["ok", "x"]), attrs=pa.array([None, "not json"]), seq=0,
    )  # fmt: skip
    r1 = pipe.process(good)
    assert r1.accepted == 2 and r1.redacted == {"email": 1} and r1.rejected.num_rows == 0
    assert sent == []  # coalescing: not enough rows, not old enough
    r2 = pipe.process(bad)
    assert r2.accepted == 1 and r2.rejected.num_rows == 1
    assert "kind not one of" in r2.rejected.column("reason")[0].as_py()
    now[0] += 0.06
    assert pipe.poll() > 0
    assert len(sent) == 1
    out = sent[0]
    logs = out.filter(pa.compute.equal(out.column("kind").cast(pa.string()), "log"))
    assert logs.column("message").to_pylist() == ["mail [REDACTED:email]", "fine", "ok"]
    assert set(logs.column("service").to_pylist()) == {"orders"}
    assert set(logs.column("host").to_pylist()) == {"h1"}
    metric = out.filter(pa.compute.equal(out.column("kind").cast(pa.string()), "metric"))
    assert metric.column("entity").to_pylist() == ["lumin.redacted"]
    assert json.loads(metric.column("attrs")[0].as_py()) == {"rule": "email"}
    assert pipe.rejected().num_rows == 1


def test_pipeline_ingest_keeps_good_lines_and_bounds_dead_letters() -> None:
    pipe = Pipeline(profile_config("dev"), max_rejected_rows=3)
    result = pipe.ingest(b'{"msg":"a"}\nbad1\nbad2\nbad3\nbad4\n{"msg":"b"}\n')
    assert result.accepted == 2 and result.rejected.num_rows == 4
    assert pipe.rejected().column("raw").to_pylist() == ["bad2", "bad3", "bad4"]
    assert pipe.rejected_dropped == 1
    assert pipe.flush() == 2


def test_pipeline_rejects_a_batch_with_foreign_columns_whole() -> None:
    pipe = Pipeline(profile_config("dev"))
    result = pipe.process(pa.record_batch({"x": [1, 2]}))
    assert result.accepted == 0
    assert "missing column(s)" in result.rejected.column("reason")[0].as_py()
