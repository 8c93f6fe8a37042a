"""Bulk loader that writes feature rows into Redis in Feast's own online-store layout.

Feast's ``RedisOnlineStore`` keeps one hash per entity: key = ``serialize_entity_key`` (v3)
+ project name; fields = 4-byte murmur3 of ``"<view>:<feature>"`` -> serialized
``feast.types.Value`` proto, plus ``_ts:<view>`` -> serialized ``google.protobuf.Timestamp``.
Default materialization builds one proto per cell in Python (~1.6k rows/s at ~100
features). This module produces byte-identical hash entries with numpy/Arrow, column at
a time, and streams pre-encoded ``HSET`` commands through redis-py's connections (single
node, TLS, sentinel, or cluster with rows routed by key slot; see :class:`BulkWriter`), so
``FeatureStore.get_online_features`` reads the result back unchanged. Byte equality with
Feast's own writer is tested in tests/integration/test_materialize.py.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lookalike.errors import ConfigError, LookalikeError
from lookalike.redis_target import RedisTarget

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

    def __init__(self, message: str, redirect: str | None = None) -> None:
        super().__init__(message)
        self.redirect = redirect  # cluster redirect error class name (MOVED, ASK...), if any


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


def hset_rows(keys: pa.Array, fields: Sequence[tuple[bytes, pa.Array]]) -> pa.BinaryArray:
    """One complete RESP ``HSET key f1 v1 f2 v2 ...`` command per row, as an Arrow binary array."""
    header = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(fields))
    parts: list[Any] = [header, _bulk_string(keys)]
    for name, values in fields:
        parts.append(_constant_bulk(name))
        parts.append(_bulk_string(values))
    rows = pc.binary_join_element_wise(*parts, b"")
    return rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows


def join_rows(rows: pa.BinaryArray) -> HsetBatch:
    """The commands of ``rows`` back to back in one buffer (no copy for a contiguous slice)."""
    n = len(rows)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    data = rows.buffers()[2]
    if data is None:
        return HsetBatch(payload=pa.py_buffer(b""), commands=n)
    return HsetBatch(payload=data.slice(int(offsets[0]), int(offsets[-1] - offsets[0])), commands=n)


def build_hset_commands(keys: pa.Array, fields: Sequence[tuple[bytes, pa.Array]]) -> HsetBatch:
    """``HSET key f1 v1 f2 v2 ...`` for every row; ``fields`` are (field name, encoded values)."""
    return join_rows(hset_rows(keys, fields))


_REDIRECT_PREFIXES = (("MOVED", "MovedError"), ("ASK", "AskError"), ("TRYAGAIN", "TryAgainError"),
                      ("CLUSTERDOWN", "ClusterDownError"))


def _read_hset_replies(connection: Any, expected: int) -> list[str]:
    """Read ``expected`` HSET replies; returns the error replies' messages.

    HSET answers one line each (``:n`` or ``-ERR ...``), so the replies are counted in bulk
    on redis-py's socket: parsing them one by one with ``read_response`` costs ~5 us each,
    ~35 s of the 7 M replies of a 1 M-customer load (measured, bench/README.md). Falls back
    to ``read_response`` when the connection exposes no socket.
    """
    import redis.exceptions as redis_errors

    sock = getattr(connection, "_sock", None)
    if sock is None:
        errors = []
        for _ in range(expected):
            try:
                connection.read_response()
            except redis_errors.ResponseError as exc:  # the stream stays in sync: keep reading
                errors.append(str(exc))
        return errors
    data = bytearray()
    lines = 0
    while lines < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RedisWriteError("Redis closed the connection during a bulk write")
        lines += chunk.count(b"\r\n") + (data.endswith(b"\r") and chunk.startswith(b"\n"))
        data += chunk
    if lines > expected:
        raise RedisWriteError(f"Redis sent {lines} replies to {expected} HSET commands")
    if b"-" not in data:
        return []
    return [line[1:].decode(errors="replace") for line in bytes(data).split(b"\r\n") if line.startswith(b"-")]


class BulkWriter:
    """Sends pre-encoded ``HSET`` commands through redis-py's connections.

    redis-py owns the connection (TLS, AUTH, database, sentinel discovery, cluster
    topology); this class only skips its per-command Python packing, which would cost
    more than everything else at ~100 fields per row: each node receives its rows' commands
    as one buffer and every reply is read back (an error reply fails the load). On a
    cluster, rows go to the node owning their key slot; a resharding redirect (MOVED/ASK)
    refreshes the slot map and resends the chunk (HSET is idempotent).
    """

    def __init__(self, target: RedisTarget, timeout_s: float = 60.0) -> None:
        self.target = target
        try:
            self.client = target.client(socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 10.0))
            self.client.ping()
        except Exception as exc:
            from lookalike.online import OnlineStoreUnavailable

            if isinstance(exc, LookalikeError):
                raise
            raise OnlineStoreUnavailable(f"cannot connect to Redis ({target.describe()}): {exc}") from exc

    @property
    def cluster(self) -> bool:
        return self.target.kind == "redis_cluster"

    def write(self, keys: pa.Array, fields: Sequence[tuple[bytes, pa.Array]], attempts: int = 3) -> int:
        """HSET every row; returns the number of commands Redis acknowledged."""
        rows = hset_rows(keys, fields)
        for attempt in range(attempts):
            try:
                if not self.cluster:
                    return self._send(self.client.connection_pool, join_rows(rows))
                sent = 0
                for pool, batch in self._by_node(keys, rows):
                    sent += self._send(pool, batch)
                return sent
            except RedisWriteError as exc:
                if not self.cluster or exc.redirect is None or attempt == attempts - 1:
                    raise
                # The slot map changed under us (resharding, failover): reload it and resend.
                self.client.nodes_manager.initialize()
        raise AssertionError("unreachable")

    def _by_node(self, keys: pa.Array, rows: pa.BinaryArray) -> list[tuple[Any, HsetBatch]]:
        from redis.crc import key_slot

        slots = np.fromiter((key_slot(k) for k in keys.to_pylist()), dtype=np.int64, count=len(keys))
        owner = {}
        for slot in np.unique(slots).tolist():
            owner[slot] = self.client.nodes_manager.get_node_from_slot(slot).name
        names = np.array([owner[s] for s in slots.tolist()], dtype=object)
        batches = []
        for name in sorted(set(owner.values())):
            node = self.client.get_node(node_name=name)
            picked = rows.take(pa.array(np.flatnonzero(names == name)))
            batches.append((node.redis_connection.connection_pool, join_rows(picked)))
        return batches

    @staticmethod
    def _send(pool: Any, batch: HsetBatch) -> int:
        if batch.commands == 0:
            return 0
        connection = pool.get_connection()
        try:
            connection.send_packed_command([memoryview(batch.payload)], check_health=False)
            errors = _read_hset_replies(connection, batch.commands)
        except BaseException:
            connection.disconnect()  # unread replies would poison the next command
            raise
        finally:
            pool.release(connection)
        if errors:
            first = errors[0]
            redirect = next((name for prefix, name in _REDIRECT_PREFIXES if first.startswith(prefix)), None)
            raise RedisWriteError(f"Redis refused {len(errors)} of {batch.commands} writes: {first}",
                                  redirect=redirect)
        return batch.commands

    def close(self) -> None:
        self.client.close()
