"""Consumer groups with confluent-kafka (librdkafka 2.16) against the real
corelog binary: rebalancing on join / leave / crash with continuous
production and no lost records, resumption from committed offsets across
clean and kill -9 broker restarts, publish-subscribe across groups, idle
members, cooperative-sticky and static membership."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import ck
from test_groups_helpers import (
    ContinuousProducer, Member, committed_offsets, describe_group, produce_n, stable_for, uid, wait_until,
)

HELPERS = Path(__file__).resolve().parent / "test_groups_helpers.py"
FAST = {"group.initial.rebalance.delay.ms": 0}


class FileMember:
    """The killable member: test_groups_helpers.py run as a subprocess."""

    def __init__(self, bootstrap, group, topic, path: Path):
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS), "member", bootstrap, group, topic, str(path)],
            stdout=subprocess.DEVNULL, stderr=open(str(path) + ".stderr", "wb"),
        )

    def lines(self):
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def partitions(self) -> set[int]:
        cur: set[int] = set()
        for line in self.lines():
            if line.startswith("A "):
                cur = {int(x) for x in line[2:].split(",") if x}  # eager: full assignment
            elif line.startswith("R "):
                cur = set()
        return cur

    def consumed(self) -> list[tuple[int, int]]:
        out = []
        for line in self.lines():
            if line.startswith("M "):
                _, p, o = line.split()
                out.append((int(p), int(o)))
        return out

    def last_commits(self) -> dict[int, int]:
        out = {}
        for line in self.lines():
            if line.startswith("K "):
                _, p, o = line.split()
                out[int(p)] = max(out.get(int(p), 0), int(o))
        return out

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_rebalance_on_join_leave_and_crash_loses_nothing(broker, tmp_path):
    """Default group.initial.rebalance.delay.ms (3000). Three members on six
    partitions get two each; one leaves cleanly and the other two take its
    partitions; one is SIGKILLed and the survivor takes everything after the
    session timeout. Records are produced throughout; the union of what the
    members consumed must cover every delivered record, and the only records
    delivered twice may be the killed member's uncommitted tail."""
    b = broker.bootstrap
    topic, group = "grp-rebal", "grp-rebal-" + uid()
    ck.create_topic(b, topic, 6)
    prod = ContinuousProducer(b, topic, 6, rate=300)
    members = {}
    fm = None
    try:
        members["a"] = Member(b, group, [topic], "a")
        members["b"] = Member(b, group, [topic], "b")
        fm = FileMember(b, group, topic, tmp_path / "member-c.txt")
        a, bm = members["a"], members["b"]

        def split3():
            pa, pb, pc = a.partitions(), bm.partitions(), fm.partitions()
            return (len(pa) == len(pb) == len(pc) == 2 and (pa | pb | pc) == set(range(6)))

        t0 = time.monotonic()
        stable_for(split3, 1.0, 45, "three members with two partitions each")
        t_form = time.monotonic() - t0

        # --- clean leave: b closes (commit in on_revoke + LeaveGroup)
        t0 = time.monotonic()
        bm.stop()
        assert bm.partitions() == set(), f"b still holds {bm.partitions()} after close"

        def split2():
            pa, pc = a.partitions(), fm.partitions()
            return len(pa) == len(pc) == 3 and (pa | pc) == set(range(6))

        stable_for(split2, 1.0, 30, "a and c to take over b's partitions (3 each)")
        t_leave = time.monotonic() - t0

        # --- crash: c is SIGKILLed, no LeaveGroup; the session (6 s) must expire
        time.sleep(1.0)
        c_before = fm.partitions()
        fm.kill9()
        t_kill = time.monotonic()
        wait_until(lambda: a.partitions() == set(range(6)), 30,
                   "a to get all six partitions after c's session expired")
        t_recover = time.monotonic() - t_kill
        assert t_recover >= 4.0, (
            f"a got c's partitions {t_recover:.1f}s after the kill: before the 6 s session "
            "timeout could expire (who told the coordinator?)")

        time.sleep(2.0)
        delivered = prod.stop()
        prod = None
        consumed_c = fm.consumed()
        want = delivered

        def union():
            return set(a.consumed) | set(bm.consumed) | set(consumed_c)

        wait_until(lambda: union() >= want, 60,
                   f"every delivered record consumed (have {len(union())}/{len(want)})")
        missing = sorted(want - union())
        assert not missing, f"{len(missing)} delivered records never consumed, e.g. {missing[:10]}"

        # at-least-once, and nothing more: a and b consumed nothing twice; a
        # record consumed twice must be on one of c's partitions at or after
        # c's last logged commit there.
        for m in (a, bm):
            dup = [k for k, n in Counter(m.consumed).items() if n > 1]
            assert not dup, f"member {m.name} consumed {len(dup)} records twice, e.g. {dup[:5]}"
        commits_c = fm.last_commits()
        ab = Counter(a.consumed) + Counter(bm.consumed)
        overlap_ab = [k for k, n in ab.items() if n > 1]
        assert not overlap_ab, f"a and b both consumed {overlap_ab[:5]} (clean leave redelivered)"
        redelivered = sorted(set(consumed_c) & set(ab))
        bad = [(p, o) for p, o in redelivered
               if p not in c_before or o < commits_c.get(p, 0)]
        assert not bad, (
            f"{len(bad)} records redelivered that c had committed past (or not on c's partitions "
            f"{sorted(c_before)}): {bad[:10]}; c's last commits {commits_c}")
        assert len(redelivered) < 2000, f"{len(redelivered)} redeliveries after c's crash"
        assert not a.errors and not bm.errors, (a.errors, bm.errors)
        print(f"form {t_form:.1f}s leave {t_leave:.1f}s crash-recovery {t_recover:.1f}s "
              f"records {len(want)} redelivered {len(redelivered)}")
    finally:
        if prod is not None:
            prod._stop.set()
        if fm is not None:
            fm.stop()
        for m in members.values():
            if m.thread.is_alive():
                m.stop()


