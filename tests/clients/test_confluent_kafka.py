"""confluent-kafka (librdkafka 2.x) round-trip against the real corelog binary."""

import pytest

import ck
from corelog_compat import (
    matrix,
    PARTITIONS, assert_spread, expected_partitions, make_messages, partition_counts, verify,
)

# every codec x (nothing | clean restart | kill -9 restart) between produce and consume
CASES = matrix("zstd", "lz4")


@pytest.mark.parametrize("compression,action", CASES, ids=[f"{c}-{a}" for c, a in CASES])
def test_roundtrip(broker, compression, action):
    topic = f"ck-{compression}-{action}"
    ck.create_topic(broker.bootstrap, topic, PARTITIONS)

    msgs = make_messages(seed=11)
    reports = ck.produce(broker.bootstrap, topic, msgs, compression=compression)
    expected = expected_partitions(msgs, reports)
    assert_spread(expected)

    broker.act(action)

    consumed = ck.consume(broker.bootstrap, topic, partition_counts(expected))
    verify(expected, consumed)
