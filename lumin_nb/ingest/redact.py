"""PII redaction of ``message`` and ``attrs``: the redact stage of the ingest pipeline.

Each rule is an RE2 regex and a replacement (``[REDACTED:<rule>]``), applied with
``pyarrow.compute.replace_substring_regex``. One pass of all rules joined into a single regex
finds the rows that may hold anything; only those rows go through the rules one by one, so a
batch without PII costs one scan per column. Card numbers are candidates by regex and are
replaced only when they pass the Luhn check (a 16-digit number that fails it is kept); the
check runs on the candidate rows only.

Rules (applied in this order): ``secret`` (``password=``/``secret=``/``token=``/``api_key=``
values and JSON ``"password": "..."``), ``jwt``, ``bearer``, ``aws_key``, ``gcp_key``,
``api_key`` (``sk-...``, GitHub and Slack tokens), ``email``, ``card``; ``ipv4`` and ``ipv6``
with ``ip=True``. Replacements keep JSON text valid: they contain no quote or backslash.
Invariant: text in which no rule matches comes out byte for byte the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.errors import IngestError, closest
from lumin_nb.event import EVENT_SCHEMA

_SECRET_KEYS: Final = (
    r"password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|id_token|"
    r"api_key|apikey|api-key|auth_token|private_key"
)
_IPV4: Final = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

#: name -> (RE2 pattern, replacement); `\1` keeps the key of key=value rules.
RULES: Final[dict[str, tuple[str, str]]] = {
    "secret": (
        rf'(?i:("(?:{_SECRET_KEYS})"\s*:\s*)"(?:[^"\\]|\\.)*")',
        r'\1"[REDACTED:secret]"',
    ),
    "secret_kv": (
        rf"(?i:(\b(?:{_SECRET_KEYS})\s*[=:]\s*)(?:bearer\s+)?"
        r"(?:\\?\"[^\"\\]*\\?\"|'[^']*'|[^\s,;&\"'\\]+))",
        r"\1[REDACTED:secret]",
    ),
    "jwt": (r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", "[REDACTED:jwt]"),
    "bearer": (r"(?i:(\bbearer\s+))[A-Za-z0-9._~+/-]+=*", r"\1[REDACTED:bearer]"),
    "aws_key": (
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        "[REDACTED:aws_key]",
    ),
    "gcp_key": (r"\bAIza[0-9A-Za-z_-]{35}", "[REDACTED:gcp_key]"),
    "api_key": (
        r"\b(?:sk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}|\bgh[pousr]_[A-Za-z0-9]{36}\b|"
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        "[REDACTED:api_key]",
    ),
    "email": (
        r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}",
        "[REDACTED:email]",
    ),
    "card": (r"\b\d(?:[ -]?\d){12,18}\b", "[REDACTED:card]"),
    "ipv4": (rf"\b{_IPV4}\b", "[REDACTED:ipv4]"),
    "ipv6": (
        r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|"
        r"(?:\b[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?\b|"
        r"::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})\b",
        "[REDACTED:ipv6]",
    ),
}
#: the rules of `Redactor()`; `secret_kv` is counted under `secret`.
DEFAULT_RULES: Final = (
    "secret",
    "jwt",
    "bearer",
    "aws_key",
    "gcp_key",
    "api_key",
    "email",
    "card",
)
_CARD_RE: Final = re.compile(RULES["card"][0])
_COLUMNS: Final = ("message", "attrs")


def luhn_ok(digits: str) -> bool:
    """Return True when the digits of `digits` (spaces and dashes ignored) pass Luhn."""
    nums = [int(c) for c in digits if c.isdigit()]
    if len(nums) < 13:
        return False
    total = 0
    for i, d in enumerate(reversed(nums)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Redactor:
    """Replaces PII in the message and attrs columns of event batches.

    Parameters
    ----------
    rules
        Rule names to apply (default `DEFAULT_RULES`); see `RULES`.
    ip
        Also redact IPv4 and IPv6 addresses.
    extra
        More rules as ``{"name": RE2 regex}``, replaced by ``[REDACTED:name]``.

    Examples
    --------
    >>> batch, counts = Redactor(ip=True)(batch)  # doctest: +SKIP
    >>> counts
    {'email': 3, 'ipv4': 1}
    """

    def __init__(
        self,
        rules: Iterable[str] | None = None,
        *,
        ip: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        names = list(DEFAULT_RULES if rules is None else rules)
        if ip:
            names += [n for n in ("ipv4", "ipv6") if n not in names]
        valid = [n for n in RULES if n != "secret_kv"]
        unknown = [n for n in names if n not in RULES or n == "secret_kv"]
        if unknown:
            raise IngestError(
                f"rules={unknown!r}: not a redaction rule.{closest(unknown[0], valid)}\n"
                f"Expected some of: {', '.join(valid)}.\n"
                'Fix: Redactor(rules=["email", "card"], extra={"order_id": r"ORD-\\d+"})'
            )
        self.rules: list[tuple[str, str, str]] = []
        for name in names:
            if name == "secret":
                self.rules.append(("secret", *RULES["secret"]))
                self.rules.append(("secret", *RULES["secret_kv"]))
            else:
                self.rules.append((name, *RULES[name]))
        for name, pattern in (extra or {}).items():
            self.rules.append((name, pattern, f"[REDACTED:{name}]"))
        self._any = "|".join(f"(?:{p})" for _, p, _ in self.rules)
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), self._any)
        except pa.ArrowInvalid as err:
            raise IngestError(
                f"extra={dict(extra or {})!r}: a pattern is not an RE2 regex: {err}.\n"
                'Fix: Redactor(extra={"order_id": r"ORD-\\d+"})'
            ) from None

    @property
    def rule_names(self) -> list[str]:
        """Return the names of the rules applied, in order."""
        return list(dict.fromkeys(name for name, _, _ in self.rules))

    def redact_text(self, values: pa.Array) -> tuple[pa.Array, dict[str, int]]:
        """Return `values` (strings) with PII replaced, and the replacements made per rule."""
        counts: dict[str, int] = {}
        if len(values) == 0 or values.null_count == len(values) or not self.rules:
            return values, counts
        hit = pc.fill_null(pc.match_substring_regex(values, self._any), False)
        if not pc.any(hit).as_py():
            return values, counts
        sub = values.filter(hit)
        for name, pattern, replacement in self.rules:
            if name == "card":
                sub, n = _redact_cards(sub, replacement)
            else:
                n = pc.sum(pc.count_substring_regex(sub, pattern)).as_py() or 0
                if n:
                    sub = pc.replace_substring_regex(sub, pattern, replacement)
            if n:
                counts[name] = counts.get(name, 0) + int(n)
        return pc.replace_with_mask(values, hit, sub), counts

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[str, int]]:
        """Return `batch` with message and attrs redacted, and the replacements per rule."""
        counts: dict[str, int] = {}
        columns = list(batch.columns)
        for name in _COLUMNS:
            i = batch.schema.get_field_index(name)
            if i < 0:
                continue
            new, found = self.redact_text(columns[i])
            columns[i] = new
            for rule, n in found.items():
                counts[rule] = counts.get(rule, 0) + n
        if not counts:
            return batch, counts
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema), counts


def redact(
    batch: pa.RecordBatch, redactor: Redactor | None = None
) -> tuple[pa.RecordBatch, dict[str, int]]:
    """Return `batch` with PII in message and attrs replaced, and the count per rule.

    Uses `Redactor()` (the default rules) unless a configured `redactor` is given.
    """
    return (redactor or _default())(batch)


_DEFAULT: list[Redactor] = []


def _default() -> Redactor:
    if not _DEFAULT:
        _DEFAULT.append(Redactor())
    return _DEFAULT[0]


def _redact_cards(values: pa.Array, replacement: str) -> tuple[pa.Array, int]:
    """Replace Luhn-valid card numbers; Python runs on the candidate rows only."""
    candidate = pc.fill_null(pc.match_substring_regex(values, RULES["card"][0]), False)
    if not pc.any(candidate).as_py():
        return values, 0
    idx = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
    texts = pc.take(values, pa.array(idx)).to_pylist()
    found = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal found
        if luhn_ok(m.group(0)):
            found += 1
            return replacement
        return m.group(0)

    out = [None if t is None else _CARD_RE.sub(swap, t) for t in texts]
    if not found:
        return values, 0
    return pc.replace_with_mask(values, candidate, pa.array(out, pa.string())), found


assert set(_COLUMNS) <= set(EVENT_SCHEMA.names)
