#!/usr/bin/env python3
"""Consumer-group benchmark for corelog (not a test).

(a) Rebalance latency, seen by confluent-kafka (librdkafka) consumers on a
    6-partition topic, each measured 5 times (median reported), against a
    freshly started release broker per group.initial.rebalance.delay.ms value
    (3000 = default, and 0):
      form  - 3 consumers subscribe at once to a new group: time until all
              three hold 2 partitions each;
      join  - a 3rd consumer joins a stable 2-member group: time from its
              subscribe() until all three hold 2 partitions each;
      leave - one of 3 closes (LeaveGroup): time from close() until the two
              others hold 3 partitions each.
    Each with librdkafka's default heartbeat.interval.ms (3000) and with 500,
    since existing members only learn of a rebalance from a heartbeat.

(b) Commit throughput from one group member (generation-checked commits,
    durable: __consumer_offsets is fsynced before the answer):
      librdkafka sync    - Consumer.commit(asynchronous=False), 1 partition
      librdkafka sync x6 - same, all 6 partitions per commit
      librdkafka async   - Consumer.commit(asynchronous=True), completions
                           counted in on_commit
      raw sync           - hand-written OffsetCommit v7, one at a time
      raw pipelined      - same, 64 requests in flight on one connection

Usage:
    cargo build --release
    .venv/bin/python tuning/bench_groups.py [--out tuning/results/2026-11-22-groups.md]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "clients"))

from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402

import ck  # noqa: E402
from corelog_compat import Broker, corelog_bin  # noqa: E402
from test_groups_helpers import Member, Raw, uid  # noqa: E402

RUNS = 5
PARTS = 6
TOPIC = "bench-groups"


def conf(hb: int) -> dict:
    # librdkafka defaults otherwise (session.timeout.ms 45000, max.poll.interval.ms 300000)
    return {"heartbeat.interval.ms": hb, "session.timeout.ms": 45000,
            "max.poll.interval.ms": 300000}


def wait_split(members, each, timeout=120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        ps = [m.partitions() for m in members]
        if all(len(p) == each for p in ps) and set().union(*ps) == set(range(PARTS)):
            return time.monotonic()
        time.sleep(0.002)
    raise AssertionError(f"no split {each} within {timeout}s: {[m.partitions() for m in members]}")


def rebalance_runs(bs: str, hb: int) -> dict[str, list[float]]:
    out = {"form": [], "join": [], "leave": []}
    for run in range(RUNS):
        group = f"bench-{hb}-{run}-{uid()}"
        ms = []
        try:
            # form: three at once
            t0 = time.monotonic()
            ms = [Member(bs, group, [TOPIC], f"m{i}", conf(hb), commit=False) for i in range(3)]
            out["form"].append(wait_split(ms, 2) - t0)
            # leave: m2 closes
            time.sleep(1.0)
            t0 = time.monotonic()
            ms[2].stop()
            out["leave"].append(wait_split(ms[:2], 3) - t0)
            # join: a new third member
            time.sleep(1.0)
            t0 = time.monotonic()
            ms[2] = Member(bs, group, [TOPIC], "m3", conf(hb), commit=False)
            out["join"].append(wait_split(ms, 2) - t0)
        finally:
            for m in ms:
                if m.thread.is_alive():
                    m.stop()
        print(f"  hb={hb} run {run}: form {out['form'][-1]:.3f}s leave {out['leave'][-1]:.3f}s "
              f"join {out['join'][-1]:.3f}s", flush=True)
    return out


def commit_bench(bs: str, seconds: float = 5.0) -> dict[str, float]:
    res: dict[str, float] = {}
    group = "bench-commit-" + uid()
    done = {"n": 0, "err": 0}

    def on_commit(err, parts):
        if err is not None or any(p.error for p in parts):
            done["err"] += 1
        else:
            done["n"] += 1

    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                  "on_commit": on_commit, "session.timeout.ms": 45000})
    assigned = []
    c.subscribe([TOPIC], on_assign=lambda cc, ps: assigned.extend(ps))
    deadline = time.monotonic() + 60
    while len(assigned) < PARTS and time.monotonic() < deadline:
        c.poll(0.1)
    assert len(assigned) == PARTS, assigned

    def timed(label, fn):
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            fn(n)
            n += 1
        res[label] = n / (time.monotonic() - t0)
        print(f"  {label}: {res[label]:.0f} commits/s ({n} in {seconds}s)", flush=True)

    timed("librdkafka sync, 1 partition",
          lambda i: c.commit(offsets=[TopicPartition(TOPIC, 0, i + 1)], asynchronous=False))
    timed("librdkafka sync, 6 partitions",
          lambda i: c.commit(offsets=[TopicPartition(TOPIC, p, i + 1) for p in range(PARTS)],
                             asynchronous=False))

    # async: issue as fast as librdkafka accepts, count completions
    done["n"] = done["err"] = 0
    issued, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            c.commit(offsets=[TopicPartition(TOPIC, 1, issued + 1)], asynchronous=True)
            issued += 1
        except KafkaException:
            pass
        c.poll(0)
    while done["n"] + done["err"] < issued and time.monotonic() - t0 < seconds + 60:
        c.poll(0.05)
    el = time.monotonic() - t0
    res["librdkafka async, 1 partition"] = done["n"] / el
    print(f"  async: {done['n']} ok, {done['err']} errors of {issued} issued in {el:.2f}s "
          f"-> {done['n'] / el:.0f} commits/s", flush=True)
    res["_async_errors"] = done["err"]
    c.close()

    # raw: an own member of a fresh group (generation-checked commits)
    raw = Raw(bs, timeout=30)
    g = "bench-raw-" + uid()
    j = raw.join_and_sync(g, [TOPIC], {TOPIC: list(range(PARTS))})
    gen, mid = j["generation"], j["member_id"]
    # OffsetCommit v7 body for one partition
    import struct
    from test_groups_helpers import _arr, _ns, _s

    def body(off):
        return (_s(g) + struct.pack(">i", gen) + _s(mid) + _ns(None)
                + _arr([_s(TOPIC) + _arr([struct.pack(">iqi", 0, off, -1) + _ns(None)])]))

    def one(i):
        r = raw.call(8, 7, body(i + 1))
        r.i32()
        r.i32()
        r.s()
        r.i32()
        r.i32()
        assert r.i16() == 0

    timed("raw OffsetCommit v7, sync", one)
    window, n, inflight = 64, 0, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds or inflight:
        while len(inflight) < window and time.monotonic() - t0 < seconds:
            inflight.append(raw.send(8, 7, body(n + 1)))
            n += 1
        r = raw.recv(inflight.pop(0))
        r.i32(); r.i32(); r.s(); r.i32(); r.i32()
        assert r.i16() == 0
    el = time.monotonic() - t0
    res["raw OffsetCommit v7, 64 in flight"] = n / el
    print(f"  raw pipelined: {n / el:.0f} commits/s", flush=True)
    raw.close()
    return res


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def main():
    global RUNS
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "tuning" / "results" / "2026-11-22-groups.md"))
    ap.add_argument("--runs", type=int, default=RUNS, help="runs per measurement (median)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each commit test")
    args = ap.parse_args()
    RUNS = args.runs
    cmd = " ".join([os.path.relpath(sys.executable, REPO)]
                   + [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    binp = corelog_bin()
    # run a private copy: a rebuild of target/release during the run must not
    # swap the binary between the two brokers
    snap_dir = tempfile.mkdtemp(prefix="corelog-bench-bin-")
    snap = Path(snap_dir) / "corelog"
    shutil.copy2(binp, snap)
    os.environ["CORELOG_BIN"] = str(snap)
    sha = hashlib.sha256(snap.read_bytes()).hexdigest()[:16]
    loads = {"start": sh("cat /proc/loadavg")}
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": sh("nproc"),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": sh("grep MemTotal /proc/meminfo"),
        "tmp fs": sh(f"df -T {tempfile.gettempdir()} | tail -1"),
        "git": sh(f"git -C {REPO} rev-parse --short HEAD") + (
            " (dirty working tree)" if sh(f"git -C {REPO} status --porcelain -- src") else ""),
        "binary": f"{binp} (run from a private copy) sha256:{sha} mtime {time.ctime(binp.stat().st_mtime)}",
        "librdkafka": __import__("confluent_kafka").libversion()[0],
    }
    results = {}
    commit = None
    for delay in (3000, 0):
        with tempfile.TemporaryDirectory(prefix="corelog-bench-groups-") as d:
            b = Broker(Path(d), settings={"group.initial.rebalance.delay.ms": delay}, cores=2)
            b.start()
            try:
                ck.create_topic(b.bootstrap, TOPIC, PARTS)
                for hb in (3000, 500):
                    print(f"delay={delay} heartbeat.interval.ms={hb}", flush=True)
                    results[(delay, hb)] = rebalance_runs(b.bootstrap, hb)
                    loads[f"after delay={delay} hb={hb}"] = sh("cat /proc/loadavg")
                if delay == 3000:
                    print("commit throughput", flush=True)
                    commit = commit_bench(b.bootstrap, args.seconds)
                    loads["after commit throughput"] = sh("cat /proc/loadavg")
            finally:
                rc = b.stop()
                assert rc == 0, f"broker exited {rc}"

    med = statistics.median
    lines = [
        "# Consumer-group benchmark, 2026-11-22",
        "",
        "Command (from the repo root, after `cargo build --release`):",
        "",
        f"    {cmd}",
        "",
        "Machine and build:",
        "",
    ] + [f"- {k}: {v}" for k, v in facts.items()] + [
        "- /proc/loadavg during the run (other work on the machine competes for the 2 cores): "
        + "; ".join(f"{k}: {v}" for k, v in loads.items()),
        "",
        "Broker: `corelog serve --cores 2` on 127.0.0.1, fresh temp data dir per "
        "group.initial.rebalance.delay.ms value; clients in the same machine "
        "(confluent-kafka 2.16.1 consumers polled by one thread each).",
        "",
        f"## (a) Rebalance latency (seconds, median of {RUNS}; raw runs in brackets)",
        "",
        "form = 3 consumers subscribe at once to a new group, until all hold 2 of 6 "
        "partitions; join = a 3rd consumer joins a stable 2-member group, from its "
        "subscribe() until all three hold 2; leave = one of 3 calls close(), until the "
        "other two hold 3 each.",
        "",
        "| initial delay ms | heartbeat.interval.ms | form | join | leave |",
        "|---:|---:|---:|---:|---:|",
    ]
    for (delay, hb), r in results.items():
        cells = [f"{med(r[k]):.3f} [{', '.join(f'{x:.3f}' for x in r[k])}]"
                 for k in ("form", "join", "leave")]
        lines.append(f"| {delay} | {hb} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## (b) Commit throughput (one member, {args.seconds:g} s each, delay 3000 broker)",
        "",
        "| mode | commits/s |",
        "|---|---:|",
    ]
    for k, v in (commit or {}).items():
        if not k.startswith("_"):
            lines.append(f"| {k} | {v:.0f} |")
    lines += ["", f"async commit errors: {(commit or {}).get('_async_errors')}", ""]
    shutil.rmtree(snap_dir, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
