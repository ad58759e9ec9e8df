"""Group API edge cases and bad input, on the wire (hand-written requests,
exact error codes) and through confluent-kafka's AdminClient / Consumer:
unknown topics in OffsetCommit, stale generations, oversized commit
metadata, a JoinGroup storm, follower rejoins, DeleteGroups and ListGroups
(also through `corelog groups list`)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from confluent_kafka import (
    ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition,
)
from confluent_kafka.admin import AdminClient

import ck
from test_groups_helpers import (
    ContinuousProducer, Member, Raw, _s, assignment, committed_offsets, corelog_cli, produce_n,
    uid, wait_until,
)

FAST = {"group.initial.rebalance.delay.ms": 0}

UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_METADATA_TOO_LARGE = 12
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79


@pytest.fixture
def fast_broker(broker_factory):
    return broker_factory(settings=FAST)


def test_offset_commit_unknown_topic_or_partition(fast_broker):
    bs = fast_broker.bootstrap
    ck.create_topic(bs, "grp-known", 2)
    group = "grp-unknown-tp-" + uid()
    raw = Raw(bs)
    try:
        for version in (0, 1, 2, 7):  # v0-1: hand-decoded (older sarama commits with v1)
            res = raw.offset_commit(group, -1, "", [
                ("grp-known", 0, 5 + version, "ok"),
                ("grp-known", 2, 5, None),      # partition out of range
                ("grp-known", -1, 5, None),
                ("no-such-topic", 0, 5, None),
            ], version=version)
            assert res == {
                ("grp-known", 0): 0,
                ("grp-known", 2): UNKNOWN_TOPIC_OR_PARTITION,
                ("grp-known", -1): UNKNOWN_TOPIC_OR_PARTITION,
                ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
            }, f"OffsetCommit v{version}: {res}"
            got = raw.offset_fetch(group, {"grp-known": [0]})
            assert got[("grp-known", 0)][:2] == (5 + version, "ok"), f"after OffsetCommit v{version}: {got}"
        got = raw.offset_fetch(group, {"grp-known": [0, 1], "no-such-topic": [0]})
        assert got[("grp-known", 0)][:2] == (12, "ok"), got
        assert got[("grp-known", 1)][0] == -1, got
        assert got[("no-such-topic", 0)][0] == -1, got
    finally:
        raw.close()
    # the unknown topic was not auto-created by the commit
    assert "no-such-topic" not in ck.admin(bs).list_topics(timeout=10).topics

    # AdminClient.alter_consumer_group_offsets (OffsetCommit, generation -1)
    a = AdminClient({"bootstrap.servers": bs})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition("grp-known", 1, 7),
                                               TopicPartition("no-such-topic", 0, 7)])
    fut = a.alter_consumer_group_offsets([req], request_timeout=15)[group]
    try:
        res = fut.result(timeout=20)
        errs = {(tp.topic, tp.partition): tp.error for tp in res.topic_partitions}
        assert errs[("grp-known", 1)] is None, errs
        assert errs[("no-such-topic", 0)] is not None and \
            errs[("no-such-topic", 0)].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, errs
    except KafkaException as e:  # librdkafka may fail the whole request on a partition error
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, e
    assert committed_offsets(bs, group, "grp-known", 2)[0] == 12


def test_commit_and_heartbeat_with_stale_generation(fast_broker):
    """Member A is alone in generation G; B joins, A rejoins, generation G+1.
    A's commit with G is then ILLEGAL_GENERATION, B's with G+1 works; an
    unknown member id is UNKNOWN_MEMBER_ID."""
    bs = fast_broker.bootstrap
    topic = "grp-gen"
    ck.create_topic(bs, topic, 2)
    group = "grp-gen-" + uid()
    a, b = Raw(bs, timeout=15), Raw(bs, timeout=15)
    try:
        ja = a.join_and_sync(group, [topic], {topic: [0, 1]}, rebalance_ms=30000)
        g, ma = ja["generation"], ja["member_id"]
        assert a.offset_commit(group, g, ma, [(topic, 0, 1, None)]) == {(topic, 0): 0}
        assert a.offset_commit(group, g - 1, ma, [(topic, 0, 2, None)]) == {(topic, 0): ILLEGAL_GENERATION}
        assert a.offset_commit(group, g + 1, ma, [(topic, 0, 2, None)]) == {(topic, 0): ILLEGAL_GENERATION}
        assert a.offset_commit(group, g, "not-a-member", [(topic, 0, 2, None)]) == \
            {(topic, 0): UNKNOWN_MEMBER_ID}
        assert a.heartbeat(group, g, ma) == 0
        assert a.heartbeat(group, g - 1, ma) == ILLEGAL_GENERATION
        assert a.heartbeat(group, g, "not-a-member") == UNKNOWN_MEMBER_ID

        # B joins (two-step); its second JoinGroup waits for A to rejoin
        jb = b.join(group, "", topics=[topic], rebalance_ms=30000)
        assert jb["error"] == MEMBER_ID_REQUIRED, jb
        mb = jb["member_id"]
        corr_b = b.send(11, 5, Raw.join_body(group, mb, topics=[topic], rebalance_ms=30000))
        deadline = time.monotonic() + 5
        while (hb := a.heartbeat(group, g, ma)) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hb == REBALANCE_IN_PROGRESS, f"A's heartbeat during the rebalance: {hb}"
        # PreparingRebalance: the old generation is still current, commits work (as in Kafka)
        assert a.offset_commit(group, g, ma, [(topic, 0, 3, None)]) == {(topic, 0): 0}
        ja2 = a.join(group, ma, topics=[topic], rebalance_ms=30000)
        jb2 = Raw.parse_join(b.recv(corr_b))
        assert ja2["error"] == 0 and jb2["error"] == 0, (ja2, jb2)
        g2 = ja2["generation"]
        assert jb2["generation"] == g2 == g + 1, (g, ja2, jb2)
        leader, follower = (a, b) if ja2["leader"] == ma else (b, a)
        lid = ja2["leader"]
        fid = mb if lid == ma else ma
        corr_f = follower.send(14, 3, Raw.sync_body(group, g2, fid, {}))
        s_l = leader.sync(group, g2, lid, {lid: assignment({topic: [0]}), fid: assignment({topic: [1]})})
        s_f = Raw.parse_sync(follower.recv(corr_f))
        assert s_l["error"] == 0 and s_f["error"] == 0, (s_l, s_f)
        assert s_f["assignment"] == assignment({topic: [1]})

        assert a.offset_commit(group, g, ma, [(topic, 0, 4, None)]) == {(topic, 0): ILLEGAL_GENERATION}, \
            "commit with the previous generation after the rebalance completed"
        assert a.heartbeat(group, g, ma) == ILLEGAL_GENERATION
        assert b.offset_commit(group, g2, mb, [(topic, 1, 9, None)]) == {(topic, 1): 0}
        assert a.offset_commit(group, g2, ma, [(topic, 0, 4, None)]) == {(topic, 0): 0}
        got = a.offset_fetch(group, {topic: [0, 1]})
        assert (got[(topic, 0)][0], got[(topic, 1)][0]) == (4, 9), got
    finally:
        a.close()
        b.close()


def test_follower_rejoin_with_same_metadata_does_not_rebalance(fast_broker):
    """Kafka: a follower that sends JoinGroup again with its member id and
    unchanged protocols to a Stable group gets the current generation back at
    once (it then SyncGroups); no rebalance starts and the leader's heartbeat
    stays clean. (kafka-python 3.0.12 does this when a poll times out during a
    rebalance.)"""
    bs = fast_broker.bootstrap
    topic = "grp-rejoin"
    ck.create_topic(bs, topic, 2)
    group = "grp-rejoin-" + uid()
    a, b = Raw(bs, timeout=15), Raw(bs, timeout=15)
    try:
        ja = a.join_and_sync(group, [topic], {topic: [0, 1]}, rebalance_ms=30000)
        ma = ja["member_id"]
        jb = b.join(group, "", topics=[topic], rebalance_ms=30000)
        mb = jb["member_id"]
        corr_b = b.send(11, 5, Raw.join_body(group, mb, topics=[topic], rebalance_ms=30000))
        wait_until(lambda: a.heartbeat(group, ja["generation"], ma) == REBALANCE_IN_PROGRESS, 5,
                   "A to see the rebalance")
        ja2 = a.join(group, ma, topics=[topic], rebalance_ms=30000)
        jb2 = Raw.parse_join(b.recv(corr_b))
        g2 = ja2["generation"]
        assert ja2["leader"] == ma, "A (first member) should stay leader"
        corr_f = b.send(14, 3, Raw.sync_body(group, g2, mb, {}))
        s = a.sync(group, g2, ma, {ma: assignment({topic: [0]}), mb: assignment({topic: [1]})})
        s_f = Raw.parse_sync(b.recv(corr_f))
        assert s["error"] == 0 and s_f["error"] == 0, (s, s_f)
        assert a.heartbeat(group, g2, ma) == 0 and b.heartbeat(group, g2, mb) == 0

        # the follower rejoins with identical metadata
        b.sock.settimeout(10)
        corr = b.send(11, 5, Raw.join_body(group, mb, topics=[topic], rebalance_ms=30000))
        t0 = time.monotonic()
        try:
            jb3 = Raw.parse_join(b.recv(corr))
        except socket.timeout:
            jb3 = None
        waited = time.monotonic() - t0
        hb = a.heartbeat(group, g2, ma)
        assert jb3 is not None and jb3["error"] == 0 and jb3["generation"] == g2 and hb == 0, (
            f"follower's identical JoinGroup to the Stable group: response {jb3} after {waited:.2f}s "
            f"(None = still blocked), leader heartbeat error {hb}; Kafka answers at once with "
            f"generation {g2} and starts no rebalance")
    finally:
        a.close()
        b.close()


def test_offset_metadata_too_large(fast_broker):
    bs = fast_broker.bootstrap
    topic = "grp-meta"
    ck.create_topic(bs, topic, 2)
    group = "grp-meta-" + uid()
    raw = Raw(bs)
    try:
        res = raw.offset_commit(group, -1, "", [(topic, 0, 10, "m" * 4097), (topic, 1, 11, "k" * 4096)])
        assert res == {(topic, 0): OFFSET_METADATA_TOO_LARGE, (topic, 1): 0}, res
        got = raw.offset_fetch(group, {topic: [0, 1]})
        assert got[(topic, 0)][0] == -1, f"oversized commit stored anyway: {got[(topic, 0)][:1]}"
        assert got[(topic, 1)][:2] == (11, "k" * 4096)
        # multi-byte characters: 4096 bytes is the limit, not 4096 characters
        res = raw.offset_commit(group, -1, "", [(topic, 0, 12, "é" * 2049)], version=2)
        assert res == {(topic, 0): OFFSET_METADATA_TOO_LARGE}, res
    finally:
        raw.close()

    # through a real consumer in the group (OffsetCommit with its generation)
    m = Member(bs, group + "-live", [topic], "meta")
    try:
        wait_until(lambda: m.partitions() == {0, 1}, 30, "member assigned")
        m.stop(close=False)
        with pytest.raises(KafkaException) as ei:
            res = m.c.commit(offsets=[TopicPartition(topic, 0, 3, metadata="x" * 5000)],
                             asynchronous=False)
            # librdkafka reports per-partition errors in the result when the request succeeded
            errs = [tp.error for tp in res if tp.error is not None]
            if errs:
                raise KafkaException(errs[0])
        assert ei.value.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE, ei.value
        m.c.commit(offsets=[TopicPartition(topic, 0, 3, metadata="x" * 100)], asynchronous=False)
    finally:
        m.c.close()
    assert committed_offsets(bs, group + "-live", topic, 2)[0] == 3


def test_offset_metadata_max_bytes_setting(broker_factory):
    b = broker_factory(settings={"offset.metadata.max.bytes": 16, **FAST})
    ck.create_topic(b.bootstrap, "grp-meta16", 1)
    raw = Raw(b.bootstrap)
    try:
        res = raw.offset_commit("g16", -1, "", [("grp-meta16", 0, 1, "x" * 17)])
        assert res == {("grp-meta16", 0): OFFSET_METADATA_TOO_LARGE}, res
        res = raw.offset_commit("g16", -1, "", [("grp-meta16", 0, 1, "x" * 16)])
        assert res == {("grp-meta16", 0): 0}, res
    finally:
        raw.close()


def test_coordinator_answers_right_after_the_offsets_topic_is_created(fast_broker):
    """The first FindCoordinator creates __consumer_offsets (50 partitions,
    spread over the shards, which apply the new topic one after another). A
    coordinator named by a look-up that arrives meanwhile must already serve
    the group: a JoinGroup sent at once gets MEMBER_ID_REQUIRED, not
    COORDINATOR_LOAD_IN_PROGRESS while the owning shard is still opening the
    group's partition (librdkafka then waits seconds before joining again,
    which once left two of five members out of a test's group)."""
    bs = fast_broker.bootstrap
    bad: list[str] = []
    joined = []
    start = threading.Event()

    def client(n: int):
        # Look-ups keep arriving while the shards apply the new topic one
        # after another; each coordinator named must take a JoinGroup.
        raw = Raw(bs)
        try:
            start.wait()
            time.sleep(n * 0.003)  # staggered over the creation
            # One second of look-ups from this thread's first answer (the
            # first waits for the creation, however slow the disk).
            deadline, hard = None, time.monotonic() + 30
            i = 0
            while time.monotonic() < (deadline or hard):
                g = f"fresh-{n}-{i}-{uid()}"
                i += 1
                r = raw.call(10, 1, _s(g) + struct.pack(">b", 0))
                r.i32()
                err = r.i16()
                if err == COORDINATOR_NOT_AVAILABLE:
                    time.sleep(0.01)
                    continue  # the topic is not there yet: clients look up again
                deadline = deadline or time.monotonic() + 1
                if err != 0:
                    bad.append(f"FindCoordinator {g}: error {err}")
                    continue
                j = raw.join(g, topics=["t"])
                if j["error"] != MEMBER_ID_REQUIRED:
                    bad.append(f"JoinGroup {g} right after FindCoordinator: error {j['error']}")
                joined.append(g)
        finally:
            raw.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(30)
    assert not bad, f"{len(bad)} of {len(joined)} look-ups: {bad[:5]}"
    assert len(joined) > 50, f"only {len(joined)} groups joined"


