"""Bulk loader that writes feature rows into Redis in Feast's own online-store layout.

Feast's ``RedisOnlineStore`` keeps one hash per entity: key = ``serialize_entity_key`` (v3)
+ project name; fields = 4-byte murmur3 of ``"<view>:<feature>"`` -> serialized
``feast.types.Value`` proto, plus ``_ts:<view>`` -> serialized ``google.protobuf.Timestamp``.
Default materialization builds one proto per cell in Python (~1.6k rows/s at ~100
features). This module produces byte-identical hash entries with numpy/Arrow, column at
a time, and streams pre-encoded ``HSET`` commands (RESP) over one socket per chunk, so
``FeatureStore.get_online_features`` reads the result back unchanged. Byte equality with
Feast's own writer is tested in tests/integration/test_materialize.py.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lookalike.errors import ConfigError, LookalikeError

# feast.types.Value field tags (field_number << 3 | wire_type).
TAG_STRING = 0x12
TAG_INT64 = 0x20
TAG_DOUBLE = 0x29
TAG_FLOAT = 0x35
TAG_BOOL = 0x38
TAG_UNIX_TIMESTAMP = 0x40
INT64_MIN = np.iinfo(np.int64).min


class RedisWriteError(LookalikeError):
    """Redis refused or dropped a bulk write."""


def ragged(matrix: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Arrow binary array whose row i is ``matrix[i, :lengths[i]]``."""
    n, width = matrix.shape
    keep = np.arange(width)[None, :] < lengths[:, None]
    data = np.ascontiguousarray(matrix[keep], dtype=np.uint8)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): bytes, lengths."""
    unsigned = values.astype(np.int64).view(np.uint64)
    groups = np.empty((len(unsigned), 10), dtype=np.uint8)
    lengths = np.ones(len(unsigned), dtype=np.int64)
    rest = unsigned.copy()
    for i in range(10):
        groups[:, i] = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest = rest >> np.uint64(7)
        more = rest != 0
        groups[more, i] |= 0x80
        lengths += more
    return groups, lengths


def _prefixed(tag: int, body: np.ndarray) -> np.ndarray:
    out = np.empty((body.shape[0], body.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = tag
    out[:, 1:] = body
    return out


def encode_values(column: pa.Array, feast_dtype: str) -> pa.Array:
    """Serialized ``feast.types.Value`` per cell, exactly as Feast's materialization writes it.

    Nulls become the empty message (b""), except timestamps, where Feast writes NaT as
    ``unix_timestamp_val = INT64_MIN``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    is_null = column.is_null().to_numpy(zero_copy_only=False)
    if feast_dtype in ("Float64", "Float32"):
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        # Feast writes NaN the same as null (pandas cannot tell them apart).
        is_null = is_null | np.isnan(numbers)
        numbers = np.where(is_null, 0.0, numbers)
        if feast_dtype == "Float64":
            body = np.ascontiguousarray(numbers, dtype="<f8").view(np.uint8).reshape(n, 8)
            matrix = _prefixed(TAG_DOUBLE, body)
        else:
            body = np.ascontiguousarray(numbers, dtype="<f4").view(np.uint8).reshape(n, 4)
            matrix = _prefixed(TAG_FLOAT, body)
        lengths = np.where(is_null, 0, matrix.shape[1])
        return ragged(matrix, lengths)
    if feast_dtype in ("Int64", "Int32"):
        ints = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy()
        groups, lengths = varint_matrix(ints)
        return ragged(_prefixed(TAG_INT64, groups), np.where(is_null, 0, lengths + 1))
    if feast_dtype == "Bool":
        flags = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
        matrix = np.stack([np.full(n, TAG_BOOL, dtype=np.uint8), flags], axis=1)
        return ragged(matrix, np.where(is_null, 0, 2))
    if feast_dtype == "UnixTimestamp":
        # Truncate sub-second values to whole seconds, as Feast's int(datetime.timestamp()) does.
        seconds = pc.cast(pc.cast(column, pa.timestamp("s", "UTC"), safe=False), pa.int64())
        seconds_np = pc.fill_null(seconds, INT64_MIN).to_numpy()
        groups, lengths = varint_matrix(seconds_np)
        return ragged(_prefixed(TAG_UNIX_TIMESTAMP, groups), lengths + 1)
    if feast_dtype == "String":
        text = pc.cast(pc.fill_null(pc.cast(column, pa.string()), ""), pa.binary())
        groups, lengths = varint_matrix(pc.binary_length(text).to_numpy(zero_copy_only=False))
        prefix = ragged(_prefixed(TAG_STRING, groups), lengths + 1)
        encoded = pc.binary_join_element_wise(prefix, text, b"")
        return pc.if_else(pa.array(is_null), pa.scalar(b"", pa.binary()), encoded)
    raise ConfigError(f"the fast Redis loader cannot encode Feast type {feast_dtype}; use engine=feast")


def encode_timestamps(stamps: pa.Array) -> pa.Array:
    """Serialized ``google.protobuf.Timestamp`` (seconds, nanos) per row."""
    if isinstance(stamps, pa.ChunkedArray):
        stamps = stamps.combine_chunks()
    nanos_total = pc.cast(pc.cast(stamps, pa.timestamp("ns", "UTC")), pa.int64()).to_numpy()
    seconds = np.floor_divide(nanos_total, 1_000_000_000)
    nanos = nanos_total - seconds * 1_000_000_000
    sec_groups, sec_len = varint_matrix(seconds)
    # Proto3 omits zero-valued fields: an epoch-exact second has no seconds field.
    matrix = np.zeros((len(seconds), 22), dtype=np.uint8)
    matrix[:, :11] = _prefixed(0x08, sec_groups)
    lengths = np.where(seconds != 0, 1 + sec_len, 0)
    # Sub-second stamps are rare (snapshots are midnights): append their nanos field row by row.
    for row in np.flatnonzero(nanos != 0):
        nano_groups, nano_len = varint_matrix(nanos[row : row + 1])
        extra = np.concatenate([[0x10], nano_groups[0, : nano_len[0]]]).astype(np.uint8)
        matrix[row, lengths[row] : lengths[row] + len(extra)] = extra
        lengths[row] += len(extra)
    return ragged(matrix, lengths)


