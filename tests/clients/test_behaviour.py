"""Real-client behaviour beyond the round-trip: errors, long polling,
ListOffsets, metadata, topic deletion and partition growth."""

import dataclasses
import json
import shutil
import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaError, OFFSET_END, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, OffsetSpec

import ck
from corelog_compat import make_messages, now_ms, verify, expected_partitions


def test_unknown_topic_with_autocreate_disabled(broker_factory):
    b = broker_factory(settings={"auto.create.topics.enable": "false"})
    topic = "no-such-topic"
    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "acks": "all",
        "topic.metadata.propagation.max.ms": 1000,
        "message.timeout.ms": 15000,
    })
    errs = []
    p.produce(topic, value=b"v", key=b"k", on_delivery=lambda err, m: errs.append(err))
    left = p.flush(30)
    assert left == 0, "produce to an unknown topic neither failed nor succeeded"
    assert len(errs) == 1 and errs[0] is not None, f"produce to unknown topic succeeded: {errs}"
    assert errs[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), (
        f"expected UNKNOWN_TOPIC_OR_PARTITION, got {errs[0]}"
    )

    # the broker's own answer in Metadata, and the topic was not created
    t = ck.topic_metadata(b.bootstrap, topic)
    assert t is not None and t.error is not None, f"metadata for {topic}: {t}"
    assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error
    assert topic not in ck.admin(b.bootstrap).list_topics(timeout=10).topics


def test_long_poll_wakes_on_produce(broker):
    topic = "long-poll"
    ck.create_topic(broker.bootstrap, topic, 1)
    c = ck.consumer(broker.bootstrap, {"fetch.wait.max.ms": 10000, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = {}

    def consume():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "t" not in got:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got["t"] = time.monotonic()
                got["value"] = m.value()

    th = threading.Thread(target=consume)
    th.start()
    try:
        # A producer that already knows the partition leader, so the delay
        # below is the produce and the wake-up, not a bootstrap.
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
        p.list_topics(topic, timeout=10)
        time.sleep(3)  # the consumer is now parked in a long-poll Fetch
        assert "t" not in got, "consumer got a message before anything was produced"
        p.produce(topic, value=b"wake up", key=b"k", partition=0)
        t_sent = time.monotonic()
        assert p.flush(10) == 0
        th.join(30)
    finally:
        th.join(30)
        c.close()
    assert got.get("value") == b"wake up", f"consumer never got the message: {got}"
    delay = got["t"] - t_sent
    assert delay < 3.0, (
        f"long-poll consumer got the message {delay:.2f}s after produce "
        "(fetch.wait.max.ms=10000: the waiting Fetch must wake on append)"
    )


def test_list_offsets(broker):
    topic = "list-offsets"
    ck.create_topic(broker.bootstrap, topic, 3)
    base = (now_ms() - 600_000) // 1000 * 1000
    msgs = make_messages(100, seed=5, ts_base=base)
    # timestamps base + 3*i; spread them wider so lookups are unambiguous
    msgs = [dataclasses.replace(m, timestamp=base + 1000 * m.idx) for m in msgs]
    reports = ck.produce(broker.bootstrap, topic, msgs, partition=0)
    assert sorted(o for _, o in reports.values()) == list(range(100))

    c = ck.consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 100)
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10, cached=False) == (0, 0)

        def lookup(ts):
            (r,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert r.error is None, r.error
            return r.offset

        assert lookup(base - 5000) == 0
        assert lookup(base) == 0
        assert lookup(base + 50_000) == 50
        assert lookup(base + 50_001) == 51
        assert lookup(base + 99_000) == 99
        assert lookup(base + 99_001) in (-1, OFFSET_END)  # past the last timestamp
    finally:
        c.close()

    # the same through the admin API (ListOffsets with earliest/latest/timestamp)
    a = ck.admin(broker.bootstrap)
    tp0 = TopicPartition(topic, 0)
    specs = {
        "earliest": (OffsetSpec.earliest(), 0),
        "latest": (OffsetSpec.latest(), 100),
        "ts": (OffsetSpec.for_timestamp(base + 42_000), 42),
    }
    for name, (spec, want) in specs.items():
        res = a.list_offsets({tp0: spec}, request_timeout=10)[tp0].result(timeout=20)
        assert res.offset == want, f"{name}: {res.offset} != {want}"


def test_kcat_metadata_listing(broker):
    topic = "kcat-listing"
    ck.create_topic(broker.bootstrap, topic, 3)
    kcat = shutil.which("kcat")
    assert kcat, "kcat not installed"
    r = subprocess.run([kcat, "-L", "-b", broker.bootstrap, "-t", topic, "-m", "10"],
                       capture_output=True, timeout=60)
    text = r.stdout.decode(errors="replace")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert f'topic "{topic}" with 3 partitions:' in text, text
    for p in range(3):
        assert f"partition {p}, leader " in text, text

    r = subprocess.run([kcat, "-L", "-J", "-b", broker.bootstrap, "-m", "10"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    md = json.loads(r.stdout)
    broker_ids = {b["id"] for b in md["brokers"]}
    assert len(broker_ids) == 1, md["brokers"]
    (t,) = [t for t in md["topics"] if t["topic"] == topic]
    assert "error" not in t or not t["error"], t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] in broker_ids and p["replicas"] and p["isrs"], p


def test_delete_topic(broker):
    topic = "to-delete"
    ck.create_topic(broker.bootstrap, topic, 3)
    ck.produce(broker.bootstrap, topic, make_messages(50, seed=6))
    a = ck.admin(broker.bootstrap)
    a.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)

    def gone():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if topic not in ck.admin(broker.bootstrap).list_topics(timeout=10).topics:
                return True
            time.sleep(0.2)
        return False

    assert gone(), f"{topic} still listed after DeleteTopics"
    # (asked through a consumer handle: the admin handle would let the broker auto-create it)
    t = ck.topic_metadata(broker.bootstrap, topic)
    assert t is not None and t.error is not None, f"metadata for deleted {topic}: {t}"
    assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error

    broker.restart()
    assert gone(), f"{topic} came back after a restart"
    # the name can be reused, and the new topic starts empty
    ck.create_topic(broker.bootstrap, topic, 1)
    c = ck.consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 0)
    finally:
        c.close()


