"""The basic group flow with kafka-python (KafkaConsumer with group_id) and
KafkaJS (consumer.run / eachMessage): one member joins and consumes
everything, commits; a second member joins and the partitions split; new
records are consumed once, each by the owner of its partition, and nobody
re-reads what was committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import ck
from test_groups_helpers import committed_offsets, produce_n, stable_for, uid, wait_until

FAST = {"group.initial.rebalance.delay.ms": 0}
NODE_DIR = Path(__file__).resolve().parent / "node"


class KpyMember:
    """A kafka-python KafkaConsumer in a group, polled (and committing after
    every non-empty poll) by its own thread."""

    def __init__(self, bs, topic, group, name):
        from kafka import KafkaConsumer
        self.name = name
        self.c = KafkaConsumer(
            topic, bootstrap_servers=bs, group_id=group, client_id=name,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=20000,
            fetch_max_wait_ms=100, request_timeout_ms=30000,
        )
        self.got: list[tuple[int, int]] = []
        self.assigned: set[int] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, name=name, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                recs = self.c.poll(timeout_ms=1000)
                # The assignment first: a waiter that sees the records also
                # sees who held them.
                self.assigned = {tp.partition for tp in self.c.assignment()}
                for tp, rs in recs.items():
                    self.got.extend((tp.partition, r.offset) for r in rs)
                if recs:
                    try:
                        self.c.commit()
                    except Exception as e:  # noqa: BLE001 - rebalance during commit
                        self.errors.append(f"commit: {e!r}")
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"thread died: {e!r}")
        finally:
            self.c.close()

    def stop(self):
        self._stop.set()
        self.t.join(30)


def test_kafka_python_group_join_consume_commit_split(broker_factory):
    """Each KafkaConsumer polled by its own thread (poll(timeout_ms=1000))."""
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-kpy", "grp-kpy-" + uid()
    parts = 4
    ck.create_topic(bs, topic, parts)
    first = produce_n(bs, topic, parts, 50)
    want1 = {(p, o) for p, os_ in first.items() for o in os_}
    c1 = KpyMember(bs, topic, group, "kpy-c1")
    c2 = None
    try:
        wait_until(lambda: set(c1.got) >= want1, 45, "c1 to consume the first 200 records")
        assert len(c1.got) == len(want1), "c1 consumed records twice"
        assert c1.assigned == set(range(parts))
        wait_until(lambda: committed_offsets(bs, group, topic, parts) == {p: 50 for p in range(parts)},
                   15, "c1's commits of offset 50 on every partition")

        c2 = KpyMember(bs, topic, group, "kpy-c2")

        def split():
            a, bb = c1.assigned, c2.assigned
            return bool(a and bb and not (a & bb) and (a | bb) == set(range(parts)))

        stable_for(split, 1.5, 45, "c1 and c2 to split the four partitions")
        pa, pb = set(c1.assigned), set(c2.assigned)
        assert len(pa) == len(pb) == 2, (pa, pb)
        n1 = len(c1.got)
        assert not c2.got, f"c2 re-consumed committed records: {c2.got[:5]}"

        second = produce_n(bs, topic, parts, 25, b"second-")
        want2 = {(p, o) for p, os_ in second.items() for o in os_}
        wait_until(lambda: set(c1.got[n1:]) | set(c2.got) >= want2, 45,
                   "c1 + c2 to consume the 100 new records")
        time.sleep(0.5)
        got_a, got_b = c1.got[n1:], c2.got
        assert set(got_a) | set(got_b) == want2, "old records re-read after the split"
        assert len(got_a) + len(got_b) == len(want2), "phase-2 records consumed twice"
        assert {p for p, _ in got_a} <= pa and {p for p, _ in got_b} <= pb
        wait_until(lambda: committed_offsets(bs, group, topic, parts) == {p: 75 for p in range(parts)},
                   15, "commits of offset 75 on every partition")
    finally:
        c1.stop()
        if c2 is not None:
            c2.stop()
    assert not c1.errors and not (c2 and c2.errors), (c1.errors, c2 and c2.errors)


def test_kafka_python_two_consumers_polled_by_one_thread_converge(broker_factory):
    """Two KafkaConsumers in one group polled alternately from one thread with
    short timeouts (legal kafka-python usage). When a poll times out during a
    rebalance kafka-python 3.0.12 sends JoinGroup again with the same member id
    and metadata after it already synced. Kafka answers a follower's identical
    rejoin of a Stable group with the current generation (no rebalance); a
    broker that rebalances instead never lets the pair settle."""
    from kafka import KafkaConsumer

    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-kpy1t", "grp-kpy1t-" + uid()
    parts = 4
    ck.create_topic(bs, topic, parts)

    def consumer(name):
        return KafkaConsumer(
            topic, bootstrap_servers=bs, group_id=group, client_id=name,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=20000,
            fetch_max_wait_ms=100,
        )

    c1 = consumer("kpy1t-c1")
    c2 = None
    try:
        deadline = time.monotonic() + 20
        while not c1.assignment() and time.monotonic() < deadline:
            c1.poll(timeout_ms=100)
        assert {tp.partition for tp in c1.assignment()} == set(range(parts))
        c2 = consumer("kpy1t-c2")
        gens = set()
        ok_since = None
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            c1.poll(timeout_ms=100)
            c2.poll(timeout_ms=100)
            gens.add(c1._coordinator._generation.generation_id)
            a = {tp.partition for tp in c1.assignment()}
            bb = {tp.partition for tp in c2.assignment()}
            if a and bb and not (a & bb) and (a | bb) == set(range(parts)):
                ok_since = ok_since or time.monotonic()
                if time.monotonic() - ok_since > 3.0:
                    break
            else:
                ok_since = None
        seen = sorted(g for g in gens if g is not None and g > 0)
        assert ok_since and time.monotonic() - ok_since > 3.0, (
            f"the two consumers never held a stable split for 3 s within 45 s; c1 went through "
            f"generations {seen} (each identical rejoin of the follower started a new rebalance)")
        # Joining takes 2-3 generations; a slow poll loop may cost one or
        # two more. A rebalance per identical rejoin would never settle.
        assert max(seen) <= 6, (
            f"one member joining took the group through generations {seen}: each identical "
            "JoinGroup from the already-synced follower started a new rebalance")
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


def test_kafkajs_group_join_consume_commit_split(broker_factory, tmp_path):
    if shutil.which("node") is None:
        pytest.fail("node not found (scripts/install-test-deps.sh installs the test dependencies)")
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-kjs", "grp-kjs-" + uid()
    parts = 4
    ck.create_topic(bs, topic, parts)
    first = produce_n(bs, topic, parts, 50)
    req = {
        "brokers": [bs], "topic": topic, "group": group, "partitions": parts,
        "phase1": {str(p): len(v) for p, v in first.items()},
        "phase2PerPartition": 25, "timeoutMs": 90000,
        "output": str(tmp_path / "kjs-groups-out.json"),
    }
    rp = tmp_path / "kjs-groups-req.json"
    rp.write_text(json.dumps(req))
    r = subprocess.run(["node", str(NODE_DIR / "groups_kafkajs.js"), str(rp)], cwd=NODE_DIR,
                       capture_output=True, timeout=150,
                       env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"))
    assert r.returncode == 0, (
        f"groups_kafkajs.js exited {r.returncode}\n--- stderr ---\n"
        f"{r.stderr.decode(errors='replace')[-6000:]}")
    out = json.loads(Path(req["output"]).read_text())
    assert not out["crashes"], out["crashes"]

    want1 = {(p, o) for p, os_ in first.items() for o in os_}
    got1 = [tuple(x) for x in out["phase1Consumed"]["c1"]]
    assert set(got1) == want1 and len(got1) == len(want1), "phase 1: c1 did not consume exactly once"
    assert out["committed1"] == {str(p): 50 for p in range(parts)}

    joins = out["joinsAtSplit"]
    a = set(joins["c1"][-1]["assignment"][topic])
    bb = set(joins["c2"][-1]["assignment"][topic])
    assert a and bb and not (a & bb) and (a | bb) == set(range(parts)), (a, bb)
    assert len(joins["c1"]) >= 2, "c1 never rejoined when c2 joined"
    assert set(joins["c1"][0]["assignment"][topic]) == set(range(parts))
    later = {n: out["joinsAfterPhase2"][n][len(joins[n]):] for n in ("c1", "c2")}
    assert not later["c1"] and not later["c2"], f"the stable group rebalanced during phase 2: {later}"

    want2 = {tuple(x) for x in out["produced2"]}
    assert all(o >= 50 for _, o in want2)
    c1 = [tuple(x) for x in out["consumed2"]["c1"]]
    c2 = [tuple(x) for x in out["consumed2"]["c2"]]
    old = [x for x in c1 + c2 if x[1] < 50]
    assert not old, f"phase-1 records re-consumed after the split: {old[:5]}"
    assert set(c1) | set(c2) == want2
    assert len(c1) + len(c2) == len(want2), "phase-2 records consumed twice"
    assert {p for p, _ in c1} <= a and {p for p, _ in c2} <= bb
    assert out["describe"][0]["state"] == "Stable" and out["describe"][0]["members"] == 2, out["describe"]
    assert out["committed2"] == {str(p): 75 for p in range(parts)}, out["committed2"]


def test_kcat_balanced_consumer_commits_and_cli_describe_shows_lag(broker_factory, tmp_path):
    """`kcat -G` consumes a topic as a group member and commits on exit;
    `corelog groups describe` then shows CURRENT-OFFSET, LOG-END-OFFSET and LAG
    per partition (LAG growing with new records), the live member while a
    second kcat runs (resuming from the committed offsets), and `corelog
    groups list` shows the group."""
    import signal

    from test_groups_helpers import corelog_cli, parse_describe

    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat not found: run scripts/install-test-deps.sh")
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-kcat", "grp-kcat-" + uid()
    ck.create_topic(bs, topic, 3)
    produce_n(bs, topic, 3, 40)
    base = [kcat, "-b", bs, "-G", group, "-X", "auto.offset.reset=earliest",
            "-X", "session.timeout.ms=6000", "-q", "-u", "-f", "%p %o\\n", topic]
    r = subprocess.run(base[:5] + ["-e"] + base[5:], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    got = [tuple(map(int, l.split())) for l in r.stdout.decode().splitlines() if l.strip()]
    assert sorted(got) == [(p, o) for p in range(3) for o in range(40)], \
        f"kcat -G consumed {len(got)} records ({len(set(got))} distinct), want 120"

    rows = parse_describe(corelog_cli(bs, "describe", group))
    assert {k: (v["current"], v["end"], v["lag"]) for k, v in rows.items()} == \
        {(topic, p): (40, 40, 0) for p in range(3)}, rows
    produce_n(bs, topic, 3, 5)
    out = corelog_cli(bs, "describe", group)
    assert out.split()[3] == "Empty", out
    rows = parse_describe(out)
    assert {k: (v["current"], v["end"], v["lag"]) for k, v in rows.items()} == \
        {(topic, p): (40, 45, 5) for p in range(3)}, out
    lst = corelog_cli(bs, "list")
    assert any(l.split()[:3] == [group, "Empty", "consumer"] for l in lst.splitlines()), lst

    # a long-running kcat member: resumes at 40 and shows up in describe
    outf = tmp_path / "kcat-live.txt"
    with open(outf, "wb") as f:
        p = subprocess.Popen(base, stdout=f, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(outf.read_text().splitlines()) >= 15, 30, "live kcat consumed 15 new records")

        def live_rows():
            out = corelog_cli(bs, "describe", group)
            rows = parse_describe(out)
            ok = (out.split()[3] == "Stable" and len(rows) == 3
                  and all(v["consumer"] != "-" for v in rows.values()))
            return rows if ok else None

        rows = wait_until(live_rows, 15, "describe to show the live kcat member on every partition")
        assert len({v["consumer"] for v in rows.values()}) == 1
        live = [tuple(map(int, l.split())) for l in outf.read_text().splitlines() if l.strip()]
        assert sorted(live) == [(p, o) for p in range(3) for o in range(40, 45)], (
            f"second kcat did not resume from the committed offsets: {sorted(live)[:6]}...")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    rows = wait_until(
        lambda: (r := parse_describe(corelog_cli(bs, "describe", group)))
        and all(v["current"] == 45 for v in r.values()) and r, 15,
        "kcat's commit of offset 45 on exit")
    assert {k: (v["current"], v["end"], v["lag"]) for k, v in rows.items()} == \
        {(topic, p): (45, 45, 0) for p in range(3)}, rows
