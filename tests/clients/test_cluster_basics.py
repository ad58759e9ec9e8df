"""A 3-node corelog cluster seen by real clients: metadata, replica placement,
replication-factor validation, acks=all round-trips through every broker."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import consume_all
from corelog_compat import Rec, expected_partitions, make_messages, verify


def test_metadata_lists_three_brokers(cluster):
    md = cluster.metadata()
    want = {nd.node_id: (nd.host, nd.port) for nd in cluster.nodes}
    got = {b.id: (b.host, b.port) for b in md.brokers.values()}
    assert got == want
    assert md.controller_id in want
    # every node answers by itself with the same broker list and controller
    for nd in cluster.nodes:
        raw = cluster.node_metadata(nd.node_id)
        assert raw.brokers == want, f"node {nd.node_id}: {raw.brokers}"
        assert raw.controller_id in want


def test_rf3_replicas_isr_and_leaders_spread(cluster):
    st = cluster.create_topic("spread", partitions=6, rf=3)
    for p, pm in st.items():
        assert sorted(pm.replicas) == [1, 2, 3], f"p{p}: replicas {pm.replicas}"
        assert sorted(pm.isr) == [1, 2, 3], f"p{p}: isr {pm.isr}"
        assert pm.leader == pm.replicas[0], f"p{p}: leader {pm.leader} is not the preferred {pm.replicas}"
    assert Counter(pm.leader for pm in st.values()) == {1: 2, 2: 2, 3: 2}, st
    # the first replicas rotate too, so preferred leadership is spread
    assert Counter(pm.replicas[0] for pm in st.values()) == {1: 2, 2: 2, 3: 2}
    # confluent-kafka sees the same
    md = cluster.metadata("spread").topics["spread"]
    for p, pm in md.partitions.items():
        assert pm.leader == st[p].leader and list(pm.replicas) == st[p].replicas
        assert sorted(pm.isrs) == [1, 2, 3]


def test_replication_factor_above_broker_count_rejected(cluster):
    futs = cluster.admin().create_topics([NewTopic("rf4", num_partitions=1, replication_factor=4)],
                                         request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        futs["rf4"].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR, ei.value
    md = cluster.metadata()
    assert "rf4" not in md.topics


def _produce(bootstrap: str, topic: str, msgs) -> dict[int, tuple[int, int]]:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    reports: dict[int, tuple[int, int]] = {}
    errs = []

    def cb(err, m, idx):
        if err is not None:
            errs.append(str(err))
        else:
            reports[idx] = (m.partition(), m.offset())

    for m in msgs:
        p.produce(topic, key=m.key, value=m.value, headers=list(m.headers), timestamp=m.timestamp,
                  on_delivery=lambda err, msg, idx=m.idx: cb(err, msg, idx))
        p.poll(0)
    assert p.flush(60) == 0
    assert not errs, errs[:5]
    return reports


def _consume_recs(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Rec]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    import time
    import uuid

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "v-" + uuid.uuid4().hex[:6],
                  "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: dict[int, list[Rec]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any(len(out[p]) < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, f"timed out: {[len(out[p]) for p in out]} of {ends}"
            for m in c.consume(1000, timeout=0.5):
                assert m.error() is None, m.error()
                ts_type, ts = m.timestamp()
                out[m.partition()].append(Rec(m.partition(), m.offset(), m.key(), m.value(),
                                              tuple(m.headers() or ()), ts,
                                              "create" if ts_type == 1 else "logappend"))
        return out
    finally:
        c.close()


def test_acks_all_roundtrip_through_every_broker(cluster):
    topic = "rt3"
    cluster.create_topic(topic, partitions=3, rf=3)
    msgs = make_messages(n=1500, seed=7)
    reports = _produce(cluster.bootstrap, topic, msgs)
    expected = expected_partitions(msgs, reports)
    assert sorted(expected) == [0, 1, 2]
    # a consumer bootstrapped on each single node reads everything (fetching
    # from the leaders, wherever they are)
    for nd in cluster.nodes:
        consumed = _consume_recs(nd.bootstrap, topic, 3)
        verify(expected, consumed)
    # every replica holds the same bytes
    for p in range(3):
        cluster.wait_logs_identical(topic, p, timeout=20)


def test_produce_bootstrapped_on_a_follower(cluster):
    topic = "via-follower"
    st = cluster.create_topic(topic, partitions=1, rf=3)
    leader = st[0].leader
    follower = next(nd for nd in cluster.nodes if nd.node_id != leader)
    msgs = make_messages(n=300, seed=9)
    reports = _produce(follower.bootstrap, topic, msgs)
    assert len(reports) == 300 and {p for p, _ in reports.values()} == {0}
    got = consume_all(follower.bootstrap, topic, 1)
    assert [o for o, _, _ in got[0]] == list(range(300))
    assert [v for _, _, v in got[0]] == [m.value for m in msgs]
    # the records really went to the leader: its log and the follower's match
    cluster.wait_for(lambda: (s := cluster.agreed(topic, 1)) and s[0].leader == leader, 10,
                     f"every node to agree node {leader} still leads")
    data = cluster.wait_logs_identical(topic, 0, timeout=20)
    assert len(data) > 300 * 10


def test_describe_cluster_lists_brokers_and_controller(cluster):
    """librdkafka's AdminClient.describe_cluster (DescribeCluster, KIP-700)."""
    d = cluster.admin().describe_cluster(request_timeout=10).result(15)
    assert sorted(n.id for n in d.nodes) == [1, 2, 3]
    assert {(n.host, n.port) for n in d.nodes} == {(nd.host, nd.port) for nd in cluster.nodes}
    assert d.controller is not None and d.controller.id in (1, 2, 3)
    assert d.cluster_id


def test_topic_configs_change_on_every_broker(cluster):
    """IncrementalAlterConfigs through one broker: the controller commits it
    and every broker describes (and applies) the new value; bad values and
    broker resources are refused."""
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ResourceType)

    cluster.create_topic("cfg", 1, 3, {"retention.ms": "100000"})
    a = cluster.admin()
    res = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    a.incremental_alter_configs([res])[res].result(15)
    for nd in cluster.nodes:
        # The broker that took the change waits for its own apply; the
        # others apply the committed change a moment later.
        one = AdminClient({"bootstrap.servers": nd.bootstrap})

        def changed():
            r = ConfigResource(ResourceType.TOPIC, "cfg")
            got = one.describe_configs([r])[r].result(15)
            return (got["retention.ms"].value, got["cleanup.policy"].value) == ("123456", "delete,compact")

        cluster.wait_for(changed, 10, f"node {nd.node_id} to describe the new topic configs")
    bad = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(15)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    broker = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException):
        a.incremental_alter_configs([broker])[broker].result(15)
