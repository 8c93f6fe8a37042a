"""The fast Redis loader's encoders produce exactly the bytes Feast's own writer produces."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from lookalike.errors import ConfigError
from lookalike.redis_loader import (
    build_hset_commands,
    encode_timestamps,
    encode_values,
)
from lookalike.redis_target import RedisTarget

pytestmark = pytest.mark.unit
UTC = dt.timezone.utc

CASES = [
    ("Float64", ValueType.DOUBLE, pa.array([1.5, None, 0.0, -2.25, float("nan"), 1e300])),
    ("Float64", ValueType.DOUBLE, pa.array([3, None, -7], pa.int64())),
    ("Float32", ValueType.FLOAT, pa.array([1.5, None, -0.125])),
    ("Int64", ValueType.INT64, pa.array([0, 1, -1, 127, 128, 300, 2**62, None], pa.int64())),
    ("Bool", ValueType.BOOL, pa.array([True, None, False])),
    ("String", ValueType.STRING, pa.array(["R0421", None, "", "é" * 70, "x" * 200])),
    ("UnixTimestamp", ValueType.UNIX_TIMESTAMP,
     pa.array([dt.datetime(2026, 1, 1, tzinfo=UTC), None, dt.datetime(1970, 1, 1, tzinfo=UTC)], pa.timestamp("us", "UTC"))),
]


@pytest.mark.parametrize(("dtype", "value_type", "column"), CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
def test_values_match_feast_protos(dtype: str, value_type: ValueType, column: pa.Array) -> None:
    expected = [v.SerializeToString() for v in
                python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)]
    assert encode_values(column, dtype).to_pylist() == expected


def test_timestamps_match_protobuf() -> None:
    stamps = [dt.datetime(2026, 11, 22, tzinfo=UTC), dt.datetime(2026, 11, 22, 1, 2, 3, 4567, tzinfo=UTC),
              dt.datetime(1970, 1, 1, tzinfo=UTC)]
    expected = []
    for stamp in stamps:
        proto = Timestamp()
        proto.FromDatetime(stamp)
        expected.append(proto.SerializeToString())
    assert encode_timestamps(pa.array(stamps, pa.timestamp("us", "UTC"))).to_pylist() == expected


def test_hset_commands_are_valid_resp() -> None:
    keys = pa.array([b"k1", b"key2"])
    batch = build_hset_commands(keys, [(b"f", pa.array([b"", b"ab"]))])
    assert batch.commands == 2
    assert batch.payload.to_pybytes() == (
        b"*4\r\n$4\r\nHSET\r\n$2\r\nk1\r\n$1\r\nf\r\n$0\r\n\r\n"
        b"*4\r\n$4\r\nHSET\r\n$4\r\nkey2\r\n$1\r\nf\r\n$2\r\nab\r\n"
    )


def test_connection_strings_feast_format() -> None:
    target = RedisTarget.parse("127.0.0.1:6380,db=2,ssl=true")
    assert (target.kind, target.nodes, target.params) == ("redis", (("127.0.0.1", 6380),), {"db": 2, "ssl": True})
    cluster = RedisTarget.parse("a:1,b:2,password=x", redis_type="redis_cluster")
    assert cluster.nodes == (("a", 1), ("b", 2)) and cluster.params == {"password": "x"}
    with pytest.raises(ConfigError, match="cluster"):
        RedisTarget.parse("a:1,b:2")  # two addresses for a single node
    with pytest.raises(ConfigError, match="host:port"):
        RedisTarget.parse("a:notaport")


def test_connection_urls_render_to_feast_config() -> None:
    assert RedisTarget.parse("redis://localhost:6379/").feast_config() == {
        "connection_string": "localhost:6379", "redis_type": "redis"}
    tls = RedisTarget.parse("rediss://user:p%40ss@h:6380/3?ssl_ca_certs=/ca.pem")
    assert tls.tls and tls.params == {"ssl_ca_certs": "/ca.pem", "password": "p@ss", "username": "user",
                                      "ssl": True, "db": 3}
    assert tls.feast_config()["connection_string"] == (
        "h:6380,ssl_ca_certs=/ca.pem,password=p@ss,username=user,ssl=true,db=3")
    assert "p@ss" not in tls.describe()
    cluster = RedisTarget.parse("rediss+cluster://a:1,b:2")
    assert cluster.feast_config() == {"connection_string": "a:1,b:2,ssl=true", "redis_type": "redis_cluster"}
    sentinel = RedisTarget.parse("redis+sentinel://s1:26379,s2:26379/prod/1")
    assert sentinel.feast_config() == {"connection_string": "s1:26379,s2:26379,db=1",
                                       "redis_type": "redis_sentinel", "sentinel_master": "prod"}
    with pytest.raises(ConfigError, match="master name"):
        RedisTarget.parse("redis+sentinel://s1:26379")
    with pytest.raises(ConfigError, match="scheme"):
        RedisTarget.parse("http://h:1")