def test_join_group_storm(fast_broker):
    """200 fresh connections each send JoinGroup v5 with an empty member id to
    one group, then 200 more to 200 different groups: every one gets
    MEMBER_ID_REQUIRED with a distinct member id, quickly; meanwhile a real
    group keeps consuming and committing, a new group can form, and afterwards
    a real member can still join the stormed group."""
    bs = fast_broker.bootstrap
    topic = "grp-storm"
    ck.create_topic(bs, topic, 2)
    live_group = "grp-storm-live-" + uid()
    storm_group = "grp-storm-target-" + uid()
    prod = ContinuousProducer(bs, topic, 2, rate=200)
    live = Member(bs, live_group, [topic], "live")
    members = [live]
    socks: list[Raw] = []
    try:
        wait_until(lambda: live.partitions() == {0, 1}, 30, "live member assigned")
        wait_until(lambda: len(live.consumed) > 50, 15, "live member consuming")

        times = {}
        for label, groups in (("one group", [storm_group] * 200),
                              ("200 groups", [f"{storm_group}-{i}" for i in range(200)])):
            batch = [Raw(bs, timeout=20, client_id=f"storm-{i}") for i in range(len(groups))]
            socks += batch
            t0 = time.monotonic()
            corrs = [r.send(11, 5, Raw.join_body(g, "", topics=[topic])) for r, g in zip(batch, groups)]
            res = [Raw.parse_join(r.recv(c)) for r, c in zip(batch, corrs)]
            times[label] = time.monotonic() - t0
            errs = {x["error"] for x in res}
            assert errs == {MEMBER_ID_REQUIRED}, f"storm ({label}): error codes {errs}"
            ids = [x["member_id"] for x in res]
            assert all(ids) and len(set(ids)) == len(ids), f"storm ({label}): member ids not distinct"
            assert times[label] < 15.0, f"200 JoinGroups ({label}) took {times[label]:.1f}s"
            for r in batch:
                r.close()

        # the live group kept going: new records consumed and committed
        n = len(live.consumed)
        wait_until(lambda: len(live.consumed) > n + 100, 15, "live member still consuming after the storm")
        assert not live.commit_errors, live.commit_errors[:5]
        other = Member(bs, "grp-storm-other-" + uid(), [topic], "other")
        members.append(other)
        wait_until(lambda: other.partitions() == {0, 1} and other.consumed, 30,
                   "a new group forming and consuming after the storm")
        # the stormed group: its 200 pending member ids must expire (session
        # timeout 6 s) or the join completes at the rebalance deadline (20 s)
        late = Member(bs, storm_group, [topic], "late")
        members.append(late)
        t0 = time.monotonic()
        wait_until(lambda: late.partitions() == {0, 1}, 30, "a real member joining the stormed group")
        took = time.monotonic() - t0
        assert took < 15, f"joining the stormed group took {took:.1f}s"
        out = corelog_cli(bs, "list")
        assert live_group in out and storm_group in out
        print(f"storm: {times}, join after storm {took:.1f}s")
    finally:
        for r in socks:
            r.close()
        prod._stop.set()
        for m in members:
            if m.thread.is_alive():
                m.stop()


