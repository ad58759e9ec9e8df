"""confluent-kafka (librdkafka) helpers shared by several test files."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from corelog_compat import Msg, Rec

_TS_TYPES = {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "logappend"}


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def topic_metadata(bootstrap: str, topic: str):
    """Metadata for one topic through a consumer handle, which (unlike the
    admin/producer handle) does not ask the broker to auto-create it."""
    c = consumer(bootstrap, {"allow.auto.create.topics": False})
    try:
        return c.list_topics(topic=topic, timeout=10).topics.get(topic)
    finally:
        c.close()


def create_topic(bootstrap: str, topic: str, partitions: int = 3, config: dict | None = None) -> None:
    a = admin(bootstrap)
    futs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=30,
        request_timeout=30,
    )
    futs[topic].result(timeout=60)
    wait_topic(a, topic, partitions)


def wait_topic(a: AdminClient, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until metadata shows the topic with `partitions` partitions, all with a leader."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 and p.error is None for p in t.partitions.values()
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not ready with {partitions} partitions: {last and last.partitions}")


def produce(
    bootstrap: str,
    topic: str,
    msgs: list[Msg],
    compression: str = "none",
    partition: int | None = None,
    extra: dict | None = None,
) -> dict[int, tuple[int, int]]:
    """Produce keyed messages (acks=all, explicit CreateTime, headers);
    returns the delivery reports {idx: (partition, offset)}."""
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": compression,
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "partitioner": "murmur2_random",  # Java-client compatible keyed partitioning
    }
    conf.update(extra or {})
    p = Producer(conf)
    reports: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(idx):
        def cb(err, m):
            if err is not None:
                errors.append(f"msg#{idx}: {err}")
            else:
                reports[idx] = (m.partition(), m.offset())
        return cb

    for m in msgs:
        kw = dict(value=m.value, key=m.key, headers=list(m.headers), on_delivery=on_delivery(m.idx))
        if m.timestamp is not None:
            kw["timestamp"] = m.timestamp
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(90)
    assert remaining == 0, f"{remaining} messages still undelivered after flush"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    return reports


def consumer(bootstrap: str, extra: dict | None = None) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        # librdkafka requires a group.id even for assign(); it is never used to commit
        "group.id": "corelog-compat-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",  # an out-of-range start offset must surface
        "check.crcs": True,
    }
    conf.update(extra or {})
    return Consumer(conf)


def to_rec(m) -> Rec:
    ts_type, ts = m.timestamp()
    return Rec(
        partition=m.partition(),
        offset=m.offset(),
        key=m.key(),
        value=m.value(),
        headers=tuple(m.headers() or ()),
        timestamp=ts,
        ts_type=_TS_TYPES.get(ts_type, f"type{ts_type}"),
    )


def consume(
    bootstrap: str,
    topic: str,
    counts: dict[int, int],
    start: int = 0,
    timeout: float = 90.0,
    extra: dict | None = None,
) -> dict[int, list[Rec]]:
    """Manually assign every partition in `counts` from `start` and read until
    each has delivered its count and then reported EOF."""
    c = consumer(bootstrap, extra)
    try:
        c.assign([TopicPartition(topic, p, start) for p in counts])
        out: dict[int, list[Rec]] = {p: [] for p in counts}
        eof = {p: False for p in counts}
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(eof[p] and len(out[p]) >= counts[p] for p in counts):
                break
            for m in c.consume(num_messages=1000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof[m.partition()] = True
                        continue
                    errors.append(f"{err} (partition {m.partition()})")
                    if err.fatal() or m.partition() in counts or len(errors) > 50:
                        raise AssertionError(f"consumer error: {errors}")
                    continue
                eof[m.partition()] = False
                out[m.partition()].append(to_rec(m))
        else:
            got = {p: len(v) for p, v in out.items()}
            raise AssertionError(
                f"timed out consuming {topic}: got {got}, want {counts}, eof {eof}, errors {errors[:5]}"
            )
        return out
    finally:
        c.close()
