"""Request limits of the HTTP server: body size (before and after decompression) and rates.

The server reads a body only up to ``max_body_bytes``, checking ``Content-Length`` first and
counting streamed bytes when it is absent, then inflates gzip/deflate bodies with the same
cap (a small compressed bomb is stopped at the cap, never inflated whole). Rate limits are
token buckets per client address: ``rate_per_s`` requests per second on average, bursts up to
``burst``; an empty bucket tells the caller how long until the next token (Retry-After).
Invariant: nothing here blocks; a full request is refused, never queued.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Final

#: the default largest request body, compressed or inflated (OTLP recommends 20 MiB or less)
DEFAULT_MAX_BODY_BYTES: Final = 16 << 20
#: the default sustained requests per second per client address
DEFAULT_RATE_LIMIT_PER_S: Final = 200.0
#: Content-Encoding values the server inflates
ENCODINGS: Final = ("identity", "gzip", "x-gzip", "deflate")

_MAX_CLIENTS: Final = 4096  # buckets kept; the least recently seen client is forgotten


class BodyTooLargeError(Exception):
    """A request body (or its inflated form) above the limit."""

    def __init__(self, seen_bytes: int, max_bytes: int, *, inflated: bool) -> None:
        what = "inflated body" if inflated else "body"
        super().__init__(f"the {what} has at least {seen_bytes} bytes; the limit is {max_bytes}")
        self.seen_bytes = seen_bytes
        self.max_bytes = max_bytes
        self.inflated = inflated


class EncodingError(Exception):
    """A Content-Encoding the server does not know, or a body that does not inflate."""

    def __init__(self, message: str, *, is_unknown: bool) -> None:
        super().__init__(message)
        self.is_unknown = is_unknown


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, max_bytes: int
) -> bytes:
    """Return the whole body from `chunks`, or raise BodyTooLargeError past `max_bytes`."""
    if content_length is not None and content_length.strip().isdigit():
        declared = int(content_length)
        if declared > max_bytes:
            raise BodyTooLargeError(declared, max_bytes, inflated=False)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError(size, max_bytes, inflated=False)
        parts.append(chunk)
    return b"".join(parts)


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Return `body` decoded from its Content-Encoding, at most `max_bytes` long.

    Raises
    ------
    EncodingError
        An encoding other than identity, gzip or deflate, or bytes that do not inflate.
    BodyTooLargeError
        The inflated body would pass `max_bytes`.
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        # RFC 9110 deflate is zlib-wrapped; some clients send raw deflate, so try both.
        wbits = zlib.MAX_WBITS if body[:1] and (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        raise EncodingError(
            f"Content-Encoding {encoding!r} is not one the server inflates", is_unknown=True
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
        if len(out) > max_bytes:
            raise BodyTooLargeError(len(out), max_bytes, inflated=True)
        if not inflater.eof:
            raise EncodingError(
                f"the {enc} body ends early: it is truncated or not {enc} data", is_unknown=False
            )
    except zlib.error as err:
        raise EncodingError(f"the body is not valid {enc} data ({err})", is_unknown=False) from err
    return out


class RateLimiter:
    """Token buckets per client: `allow(client)` returns 0.0 or the seconds to wait.

    Parameters
    ----------
    rate_per_s
        Tokens added per second (sustained requests per second); 0 or None turns limits off.
    burst
        Bucket size (default: one second's worth, at least 1).
    clock
        Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        rate_per_s: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s or 0.0
        self.burst = burst if burst is not None else max(1.0, self.rate_per_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: requests refused since start
        self.refused = 0

    @property
    def is_enabled(self) -> bool:
        """Whether any limit applies."""
        return self.rate_per_s > 0

    def allow(self, client: str) -> float:
        """Take one token for `client`; return 0.0 when allowed, else seconds until one."""
        if not self.is_enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                self.refused += 1
                wait = (1.0 - tokens) / self.rate_per_s
            while len(self._buckets) > _MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def retry_after(wait_s: float) -> str:
    """Return the Retry-After header value (whole seconds, at least 1) for `wait_s`."""
    return str(max(1, math.ceil(wait_s)))