def entity_key_prefix() -> bytes:
    """Bytes Feast's ``serialize_entity_key`` (v3) puts before the 8-byte int64 customer id."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def key(value: int) -> bytes:
        return bytes(serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=value)]),
            entity_key_serialization_version=3,
        ))

    probe = 0x0102030405060708
    sample = key(probe)
    if not sample.endswith(struct.pack("<q", probe)):
        raise ConfigError("unexpected Feast entity key layout; use engine=feast")
    prefix = sample[:-8]
    if key(-5) != prefix + struct.pack("<q", -5):
        raise ConfigError("unexpected Feast entity key layout; use engine=feast")
    return prefix


def redis_keys(customer_ids: np.ndarray, project: str) -> pa.Array:
    prefix = np.frombuffer(entity_key_prefix(), dtype=np.uint8)
    suffix = np.frombuffer(project.encode(), dtype=np.uint8)
    ids = np.ascontiguousarray(customer_ids, dtype="<i8").view(np.uint8).reshape(-1, 8)
    n = ids.shape[0]
    matrix = np.concatenate([np.broadcast_to(prefix, (n, len(prefix))), ids, np.broadcast_to(suffix, (n, len(suffix)))], axis=1)
    return ragged(matrix, np.full(n, matrix.shape[1]))


def field_hash(view_name: str, feature_name: str) -> bytes:
    from feast.infra.online_stores.helpers import _mmh3

    return bytes(_mmh3(f"{view_name}:{feature_name}"))


def _bulk_string(values: pa.Array) -> pa.Array:
    """RESP bulk strings ``$<len>\\r\\n<bytes>\\r\\n`` per row."""
    lengths = pc.cast(pc.cast(pc.binary_length(values), pa.string()), pa.binary())
    return pc.binary_join_element_wise(b"$", lengths, b"\r\n", values, b"\r\n", b"")


def _constant_bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@dataclass
class HsetBatch:
    """Pre-encoded RESP ``HSET`` commands, one per entity row, and their count."""

    payload: pa.Buffer
    commands: int


def build_hset_commands(
    keys: pa.Array,
    fields: Sequence[tuple[bytes, pa.Array]],
) -> HsetBatch:
    """``HSET key f1 v1 f2 v2 ...`` for every row; ``fields`` are (field name, encoded values)."""
    n = len(keys)
    header = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(fields))
    parts: list[Any] = [header, _bulk_string(keys)]
    for name, values in fields:
        parts.append(_constant_bulk(name))
        parts.append(_bulk_string(values))
    rows = pc.binary_join_element_wise(*parts, b"")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    data = rows.buffers()[2]
    return HsetBatch(payload=data.slice(int(offsets[0]), int(offsets[-1] - offsets[0])), commands=n)


class RespConnection:
    """A plain socket speaking RESP: send pre-encoded commands, count the replies."""

    def __init__(self, connection_string: str, timeout_s: float = 60.0) -> None:
        host, port, params = parse_connection_string(connection_string)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            from lookalike.online import OnlineStoreUnavailable

            raise OnlineStoreUnavailable(f"cannot connect to Redis at {host}:{port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        if "password" in params:
            auth = [b"AUTH"] + ([str(params["username"]).encode()] if "username" in params else [])
            self.call(auth + [str(params["password"]).encode()])
        if "db" in params:
            self.call([b"SELECT", str(params["db"]).encode()])

    def call(self, args: Sequence[bytes]) -> None:
        payload = b"*%d\r\n" % len(args) + b"".join(_constant_bulk(a) for a in args)
        self.send(payload, 1)

    def send(self, payload: Any, replies: int) -> None:
        self.sock.sendall(memoryview(payload))
        self._read_replies(replies)

    def _read_replies(self, expected: int) -> None:
        # HSET/AUTH/SELECT replies are single lines (":n", "+OK", "-ERR ...").
        data = bytearray(self._buffer)
        while data.count(b"\r\n") < expected:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RedisWriteError("Redis closed the connection during a bulk write")
            data += chunk
        lines = bytes(data).split(b"\r\n")
        for line in lines[:expected]:
            if line.startswith(b"-"):
                raise RedisWriteError(f"Redis refused a write: {line.decode(errors='replace')}")
        self._buffer = b"\r\n".join(lines[expected:])

    def close(self) -> None:
        self.sock.close()


def parse_connection_string(connection_string: str) -> tuple[str, int, dict[str, str]]:
    """Feast's Redis format ``host:port[,db=0][,password=...]`` (also accepts ``redis://host:port``)."""
    text = connection_string.strip()
    if text.startswith("redis://"):
        text = text[len("redis://") :].rstrip("/")
    parts = [p for p in text.split(",") if p]
    nodes = [p for p in parts if "=" not in p]
    params = dict(p.split("=", 1) for p in parts if "=" in p)
    if len(nodes) != 1 or ":" not in nodes[0]:
        raise ConfigError(f"Redis connection string {connection_string!r} must be host:port[,db=N,...]")
    unsupported = sorted(set(params) - {"db", "password", "username"})
    if unsupported:
        raise ConfigError(f"the fast Redis loader does not support {unsupported}; use engine=feast")
    host, port = nodes[0].rsplit(":", 1)
    return host, int(port), params
