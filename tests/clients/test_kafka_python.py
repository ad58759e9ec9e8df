"""kafka-python (pure Python client) round-trip against the real corelog binary."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from corelog_compat import (
    matrix,
    PARTITIONS, Rec, assert_spread, expected_partitions, make_messages, partition_counts, verify,
)

# every codec x (nothing | clean restart | kill -9 restart) between produce and consume
CASES = matrix("lz4", "gzip")

_TS_TYPES = {0: "create", 1: "logappend"}


def create_topic(bootstrap, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="corelog-compat-admin")
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            timeout_ms=30000,
            wait_for_metadata=True,
        )
    finally:
        admin.close()


def produce(bootstrap, topic, msgs, compression):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=None if compression == "none" else compression,
        enable_idempotence=False,  # corelog has no InitProducerId yet
        linger_ms=5,
        retries=5,
        max_request_size=4 * 1024 * 1024,
        allow_auto_create_topics=False,
    )
    try:
        futures = [
            (m.idx, producer.send(topic, value=m.value, key=m.key, headers=list(m.headers),
                                  timestamp_ms=m.timestamp))
            for m in msgs
        ]
        producer.flush(timeout=120)
        reports = {}
        for idx, fut in futures:
            md = fut.get(timeout=60)
            reports[idx] = (md.partition, md.offset)
        return reports
    finally:
        producer.close(timeout=30)


def consume(bootstrap, topic, counts, timeout=120.0):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,  # manual assignment, no group coordinator
        enable_auto_commit=False,
        auto_offset_reset="none",  # an out-of-range start offset must raise
        check_crcs=True,
        fetch_max_wait_ms=200,
    )
    try:
        tps = [TopicPartition(topic, p) for p in counts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out = {p: [] for p in counts}
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < counts[p] for p in counts):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: got { {p: len(v) for p, v in out.items()} }, want {counts}"
                )
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                for r in records:
                    out[tp.partition].append(Rec(
                        partition=r.partition, offset=r.offset, key=r.key, value=r.value,
                        headers=tuple((k, v) for k, v in (r.headers or ())),
                        timestamp=r.timestamp, ts_type=_TS_TYPES.get(r.timestamp_type),
                    ))
        # nothing beyond what was produced
        ends = consumer.end_offsets(tps)
        assert {tp.partition: off for tp, off in ends.items()} == {
            p: (out[p][-1].offset + 1 if out[p] else 0) for p in counts
        }, f"end offsets {ends} do not match last consumed offsets"
        return out
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("compression,action", CASES, ids=[f"{c}-{a}" for c, a in CASES])
def test_roundtrip(broker, compression, action):
    topic = f"kp-{compression}-{action}"
    create_topic(broker.bootstrap, topic, PARTITIONS)

    msgs = make_messages(seed=22)
    reports = produce(broker.bootstrap, topic, msgs, compression)
    expected = expected_partitions(msgs, reports)
    assert_spread(expected)

    broker.act(action)

    consumed = consume(broker.bootstrap, topic, partition_counts(expected))
    verify(expected, consumed)