def test_create_partitions(broker):
    topic = "grow"
    ck.create_topic(broker.bootstrap, topic, 3)
    a = ck.admin(broker.bootstrap)
    a.create_partitions([NewPartitions(topic, 5)], operation_timeout=30)[topic].result(timeout=60)
    ck.wait_topic(a, topic, 5)

    msgs = make_messages(20, seed=7)
    reports = ck.produce(broker.bootstrap, topic, msgs[:10], partition=4)
    reports.update(ck.produce(broker.bootstrap, topic, msgs[10:], partition=0))
    expected = expected_partitions(msgs, reports)
    verify(expected, ck.consume(broker.bootstrap, topic, {4: 10, 0: 10}))

    broker.restart()
    ck.wait_topic(ck.admin(broker.bootstrap), topic, 5)
    verify(expected, ck.consume(broker.bootstrap, topic, {4: 10, 0: 10}))

    # shrinking is refused
    with pytest.raises(Exception) as ei:
        a = ck.admin(broker.bootstrap)
        a.create_partitions([NewPartitions(topic, 2)], operation_timeout=30)[topic].result(timeout=60)
    assert "INVALID_PARTITIONS" in str(ei.value) or "partitions" in str(ei.value).lower(), ei.value


def test_describe_configs(broker):
    topic = "configured"
    ck.create_topic(broker.bootstrap, topic, 1, config={"retention.ms": "123456789"})
    a = ck.admin(broker.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = a.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "123456789", configs.get("retention.ms")
    assert "cleanup.policy" in configs, sorted(configs)


def test_listen_address_taken_and_host_names(broker, tmp_path):
    """A second broker on a port another broker listens on refuses to start
    (the shards share their port through SO_REUSEPORT, which would otherwise
    let it silently take half of the connections); `--listen` takes a host
    name as well as an IP literal."""
    from corelog_compat import corelog_bin, free_port

    taken = subprocess.run(
        [str(corelog_bin()), "serve", "--listen", broker.bootstrap, "--data-dir", str(tmp_path / "second")],
        capture_output=True, timeout=30,
    )
    assert taken.returncode != 0, "a second broker started on a port in use"
    assert b"address in use" in taken.stderr.lower(), taken.stderr[-2000:]
    # the first broker still serves everyone
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("after-clash", value=b"v")
    assert p.flush(15) == 0

    port = free_port()
    log = tmp_path / "named.log"
    proc = subprocess.Popen(
        [str(corelog_bin()), "serve", "--listen", f"localhost:{port}", "--data-dir", str(tmp_path / "named")],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
    )
    try:
        md = None
        deadline = time.monotonic() + 30
        while md is None and time.monotonic() < deadline:
            try:
                md = ck.admin(f"localhost:{port}").list_topics(timeout=2)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        assert md is not None, "broker on --listen localhost:PORT never answered"
        assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", port)]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-2000:]