@pytest.mark.parametrize("action", ["restart", "kill9"])
def test_group_resumes_from_committed_offsets_after_broker_restart(broker_factory, action):
    """Two live members across a broker restart keep consuming only new
    records; after they close, a fresh member (auto.offset.reset=earliest)
    starts exactly at the committed offsets, also after a second restart."""
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = f"grp-resume-{action}", f"grp-resume-{action}-" + uid()
    ck.create_topic(bs, topic, 3)
    first = produce_n(bs, topic, 3, 100, b"first-")
    m1 = Member(bs, group, [topic], "m1")
    m2 = Member(bs, group, [topic], "m2")
    try:
        want1 = {(p, o) for p, os_ in first.items() for o in os_}
        wait_until(lambda: set(m1.consumed) | set(m2.consumed) >= want1, 30, "first 300 consumed")
        wait_until(lambda: committed_offsets(bs, group, topic, 3) == {0: 100, 1: 100, 2: 100},
                   15, "offsets 100/100/100 committed")
        n_before = (len(m1.consumed), len(m2.consumed))

        b.act(action)

        second = produce_n(bs, topic, 3, 50, b"second-")
        want2 = {(p, o) for p, os_ in second.items() for o in os_}
        wait_until(lambda: set(m1.consumed) | set(m2.consumed) >= want2, 45,
                   f"live members to consume the 150 records produced after the {action}")
        after = m1.consumed[n_before[0]:] + m2.consumed[n_before[1]:]
        old = [r for r in after if r[1] < 100]
        assert not old, (f"after the {action} live members re-consumed {len(old)} records below "
                         f"the committed offset 100, e.g. {old[:5]}")
        m1.stop()
        m2.stop()
        assert committed_offsets(bs, group, topic, 3) == {0: 150, 1: 150, 2: 150}

        third = produce_n(bs, topic, 3, 30, b"third-")
        b.act(action)
        wait_until(lambda: committed_offsets(bs, group, topic, 3) == {0: 150, 1: 150, 2: 150}, 15,
                   f"the committed offsets 150 after the second {action}")

        m3 = Member(bs, group, [topic], "m3")
        want3 = {(p, o) for p, os_ in third.items() for o in os_}
        wait_until(lambda: set(m3.consumed) >= want3, 30, "fresh member consumes the last 90")
        time.sleep(0.5)
        m3.stop()
        firsts = {p: min(o for q, o in m3.consumed if q == p) for p in range(3)}
        assert firsts == {0: 150, 1: 150, 2: 150}, (
            f"fresh member started at {firsts}, not at the committed offsets 150 "
            "(0 would mean the commits were lost and auto.offset.reset=earliest applied)")
        assert sorted(m3.consumed) == sorted(want3), "fresh member consumed more than the new records"
    finally:
        for m in (m1, m2):
            if m.thread.is_alive():
                m.stop()