def test_delete_groups_and_list_groups(fast_broker):
    bs = fast_broker.bootstrap
    topic = "grp-del"
    ck.create_topic(bs, topic, 2)
    produce_n(bs, topic, 2, 10)
    g_active = "grp-del-active-" + uid()
    g_simple = "grp-del-simple-" + uid()
    raw = Raw(bs)
    try:
        assert raw.offset_commit(g_simple, -1, "", [(topic, 0, 4, None)]) == {(topic, 0): 0}
    finally:
        raw.close()
    m = Member(bs, g_active, [topic], "del")
    a = AdminClient({"bootstrap.servers": bs})
    try:
        wait_until(lambda: len(m.consumed) == 20, 30, "member consumed the 20 records")
        wait_until(lambda: committed_offsets(bs, g_active, topic, 2) == {0: 10, 1: 10}, 10, "commits")

        listed = a.list_consumer_groups(request_timeout=15).result(timeout=20)
        states = {g.group_id: str(g.state) for g in listed.valid}
        assert states.get(g_active, "").endswith("STABLE"), states
        assert states.get(g_simple, "").endswith("EMPTY"), states
        out = corelog_cli(bs, "list")
        rows = {l.split()[0]: l.split()[1:] for l in out.splitlines()[1:] if l.strip()}
        assert rows.get(g_active, [None])[0] == "Stable", out
        assert rows.get(g_simple, [None])[0] == "Empty", out

        fut = a.delete_consumer_groups([g_active], request_timeout=15)[g_active]
        with pytest.raises(KafkaException) as ei:
            fut.result(timeout=20)
        assert ei.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, ei.value
        assert m.partitions() == {0, 1}, "deleting a non-empty group disturbed its member"

        m.stop()  # LeaveGroup: the group becomes Empty
        wait_until(lambda: "Empty" in corelog_cli(bs, "describe", g_active).splitlines()[0], 10,
                   "group Empty after its last member left")
        a.delete_consumer_groups([g_active, g_simple], request_timeout=15)[g_active].result(timeout=20)
        listed = a.list_consumer_groups(request_timeout=15).result(timeout=20)
        ids = {g.group_id for g in listed.valid}
        assert g_active not in ids and g_simple not in ids, ids
        assert committed_offsets(bs, g_active, topic, 2) == {0: -1001, 1: -1001}
        fut = a.delete_consumer_groups([g_active], request_timeout=15)[g_active]
        with pytest.raises(KafkaException) as ei:
            fut.result(timeout=20)
        assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, ei.value

        # the deletion is durable (tombstones in __consumer_offsets)
        fast_broker.restart()
        out = corelog_cli(bs, "list")
        assert g_active not in out and g_simple not in out, out
        assert committed_offsets(bs, g_simple, topic, 2) == {0: -1001, 1: -1001}
    finally:
        if m.thread.is_alive():
            m.stop()
