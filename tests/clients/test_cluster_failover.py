"""Fault scenarios on a 3-node corelog cluster with real clients: leader
SIGKILL, follower SIGSTOP, min.insync.replicas enforcement, restart with
truncation and preferred-leader restoration, controller loss, group
coordinator loss, and kafka-python / KafkaJS across a leader failover.

Every scenario checks that nothing acknowledged is lost or duplicated and,
where the partition is quiet again, that every replica's log files are
byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import AckedProducer, check_exactly_once, consume_all, wait_for
from corelog_compat import corelog_bin

MIN2 = {"min.insync.replicas": 2}


def _leaders(cluster, topic: str, partitions: int) -> dict[int, int] | None:
    st = cluster.agreed(topic, partitions)
    return None if st is None else {p: pm.leader for p, pm in st.items()}


def _wait_leaders_moved(cluster, topic, partitions, victim, timeout=20.0) -> dict[int, int]:
    """Until every live node agrees that no partition is led by `victim` and
    every leader is a live node."""
    live = {nd.node_id for nd in cluster.live()}

    def ok():
        ls = _leaders(cluster, topic, partitions)
        if ls and all(l != victim and l in live for l in ls.values()):
            return ls
        return None

    return wait_for(ok, timeout, f"{topic}: leadership off node {victim}")


def _isr_seen_by(cluster, node_id: int, topic: str, partition: int) -> list[int]:
    err, parts = cluster.node_metadata(node_id, [topic]).topics[topic]
    return sorted(parts[partition].isr)


def _acked_after_per_partition(prod: AckedProducer, t: float) -> dict[int, int]:
    out: dict[int, int] = {}
    with prod.lock:
        for p, _, ta in prod.acked.values():
            if ta > t:
                out[p] = out.get(p, 0) + 1
    return out


# --------------------------------------------------------------------------- a. leader SIGKILL


@pytest.mark.parametrize("partitions", [1, 3])
def test_leader_sigkill_idempotent_producer_loses_nothing(cluster, partitions):
    topic = f"kill-leader-{partitions}"
    st = cluster.create_topic(topic, partitions, 3, MIN2)
    victim = st[0].leader
    victim_parts = [p for p, pm in st.items() if pm.leader == victim]
    prod = AckedProducer(cluster.bootstrap, topic, partitions, rate=300)
    try:
        wait_for(lambda: prod.n_acked() >= 300, 20, "300 acks before the kill")
        cluster.kill9(victim)
        t_kill = time.monotonic()
        moved = _wait_leaders_moved(cluster, topic, partitions, victim)
        for p in victim_parts:
            assert moved[p] != victim
        # producing goes on against the new leader(s) of every partition
        wait_for(lambda: all(_acked_after_per_partition(prod, t_kill).get(p, 0) >= 100
                             for p in range(partitions)),
                 30, "100 acks per partition after the kill")
        time.sleep(max(0.0, 5.0 - (time.monotonic() - t_kill)))
        cluster.restart(victim)
        cluster.wait_isr_full(topic, partitions, 30)
        time.sleep(1.0)  # a little more traffic with the restarted node in the ISR
    finally:
        left = prod.stop()
    assert left == 0, f"{left} records undelivered"
    assert not prod.failed, f"delivery errors: {list(prod.failed.items())[:5]}"
    consumed = consume_all(cluster.bootstrap, topic, partitions)
    n = check_exactly_once(prod, consumed)
    assert n == prod.sent and n > 600
    for p in range(partitions):
        data = cluster.wait_logs_identical(topic, p, timeout=30)
        assert len(data) > 0


# --------------------------------------------------------------------------- b. follower SIGSTOP


def test_follower_sigstop_isr_shrinks_and_recovers(cluster):
    topic = "stop-follower"
    st = cluster.create_topic(topic, 1, 3, MIN2)
    leader = st[0].leader
    ctrl = cluster.controller_id()
    followers = [r for r in st[0].replicas if r != leader]
    victim = next((f for f in followers if f != ctrl), followers[0])
    rest = sorted(set(st[0].replicas) - {victim})
    prod = AckedProducer(cluster.bootstrap, topic, 1, rate=200)
    try:
        wait_for(lambda: prod.n_acked() >= 200, 20, "200 acks before SIGSTOP")
        cluster.sigstop(victim)
        t_stop = time.monotonic()
        wait_for(lambda: _isr_seen_by(cluster, leader, topic, 0) == rest, 20,
                 f"leader {leader} shrinking the ISR to {rest}")
        t_shrunk = time.monotonic()
        time.sleep(max(1.5, 6.0 - (t_shrunk - t_stop)))
        t_cont = time.monotonic()
        cluster.sigcont(victim)
        during = prod.acked_between(t_shrunk, t_cont)
        assert during > 0, "no acks=all record was acknowledged with the ISR at 2 (min.insync 2)"
        st2 = cluster.wait_isr_full(topic, 1, 30)
        assert st2[0].leader == leader, f"leader moved from {leader} to {st2[0].leader}"
        t_back = time.monotonic()
        wait_for(lambda: prod.acked_after(t_back) >= 100, 15, "acks after the follower returned")
    finally:
        left = prod.stop()
    assert left == 0
    assert not prod.failed, f"delivery errors: {list(prod.failed.items())[:5]}"
    consumed = consume_all(cluster.bootstrap, topic, 1)
    check_exactly_once(prod, consumed)
    cluster.wait_logs_identical(topic, 0, timeout=30)


# --------------------------------------------------------------------------- c. min.insync.replicas=3


def _send_sync(producer: Producer, topic: str, values: list[bytes]) -> dict[bytes, tuple]:
    """Produces to partition 0 and flushes; {value: ("ok", offset) | ("err", KafkaError)}."""
    res: dict[bytes, tuple] = {}

    def cb(err, m):
        res[m.value()] = ("err", err) if err is not None else ("ok", m.offset())

    for v in values:
        producer.produce(topic, value=v, key=v, partition=0, on_delivery=cb)
    assert producer.flush(30) == 0
    return res


def test_min_insync_3_rejects_acks_all_with_a_broker_down(cluster):
    topic = "min-isr-3"
    st = cluster.create_topic(topic, 1, 3, {"min.insync.replicas": 3})
    leader = st[0].leader
    ctrl = cluster.controller_id()
    followers = [r for r in st[0].replicas if r != leader]
    victim = next((f for f in followers if f != ctrl), followers[0])
    base = {"bootstrap.servers": cluster.bootstrap, "linger.ms": 0, "retries": 0,
            "enable.idempotence": False, "message.timeout.ms": 5000}
    p_all = Producer(dict(base, acks="all"))
    p_one = Producer(dict(base, acks=1))

    before = _send_sync(p_all, topic, [b"before-%d" % i for i in range(20)])
    assert all(r[0] == "ok" for r in before.values()), before

    cluster.kill9(victim)
    rest = sorted(set(st[0].replicas) - {victim})
    wait_for(lambda: (s := cluster.agreed(topic, 1)) and s[0].leader == leader and sorted(s[0].isr) == rest,
             15, f"every live node to see leader {leader} and ISR without node {victim}")

    rejected = _send_sync(p_all, topic, [b"rejected-%d" % i for i in range(5)])
    codes = {v: r[1].code() for v, r in rejected.items() if r[0] == "err"}
    assert len(codes) == 5, f"acks=all with ISR 2 < min.insync 3 was accepted: {rejected}"
    names = {KafkaError(c).name() if c >= 0 else str(c) for c in codes.values()}
    assert set(codes.values()) <= {KafkaError.NOT_ENOUGH_REPLICAS,
                                   KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND}, names

    ones = _send_sync(p_one, topic, [b"acks1-%d" % i for i in range(20)])
    assert all(r[0] == "ok" for r in ones.values()), ones

    cluster.restart(victim)
    cluster.wait_isr_full(topic, 1, 30)
    p_after = Producer(dict(base, acks="all", retries=5, **{"message.timeout.ms": 20000}))
    after = _send_sync(p_after, topic, [b"after-%d" % i for i in range(20)])
    assert all(r[0] == "ok" for r in after.values()), after

    got = consume_all(cluster.bootstrap, topic, 1)[0]
    by_value = {v: o for o, _, v in got}
    for group in (before, ones, after):
        for v, (_, off) in group.items():
            assert by_value.get(v) == off, f"acknowledged {v!r}@{off} missing (found at {by_value.get(v)})"
    if all(c == KafkaError.NOT_ENOUGH_REPLICAS for c in codes.values()):
        # NOT_ENOUGH_REPLICAS means "not appended"
        assert not any(v in by_value for v in rejected), "a NOT_ENOUGH_REPLICAS record was appended"
    assert len(got) == len(set(by_value)), "duplicate records"
    cluster.wait_logs_identical(topic, 0, timeout=30)


# --------------------------------------------------------------------------- d. truncation + preferred leaders


def test_killed_leader_truncates_catches_up_and_preferred_leaders_return(cluster):
    """The leader of p0 gets records its followers never see (both followers
    SIGSTOPped, acks=1), then is SIGKILLed; the followers resume, one becomes
    leader and takes new acks=all writes. The old leader restarts: it must
    truncate its divergent tail, catch up, rejoin every ISR, and get its
    preferred leaderships back."""
    topic = "truncate"
    partitions = 3
    st = cluster.create_topic(topic, partitions, 3, MIN2)
    victim = st[0].leader
    others = [nd.node_id for nd in cluster.nodes if nd.node_id != victim]

    prod = AckedProducer(cluster.bootstrap, topic, partitions, rate=200)
    wait_for(lambda: prod.n_acked() >= 200, 20, "200 acks before the faults")

    # a divergent tail on the victim only
    for i in others:
        cluster.sigstop(i)
    # a Fetch the followers sent just before they froze is answered within
    # replica.fetch.wait.max.ms (200 ms) into their socket buffers, and they
    # would append whatever it carried after SIGCONT; wait so none is pending
    time.sleep(0.6)
    victim_nd = cluster.node(victim)
    p1 = Producer({"bootstrap.servers": victim_nd.bootstrap, "acks": 1, "retries": 0,
                   "enable.idempotence": False, "message.timeout.ms": 5000, "linger.ms": 0})
    lone = _send_sync(p1, topic, [b"unreplicated-%d" % i for i in range(10)])
    n_lone = sum(1 for r in lone.values() if r[0] == "ok")
    assert n_lone > 0, f"acks=1 to the lone leader failed: {lone}"
    cluster.kill9(victim)
    for i in others:
        cluster.sigcont(i)
    t_kill = time.monotonic()

    try:
        _wait_leaders_moved(cluster, topic, partitions, victim, timeout=25)
        wait_for(lambda: all(_acked_after_per_partition(prod, t_kill).get(p, 0) >= 50
                             for p in range(partitions)),
                 30, "50 acks per partition after the failover")
        cluster.restart(victim)
        cluster.wait_isr_full(topic, partitions, 30)
        pref = {p: pm.replicas[0] for p, pm in st.items()}
        wait_for(lambda: _leaders(cluster, topic, partitions) == pref, 20,
                 f"preferred leaders {pref} restored")
        time.sleep(1.0)
    finally:
        left = prod.stop()
    assert left == 0
    assert not prod.failed, f"delivery errors: {list(prod.failed.items())[:5]}"

    trunc = cluster.node(victim).grep_log("truncating")
    assert any(f"{topic}-0" in line for line in trunc), (
        f"node {victim} never logged truncating {topic}-0; its log has: {trunc[-5:]}")
    consumed = consume_all(cluster.bootstrap, topic, partitions)
    # acks=1 records written while the followers were frozen are gone (the
    # new leader never had them); everything acks=all acknowledged is there
    lone_values = set(lone)
    assert not any(v in lone_values for recs in consumed.values() for _, _, v in recs)
    check_exactly_once(prod, consumed)
    for p in range(partitions):
        cluster.wait_logs_identical(topic, p, timeout=30)


# --------------------------------------------------------------------------- e. controller loss


def test_create_topic_after_active_controller_sigkill(cluster):
    cluster.create_topic("before-ctrl-kill", 1, 3)
    ctrl = cluster.controller_id()
    cluster.kill9(ctrl)
    t0 = time.monotonic()
    name = "after-ctrl-kill"
    attempts: list[str] = []

    def create():
        # a fresh client per attempt: librdkafka keeps waiting for the controller
        # its last Metadata named (the dead node, for ~1 s after the kill)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        futs = admin.create_topics(
            [NewTopic(name, num_partitions=3, replication_factor=2)],
            operation_timeout=3, request_timeout=3)
        try:
            futs[name].result(timeout=6)
        except KafkaException as e:
            attempts.append(f"{time.monotonic() - t0:.1f}s: {e.args[0]}")
            if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return True  # an earlier attempt got through
            raise
        attempts.append(f"{time.monotonic() - t0:.1f}s: created")
        return True

    try:
        wait_for(create, 45, f"CreateTopics after killing controller {ctrl}", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}\nattempts: {attempts}") from None
    took = time.monotonic() - t0
    live = {nd.node_id for nd in cluster.live()}
    # created before the dead node was fenced, a partition may name it as leader
    # until the session timeout moves leadership; wait for live leaders
    st = wait_for(lambda: (lambda s: s if s and all(pm.leader in live for pm in s.values()) else None)(
        cluster.agreed(name, 3)), 15, "live nodes agree on live leaders for the new topic")
    new_ctrl = wait_for(lambda: (lambda c: c if c in live else None)(cluster.controller_id()), 10,
                        "a live controller")
    assert new_ctrl != ctrl
    # and the topic works
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    res = {}
    for i in range(30):
        p.produce(name, value=b"%d" % i, partition=i % 3,
                  on_delivery=lambda err, m: res.__setitem__(m.value(), err))
    assert p.flush(20) == 0
    assert all(e is None for e in res.values()) and len(res) == 30, res
    assert sum(len(v) for v in consume_all(cluster.bootstrap, name, 3).values()) == 30
    print(f"topic created {took:.1f}s after killing controller {ctrl}; new controller {new_ctrl}; "
          f"attempts: {attempts}")


# --------------------------------------------------------------------------- f. group coordinator loss


def test_consumer_group_survives_coordinator_sigkill(cluster):
    from test_groups_helpers import committed_offsets, describe_group, member_conf

    topic, group, P = "grp-fo", "g-" + uuid.uuid4().hex[:6], 3
    cluster.create_topic(topic, P, 3, MIN2)
    prod = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                     "enable.idempotence": True, "linger.ms": 5})
    acked: dict[int, set[int]] = {p: set() for p in range(P)}
    errs = []

    def cb(err, m):
        if err is not None:
            errs.append(str(err))
        else:
            acked[m.partition()].add(m.offset())

    def produce(n_per_part, tag):
        for i in range(n_per_part):
            for p in range(P):
                prod.produce(topic, value=b"%s-%d-%d" % (tag, p, i), partition=p, on_delivery=cb)
            prod.poll(0)
        assert prod.flush(60) == 0
        assert not errs, errs[:5]

    produce(100, b"a")
    seen: dict[int, list[int]] = {p: [] for p in range(P)}
    commit_errors = []

    def on_commit(err, parts):
        if err is not None:
            commit_errors.append(str(err))

    c = Consumer(member_conf(cluster.bootstrap, group, {"topic.metadata.refresh.interval.ms": 1000,
                                                         "on_commit": on_commit}))
    c.subscribe([topic])

    def pump(until, timeout, what):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, (
                f"timed out: {what}; consumed {[len(set(v)) for v in seen.values()]}, "
                f"commit errors {commit_errors[-3:]}")
            msgs = c.consume(500, timeout=0.2)
            for m in msgs:
                if m.error() is not None:
                    continue  # transient broker/leader errors are reported, not fatal
                seen[m.partition()].append(m.offset())
            if msgs:
                try:
                    c.commit(asynchronous=True)
                except KafkaException as e:
                    commit_errors.append(str(e))

    def have_all():
        return all(set(seen[p]) >= acked[p] for p in range(P))

    last_seen: list = []  # what list_consumer_group_offsets said while waiting

    try:
        pump(have_all, 30, "first 300 records")
        assert sum(len(v) for v in acked.values()) == 300
        wait_for(lambda: committed_offsets(cluster.bootstrap, group, topic, P) == {p: 100 for p in range(P)},
                 15, "first commits")
        coord = describe_group(cluster.bootstrap, group).coordinator.id
        assert coord in {1, 2, 3}
        cluster.kill9(coord)
        t_kill = time.monotonic()
        produce(100, b"b")
        pump(have_all, 45, "records produced after the coordinator died")

        want = {p: 200 for p in range(P)}

        def final_commit():
            c.consume(10, timeout=0.1)
            try:
                c.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() != KafkaError._NO_OFFSET:  # _NO_OFFSET: nothing new to commit
                    raise
            last_seen.append(committed_offsets(cluster.bootstrap, group, topic, P))
            return last_seen[-1] == want

        try:
            wait_for(final_commit, 30, "a synchronous commit of offset 200 on every partition")
        except AssertionError as e:
            raise AssertionError(f"{e}; committed offsets last listed: {last_seen[-1:]}") from None
        new_coord = describe_group(cluster.bootstrap, group).coordinator.id
        assert new_coord != coord and new_coord in {nd.node_id for nd in cluster.live()}
    finally:
        c.close()
    for p in range(P):
        assert set(seen[p]) == set(range(200)), f"p{p}: skipped {sorted(set(range(200)) - set(seen[p]))[:10]}"
    print(f"coordinator {coord} -> {new_coord}; duplicates re-read: "
          f"{sum(len(v) - len(set(v)) for v in seen.values())}; commit errors: {len(commit_errors)}; "
          f"{time.monotonic() - t_kill:.1f}s after the kill")


# --------------------------------------------------------------------------- g. other clients


def test_kafka_python_producer_and_consumer_across_leader_failover(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    topic = "kp-fo"
    st = cluster.create_topic(topic, 1, 3, MIN2)
    leader = st[0].leader
    servers = cluster.bootstrap.split(",")
    prod = KafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True,
                         retries=50, retry_backoff_ms=200, request_timeout_ms=10000,
                         metadata_max_age_ms=2000, linger_ms=5)
    cons = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=200,
                         metadata_max_age_ms=2000, request_timeout_ms=10000)
    tp = KTP(topic, 0)
    cons.assign([tp])
    cons.seek_to_beginning(tp)
    got: list[tuple[int, bytes]] = []

    def poll_until(n, timeout):
        deadline = time.monotonic() + timeout
        while len(got) < n:
            assert time.monotonic() < deadline, f"kafka-python consumer stuck at {len(got)}/{n}"
            for recs in cons.poll(timeout_ms=300).values():
                got.extend((r.offset, r.value) for r in recs)

    try:
        sent = {}
        futs = [(b"a%d" % i, prod.send(topic, value=b"a%d" % i, partition=0)) for i in range(200)]
        for v, f in futs:
            sent[v] = f.get(timeout=30).offset
        poll_until(200, 20)
        cluster.kill9(leader)
        futs = [(b"b%d" % i, prod.send(topic, value=b"b%d" % i, partition=0)) for i in range(200)]
        for v, f in futs:
            sent[v] = f.get(timeout=60).offset
        new = _wait_leaders_moved(cluster, topic, 1, leader)[0]
        assert new != leader
        poll_until(400, 40)
    finally:
        prod.close(timeout=10)
        cons.close()
    assert [o for o, _ in got] == list(range(400)), "offsets not dense / duplicated"
    by_value = {v: o for o, v in got}
    assert len(by_value) == 400
    for v, off in sent.items():
        assert by_value.get(v) == off, f"{v!r} acked at {off}, consumed at {by_value.get(v)}"


def test_loadgen_consumer_follows_a_leader_failover(cluster, tmp_path):
    """loadgen's consumer (the benchmark tool we ship) keeps reading when the
    partition leader is SIGKILLed: it looks the leaders up again instead of
    failing on the lost connection or fetching from a non-leader forever."""
    loadgen = corelog_bin().parent / "loadgen"  # built next to the broker by `cargo build --release`
    assert loadgen.exists(), f"{loadgen} not built"
    topic = "lg-fo"
    st = cluster.create_topic(topic, 1, 3, MIN2)
    leader = st[0].leader
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    for i in range(2000):
        p.produce(topic, value=b"first-%d" % i, partition=0)
    assert p.flush(30) == 0
    out = tmp_path / "loadgen.txt"
    proc = subprocess.Popen(
        [str(loadgen), "consume", "--brokers", cluster.bootstrap, "--topic", topic, "--from", "earliest",
         "--messages", "4000", "--warmup", "0", "--quiet"],
        stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        cluster.kill9(leader)
        for i in range(2000):
            p.produce(topic, value=b"second-%d" % i, partition=0)
        assert p.flush(60) == 0
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert rc == 0, f"loadgen consume exited {rc}:\n{text[-3000:]}"
    assert "consume: 4000 msgs" in text, text[-3000:]


NODE_DIR = Path(__file__).resolve().parent / "node"


def test_kafkajs_producer_across_leader_failover(cluster, tmp_path):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "kafkajs").exists():
        pytest.fail("node / kafkajs not installed: run scripts/install-test-deps.sh")
    topic = "kjs-fo"
    st = cluster.create_topic(topic, 1, 3, MIN2)
    leader = st[0].leader
    out = tmp_path / "kjs-acks.jsonl"
    stop = tmp_path / "kjs.stop"
    req = tmp_path / "kjs-req.json"
    req.write_text(json.dumps({"brokers": cluster.bootstrap.split(","), "topic": topic, "partition": 0,
                               "output": str(out), "stopFile": str(stop), "idempotent": True}))
    errf = open(tmp_path / "kjs.stderr", "wb")
    proc = subprocess.Popen(["node", str(NODE_DIR / "kafkajs_failover.js"), str(req)], cwd=NODE_DIR,
                            stdout=errf, stderr=errf,
                            env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"))

    def lines():
        if not out.exists():
            return []
        return [json.loads(x) for x in out.read_text().splitlines() if x.strip().endswith("}")]

    try:
        wait_for(lambda: len(lines()) >= 100, 30, "100 KafkaJS acks before the kill")
        cluster.kill9(leader)
        n_at_kill = len(lines())
        wait_for(lambda: len(lines()) >= n_at_kill + 100, 40, "100 KafkaJS acks after the kill")
        stop.write_text("stop")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errf.close()
    stderr_tail = (tmp_path / "kjs.stderr").read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, f"kafkajs driver exited {proc.returncode}\n{stderr_tail}"
    recs = lines()
    errors = [r for r in recs if "error" in r]
    assert not errors, f"KafkaJS send errors: {errors[:3]}\n{stderr_tail}"
    assert _wait_leaders_moved(cluster, topic, 1, leader)[0] != leader
    got = consume_all(cluster.bootstrap, topic, 1)[0]
    by_value = {v: o for o, _, v in got}
    assert len(by_value) == len(got), "duplicate records"
    for r in recs:
        v = b"v%d" % r["seq"]
        assert by_value.get(v) == r["o"], f"{v!r} acked at {r['o']}, consumed at {by_value.get(v)}"
    assert [o for o, _, _ in got] == list(range(len(got)))


# --------------------------------------------------------------------------- h. active controller paused


def test_active_controller_sigstop_quorum_moves_on(cluster):
    """SIGSTOP the active controller (its process still accepts connections,
    but answers nothing): the other voters elect a new controller, fence it,
    move its partitions, and producing with acks=all goes on."""
    topic = "stop-controller"
    st = cluster.create_topic(topic, 3, 3, MIN2)
    ctrl = cluster.controller_id()
    led = [p for p, pm in st.items() if pm.leader == ctrl]
    assert led, f"controller {ctrl} leads none of {st}"  # 3 partitions over 3 brokers
    prod = AckedProducer(cluster.bootstrap, topic, 3, rate=200)
    try:
        wait_for(lambda: prod.n_acked() >= 200, 20, "200 acks before SIGSTOP")
        cluster.sigstop(ctrl)
        t_stop = time.monotonic()
        moved = _wait_leaders_moved(cluster, topic, 3, ctrl, timeout=30)
        assert all(moved[p] != ctrl for p in led)
        other = next(nd.node_id for nd in cluster.nodes if nd.node_id != ctrl)
        new_ctrl = wait_for(
            lambda: (lambda c: c if c != ctrl else None)(cluster.node_metadata(other).controller_id),
            15, "another controller")
        wait_for(lambda: all(_acked_after_per_partition(prod, t_stop).get(p, 0) >= 50
                             for p in range(3)), 30, "acks on every partition while paused")
        cluster.sigcont(ctrl)
        cluster.wait_isr_full(topic, 3, 30)
    finally:
        left = prod.stop()
    assert left == 0
    assert not prod.failed, f"delivery errors: {list(prod.failed.items())[:5]}"
    consumed = consume_all(cluster.bootstrap, topic, 3)
    check_exactly_once(prod, consumed)
    for p in range(3):
        cluster.wait_logs_identical(topic, p, timeout=30)
    print(f"controller {ctrl} paused; new controller {new_ctrl}")


# --------------------------------------------------------------------------- i. whole cluster killed


def test_whole_cluster_sigkill_and_restart_keeps_every_acked_record(cluster):
    """Every node SIGKILLed at once, then restarted: the quorum and every
    partition come back, nothing acknowledged with acks=all is missing."""
    topic = "kill-all"
    cluster.create_topic(topic, 3, 3, MIN2)
    prod = AckedProducer(cluster.bootstrap, topic, 3, rate=300)
    try:
        wait_for(lambda: prod.n_acked() >= 600, 20, "600 acks before the kill")
    finally:
        prod._stop.set()
        prod.thread.join(10)
    for i in (1, 2, 3):
        cluster.kill9(i)
    acked = dict(prod.acked)
    prod.p = None
    assert len(acked) >= 600
    for i in (1, 2, 3):
        cluster.node(i).launch()
    for i in (1, 2, 3):
        cluster.wait_node_sees_cluster(cluster.node(i))
    cluster.wait_isr_full(topic, 3, 30)
    consumed = consume_all(cluster.bootstrap, topic, 3)
    got = {AckedProducer.seq_of(v) for recs in consumed.values() for _, _, v in recs}
    missing = set(acked) - got
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    for p in range(3):
        cluster.wait_logs_identical(topic, p, timeout=30)


# --------------------------------------------------------------------------- j. KafkaJS consumer


def test_kafkajs_group_consumer_across_leader_and_coordinator_failover(cluster, tmp_path):
    """A KafkaJS group consumer keeps consuming, without a restart, when the
    broker leading its partition (and, here, coordinating its group) dies."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "kafkajs").exists():
        pytest.fail("node / kafkajs not installed: run scripts/install-test-deps.sh")
    topic, group = "kjs-cfo", "kjs-cfo-group"
    # The group's coordinator (known before it has members) leads the topic,
    # so one kill takes both away.
    coord = wait_for(lambda: cluster.admin().describe_consumer_groups([group])[group]
                     .result(10).coordinator.id, 20, "the group's coordinator")
    others = [nd.node_id for nd in cluster.nodes if nd.node_id != coord]
    nt = NewTopic(topic, num_partitions=1, replica_assignment=[[coord] + others],
                  config={"min.insync.replicas": "2"})
    cluster.admin().create_topics([nt])[topic].result(20)
    st = cluster.wait_isr_full(topic, 1, 30)
    leader = st[0].leader
    assert leader == coord
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(200):
        p.produce(topic, value=b"v%d" % i, partition=0)
    assert p.flush(20) == 0
    out, stop, req = tmp_path / "kjs-c.jsonl", tmp_path / "kjs-c.stop", tmp_path / "kjs-c.json"
    req.write_text(json.dumps({"brokers": cluster.bootstrap.split(","), "topic": topic,
                               "groupId": group, "output": str(out), "stopFile": str(stop)}))
    errf = open(tmp_path / "kjs-c.stderr", "wb")
    proc = subprocess.Popen(["node", str(NODE_DIR / "kafkajs_failover_consumer.js"), str(req)],
                            cwd=NODE_DIR, stdout=errf, stderr=errf)

    def values():
        if not out.exists():
            return set()
        return {json.loads(x)["v"] for x in out.read_text().splitlines() if x.strip().endswith("}")}

    try:
        wait_for(lambda: len(values()) >= 200, 40, "KafkaJS consumed the first 200")
        assert cluster.admin().describe_consumer_groups([group])[group].result(10).coordinator.id == coord
        cluster.kill9(coord)
        for i in range(200, 400):
            p.produce(topic, value=b"v%d" % i, partition=0)
        assert p.flush(60) == 0
        wait_for(lambda: len(values()) >= 400, 60, "KafkaJS consumed all 400 after the failover")
        stop.write_text("stop")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errf.close()
    stderr_tail = (tmp_path / "kjs-c.stderr").read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, f"kafkajs consumer exited {proc.returncode}\n{stderr_tail}"
    assert values() == {"v%d" % i for i in range(400)}
    print(f"killed node {coord}, leader of {topic} and coordinator of {group}")