def test_two_groups_each_get_every_record_and_extra_members_idle(broker_factory):
    """Publish-subscribe: two groups on one 3-partition topic each consume
    every record; the group with 5 members leaves 2 of them without
    partitions."""
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic = "grp-pubsub"
    g1, g2 = "pubsub-a-" + uid(), "pubsub-b-" + uid()
    ck.create_topic(bs, topic, 3)
    ms1 = [Member(bs, g1, [topic], f"g1-{i}") for i in range(2)]
    ms2 = [Member(bs, g2, [topic], f"g2-{i}") for i in range(5)]
    try:
        def ok():
            # Every member must have been through an assignment (an idle
            # member's is empty): a member that has not joined yet also
            # holds no partitions.
            if not all(any(e[1] == "assign" for e in m.snapshot_events()) for m in ms1 + ms2):
                return False
            p1 = [m.partitions() for m in ms1]
            p2 = [m.partitions() for m in ms2]
            return (set().union(*p1) == {0, 1, 2} and sum(map(len, p1)) == 3
                    and sorted(map(len, p2)) == [0, 0, 1, 1, 1] and set().union(*p2) == {0, 1, 2})

        stable_for(ok, 1.5, 60, "g1 2 members over 3 partitions, g2 3 busy + 2 idle members")

        d = describe_group(bs, g2)
        assert len(d.members) == 5, f"describe {g2}: {len(d.members)} members"
        sizes = sorted(len(m.assignment.topic_partitions) for m in d.members)
        assert sizes == [0, 0, 1, 1, 1], f"describe {g2} assignments: {sizes}"
        assert str(d.state).endswith("STABLE"), d.state

        produced = produce_n(bs, topic, 3, 200)
        want = {(p, o) for p, os_ in produced.items() for o in os_}
        for ms, g in ((ms1, g1), (ms2, g2)):
            wait_until(lambda: set().union(*(set(m.consumed) for m in ms)) >= want, 30,
                       f"group {g} to consume all {len(want)} records")
        time.sleep(0.5)
        for ms, g in ((ms1, g1), (ms2, g2)):
            allc = [r for m in ms for r in m.consumed]
            assert sorted(allc) == sorted(want), (
                f"group {g}: consumed {len(allc)} records ({len(set(allc))} distinct), want {len(want)}")
        idle = [m for m in ms2 if not m.partitions()]
        assert len(idle) == 2 and all(not m.consumed for m in idle), "idle members consumed records"
    finally:
        for m in ms1 + ms2:
            m.stop()


