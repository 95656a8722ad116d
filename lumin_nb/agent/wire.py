"""Message framing between agents and the observatory (DESIGN.md, data flow step 2).

Data (agent PUSH -> observatory PULL) is a two-frame ZeroMQ message:

1. a header: ``MAGIC`` (4 bytes), then big-endian ``first_seq`` (int64), ``count`` (int64),
   the token length (uint16) and the producer length (uint16), then the token and the
   producer (UTF-8);
2. the payload: one Arrow IPC stream holding one event batch of exactly ``count`` rows whose
   ``producer`` column is the header's producer and whose ``seq`` runs from ``first_seq``.

Control (agent DEALER <-> observatory ROUTER) is one frame holding a JSON object with an
``op`` key: ``hello`` (agent -> observatory: who it is, how far it has stamped),
``welcome`` (the observatory's session id, so an agent notices a restart and resends),
``ack`` (the batches stored, by first seq), ``configure`` and any other op (observatory ->
agent, answered by ``reply`` with the same ``id``).

Invariants: decoding never trusts a length it has not checked and raises `WireError` (never
anything else) on bad input; the payload is read zero-copy from the ZeroMQ frame.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from lumin_nb.errors import WireError as WireError  # re-exported by lumin_nb.agent

if TYPE_CHECKING:
    import pyarrow as pa

MAGIC: Final = b"LMB1"
_HEAD: Final = struct.Struct("!4sqqHH")
MAX_TOKEN_BYTES: Final = 1024
MAX_PRODUCER_BYTES: Final = 1024
MAX_CONTROL_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Header:
    """What the first frame of a data message says: who sent which seq range."""

    token: bytes
    producer: str
    first_seq: int
    count: int


def encode_header(token: bytes, producer: str, first_seq: int, count: int) -> bytes:
    """Return the header frame of a data message."""
    p = producer.encode()
    if len(token) > MAX_TOKEN_BYTES or len(p) > MAX_PRODUCER_BYTES:
        raise WireError(
            f"token ({len(token)} bytes) or producer ({len(p)} bytes) is too long; expected at "
            f"most {MAX_TOKEN_BYTES} bytes each. Fix: use a shorter service name or token."
        )
    return _HEAD.pack(MAGIC, first_seq, count, len(token), len(p)) + token + p


def decode_header(frame: bytes | memoryview) -> Header:
    """Return the header of a data message; raise WireError when it is not one."""
    data = bytes(frame[: _HEAD.size + MAX_TOKEN_BYTES + MAX_PRODUCER_BYTES + 1])
    if len(data) < _HEAD.size:
        raise WireError(f"header of {len(data)} bytes; expected at least {_HEAD.size}")
    magic, first, count, n_token, n_producer = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"header starts with {magic!r}; expected {MAGIC!r}")
    if len(data) != _HEAD.size + n_token + n_producer:
        raise WireError(
            f"header of {len(data)} bytes; its lengths say {_HEAD.size + n_token + n_producer}"
        )
    if first < 1 or count < 1 or first > (1 << 62) or count > (1 << 40):
        raise WireError(f"seq range first={first} count={count}; expected both >= 1")
    token = data[_HEAD.size : _HEAD.size + n_token]
    try:
        producer = data[_HEAD.size + n_token :].decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"producer is not UTF-8: {exc}") from None
    if not producer:
        raise WireError("empty producer; expected 'service:host:pid:random'")
    return Header(token, producer, first, count)


def encode_batch(batch: pa.RecordBatch) -> pa.Buffer:
    """Return `batch` as one Arrow IPC stream (the payload frame)."""
    import pyarrow as pa

    # measure first, then write into one buffer of the exact size: no regrowth copies
    mock = pa.MockOutputStream()
    with pa.ipc.new_stream(mock, batch.schema) as writer:
        writer.write_batch(batch)
    buffer = pa.allocate_buffer(mock.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buffer), batch.schema) as writer:
        writer.write_batch(batch)
    return buffer


def decode_batch(frame: Any) -> pa.RecordBatch:
    """Return the one batch of a payload frame (zero-copy); raise WireError when unreadable."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.py_buffer(frame))
        batches = list(reader)
    except (pa.ArrowException, ValueError, OSError, TypeError, OverflowError) as exc:
        raise WireError(f"payload is not an Arrow IPC stream: {exc}") from None
    if len(batches) != 1:
        raise WireError(f"payload holds {len(batches)} batches; expected exactly 1")
    return batches[0]


def encode_control(message: dict[str, Any]) -> bytes:
    """Return a control message (a dict with an ``op``) as one JSON frame."""
    if not isinstance(message.get("op"), str):
        raise WireError(f"control message {message!r} has no 'op'; expected {{'op': ...}}")
    return json.dumps(message, separators=(",", ":"), default=str).encode()


def decode_control(frame: bytes | memoryview) -> dict[str, Any]:
    """Return a control message; raise WireError unless it is a JSON object with an ``op``."""
    if len(frame) > MAX_CONTROL_BYTES:
        raise WireError(f"control message of {len(frame)} bytes; at most {MAX_CONTROL_BYTES}")
    try:
        message = json.loads(bytes(frame))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"control message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("control message is not a JSON object with a string 'op'")
    return message