def test_cooperative_sticky_incremental_rebalance(broker_factory):
    """partition.assignment.strategy=cooperative-sticky: a third member joining
    makes the first two give up only one partition each (incremental revoke,
    never their whole assignment), and when it leaves they only gain
    partitions; no partition is ever owned twice or lost, and every record is
    consumed."""
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-coop", "grp-coop-" + uid()
    ck.create_topic(bs, topic, 6)
    extra = {"partition.assignment.strategy": "cooperative-sticky"}
    prod = ContinuousProducer(bs, topic, 6, rate=300)
    m1 = Member(bs, group, [topic], "m1", extra)
    m2 = Member(bs, group, [topic], "m2", extra)
    m3 = None
    try:
        def split(ms, n):
            ps = [m.partitions() for m in ms]
            return all(len(p) == n for p in ps) and set().union(*ps) == set(range(6))

        stable_for(lambda: split([m1, m2], 3), 1.0, 30, "two cooperative members with 3 each")
        owned_before = {m.name: m.partitions() for m in (m1, m2)}
        n_ev = {m.name: len(m.snapshot_events()) for m in (m1, m2)}

        m3 = Member(bs, group, [topic], "m3", extra)
        stable_for(lambda: split([m1, m2, m3], 2), 1.5, 30, "three cooperative members with 2 each")
        for m in (m1, m2):
            ev = m.snapshot_events()[n_ev[m.name]:]
            kinds = [k for _, k, _ in ev]
            revoked = set().union(*[ps for _, k, ps in ev if k == "revoke"]) if ev else set()
            assert "lost" not in kinds, f"{m.name} lost partitions: {ev}"
            assert revoked, f"{m.name} revoked nothing when m3 joined: {ev}"
            kept = owned_before[m.name] - {p for _, p in revoked}
            assert len(kept) == 2 and kept <= m.partitions(), (
                f"{m.name}: incremental rebalance should revoke exactly one of "
                f"{sorted(owned_before[m.name])}, events {ev}")
            assert all(len(ps) < 3 for _, k, ps in ev if k == "revoke"), \
                f"{m.name} revoked its whole assignment (eager, not cooperative): {ev}"
        assert len(m3.snapshot_events()) >= 1 and m3.snapshot_events()[0][1] == "assign"

        n_ev = {m.name: len(m.snapshot_events()) for m in (m1, m2)}
        held = {m.name: m.partitions() for m in (m1, m2)}
        m3.stop()
        stable_for(lambda: split([m1, m2], 3), 1.0, 30, "m1, m2 back to 3 each after m3 left")
        for m in (m1, m2):
            ev = m.snapshot_events()[n_ev[m.name]:]
            assert all(k == "assign" for _, k, _ in ev), (
                f"{m.name} revoked or lost partitions when m3 left (cooperative should only add): {ev}")
            assert held[m.name] <= m.partitions()

        time.sleep(1.0)
        delivered = prod.stop()
        prod = None
        ms = (m1, m2, m3)
        wait_until(lambda: set().union(*(set(m.consumed) for m in ms)) >= delivered, 30,
                   "every produced record consumed")
        for m in ms:
            assert not m.errors, (m.name, m.errors)
    finally:
        if prod is not None:
            prod._stop.set()
        for m in (m1, m2, m3):
            if m is not None and m.thread.is_alive():
                m.stop()


@pytest.mark.parametrize("restarted", ["follower", "leader"])
def test_static_member_restart_keeps_partitions_without_rebalance(broker_factory, restarted):
    """group.instance.id: a static member that restarts within its session
    timeout gets its old partitions back and the other member sees no
    rebalance (no on_assign/on_revoke). s1 joins first and so is the
    group leader; the test restarts either the follower (s2) or the leader."""
    b = broker_factory(settings=FAST)
    bs = b.bootstrap
    topic, group = "grp-static", "grp-static-" + uid()
    ck.create_topic(bs, topic, 4)

    def static(name):
        return Member(bs, group, [topic], name,
                      {"group.instance.id": name, "session.timeout.ms": 15000})

    s1 = static("s1")
    wait_until(lambda: s1.partitions() == {0, 1, 2, 3}, 30, "s1 alone with all partitions")
    s2 = static("s2")
    members = {"s1": s1, "s2": s2}
    try:
        stable_for(lambda: len(s1.partitions()) == 2 and len(s2.partitions()) == 2, 1.0, 30,
                   "s1 and s2 with two partitions each")
        name = "s2" if restarted == "follower" else "s1"
        other_name = "s1" if name == "s2" else "s2"
        victim, other = members[name], members[other_name]
        before = victim.partitions()
        n_other = len(other.snapshot_events())

        victim.stop()  # static members do not send LeaveGroup
        d = describe_group(bs, group)
        assert len(d.members) == 2, (
            f"after {name} closed the group has {len(d.members)} members: a static member's "
            "close must not remove it")
        back = static(name)
        members[name] = back
        wait_until(lambda: back.partitions(), 20, f"restarted {name} to get an assignment")
        assert back.partitions() == before, (
            f"restarted static member {name} got {sorted(back.partitions())}, had {sorted(before)}")
        time.sleep(3.0)  # several heartbeat intervals of the other member
        ev = other.snapshot_events()[n_other:]
        assert not ev, (f"{other_name} saw a rebalance when static member {name} "
                        f"({restarted}) restarted: {ev}")
        assert back.partitions() == before
        produced = produce_n(bs, topic, 4, 20)
        want = {(p, o) for p, os_ in produced.items() for o in os_}
        wait_until(lambda: set(back.consumed) | set(other.consumed) >= want, 20,
                   "both static members consume new records")
    finally:
        for m in members.values():
            if m.thread.is_alive():
                m.stop()
