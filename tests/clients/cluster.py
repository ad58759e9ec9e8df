"""A 3-node corelog cluster for the real-client fault tests (no tests in here).

- `Node`: one `corelog serve --node-id N ... --controller-voters ...` process, a
  `Broker` (corelog_compat.py) with the cluster flags added; can be started
  without waiting (a lone node cannot serve before the quorum forms),
  SIGKILLed, SIGSTOPped / SIGCONTed and restarted on the same ports and dir.
- `Cluster`: the nodes, their shared voter list and settings; metadata via
  confluent-kafka's AdminClient (`metadata()`, `leader_of()`, `isr_of()`) and
  via a raw Metadata v1 request to one node (`node_metadata(i)`), topic
  creation, waiting helpers, and the per-replica on-disk log comparison.

Every node is broker+controller. Timeouts are shortened for tests (see
`FAST_SETTINGS`); each node runs with --cores 1.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from corelog_compat import Broker, ProbeError, _recv_exact, _roundtrip, free_port

#: Kafka property names; short timeouts so failover happens in seconds
FAST_SETTINGS = {
    "broker.heartbeat.interval.ms": 300,
    "broker.session.timeout.ms": 2500,
    "replica.lag.time.max.ms": 3000,
    "replica.fetch.wait.max.ms": 200,
    "replica.fetch.backoff.ms": 100,
    "leader.imbalance.check.interval.ms": 2000,
    "offsets.topic.num.partitions": 3,
    "group.initial.rebalance.delay.ms": 0,
}


class Node(Broker):
    """One cluster member: a Broker with --node-id / --controller-* flags."""

    def __init__(self, workdir: Path, node_id: int, ctrl_port: int, voters: str,
                 settings: dict | None = None, cores: int = 1):
        super().__init__(workdir, settings=settings, cores=cores)
        self.node_id = node_id
        self.ctrl_port = ctrl_port
        self.voters = voters
        self.stopped = False  # SIGSTOPped
        self.killed = False  # SIGKILLed on purpose and not restarted

    def command(self) -> list[str]:
        return super().command() + [
            "--node-id", str(self.node_id),
            "--controller-listen", f"{self.host}:{self.ctrl_port}",
            "--controller-voters", self.voters,
        ]

    def launch(self) -> None:
        """Starts the process without waiting for it to answer."""
        if not self.bin.exists():
            raise RuntimeError(
                f"corelog binary not found at {self.bin} "
                "(run `cargo build --release` or set CORELOG_BIN)"
            )
        assert not self.running, f"node {self.node_id} already running"
        self.starts += 1
        cmd = self.command()
        self._log_marker(f"start #{self.starts}: {' '.join(cmd)}")
        with open(self.log_path, "ab") as log:
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )
        self.stopped = False
        self.killed = False

    def start(self, ready_timeout: float = 30.0) -> None:
        self.launch()
        self.wait_ready(ready_timeout)

    def kill9(self) -> None:
        assert self.running, f"node {self.node_id} not running"
        self._log_marker("SIGKILL")
        if self.stopped:
            self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append(self.proc.returncode)
        self.stopped = False
        self.killed = True

    def sigstop(self) -> None:
        assert self.running and not self.stopped
        self._log_marker("SIGSTOP")
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self) -> None:
        assert self.running and self.stopped
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False
        self._log_marker("SIGCONT")

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def log_bytes(self, topic: str, partition: int) -> bytes:
        """The partition's segment files (*.log, by base offset) concatenated."""
        d = self.partition_dir(topic, partition)
        if not d.is_dir():
            return b""
        out = bytearray()
        for f in sorted(d.glob("*.log")):
            try:
                out += f.read_bytes()
            except FileNotFoundError:  # segment deleted while we listed
                pass
        return bytes(out)

    def grep_log(self, needle: str) -> list[str]:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if needle in line]


# --------------------------------------------------------------------------- raw Metadata v1


@dataclass
class PartMeta:
    error: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class RawMetadata:
    brokers: dict[int, tuple[str, int]]
    controller_id: int
    topics: dict[str, tuple[int, dict[int, PartMeta]]]  # name -> (error, partitions)


def raw_metadata(host: str, port: int, topics: list[str] | None = None,
                 timeout: float = 3.0) -> RawMetadata:
    """Metadata v1 sent to exactly this broker (no client-side routing or cache)."""

    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack(">h", len(b)) + b

    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(s(t) for t in topics)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        d = _roundtrip(sock, 3, 1, 7, body)
    i = 0

    def u(fmt):
        nonlocal i
        v = struct.unpack_from(fmt, d, i)[0]
        i += struct.calcsize(fmt)
        return v

    def string():
        nonlocal i
        n = u(">h")
        if n < 0:
            return None
        v = d[i:i + n].decode()
        i += n
        return v

    brokers = {}
    for _ in range(u(">i")):
        nid = u(">i")
        h = string()
        p = u(">i")
        string()  # rack
        brokers[nid] = (h, p)
    controller = u(">i")
    out = {}
    for _ in range(u(">i")):
        terr = u(">h")
        name = string()
        u(">b")  # is_internal
        parts = {}
        for _ in range(u(">i")):
            perr = u(">h")
            idx = u(">i")
            leader = u(">i")
            reps = [u(">i") for _ in range(u(">i"))]
            isr = [u(">i") for _ in range(u(">i"))]
            parts[idx] = PartMeta(perr, leader, reps, isr)
        out[name] = (terr, parts)
    return RawMetadata(brokers, controller, out)


# --------------------------------------------------------------------------- cluster


def wait_for(pred, timeout: float, what: str = "condition", interval: float = 0.1):
    """Polls pred() until truthy; returns its value or raises AssertionError.
    Exceptions from pred() count as 'not yet' (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - a dead node, a timeout: try again
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class Cluster:
    def __init__(self, workdir: Path, n: int = 3, settings: dict | None = None,
                 cores: int = 1, registry: list | None = None):
        self.workdir = Path(workdir)
        merged = dict(FAST_SETTINGS)
        merged.update(settings or {})
        self.settings = merged
        ctrl_ports = [free_port() for _ in range(n)]
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ctrl_ports))
        self.nodes: list[Node] = []
        for i in range(n):
            nd = Node(self.workdir / f"node{i + 1}", i + 1, ctrl_ports[i], self.voters,
                      settings=merged, cores=cores)
            self.nodes.append(nd)
            if registry is not None:
                registry.append(nd)
        self._admin: AdminClient | None = None

    # ------------------------------------------------------------------ processes

    @property
    def bootstrap(self) -> str:
        return ",".join(nd.bootstrap for nd in self.nodes)

    def node(self, i: int) -> Node:
        """By node id (1-based)."""
        return self.nodes[i - 1]

    def live(self) -> list[Node]:
        return [nd for nd in self.nodes if nd.running and not nd.stopped]

    def start(self, timeout: float = 60.0) -> None:
        for nd in self.nodes:
            nd.launch()
        for nd in self.nodes:
            nd.wait_ready(timeout)
        for nd in self.nodes:
            self.wait_node_sees_cluster(nd, timeout)

    def wait_node_sees_cluster(self, nd: Node, timeout: float = 30.0) -> None:
        """The node answers Metadata (AdminClient bootstrapped on it alone) with
        every node of the cluster registered."""
        want = {x.node_id for x in self.nodes}

        def ok():
            if not nd.running:
                raise RuntimeError(f"node {nd.node_id} exited with {nd.proc.returncode}:\n"
                                   f"{nd.log_tail(40)}")
            a = AdminClient({"bootstrap.servers": nd.bootstrap})
            md = a.list_topics(timeout=3)
            return set(md.brokers) == want and md.controller_id in want

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if ok():
                    return
            except KafkaException as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"node {nd.node_id} did not list brokers {sorted(want)} within "
                           f"{timeout}s (last: {last!r})\n--- stderr tail ---\n{nd.log_tail()}")

    def kill9(self, i: int) -> None:
        self.node(i).kill9()

    def sigstop(self, i: int) -> None:
        self.node(i).sigstop()

    def sigcont(self, i: int) -> None:
        self.node(i).sigcont()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Starts node i again (same ports, same data dir); SIGTERMs it first if
        it is still running. Waits until it serves and sees the cluster."""
        nd = self.node(i)
        if nd.running:
            if nd.stopped:
                nd.sigcont()
            rc = nd.stop()
            assert rc == 0, f"node {i} exited with {rc} on SIGTERM\n{nd.log_tail()}"
        nd.start(timeout)
        self.wait_node_sees_cluster(nd, timeout)

    def stop_all(self, timeout: float = 30.0) -> list[str]:
        """SIGTERMs every live node at once (a lone survivor could wait on a quorum
        that is gone); returns problems: a non-zero exit or a hang."""
        errors = []
        live = []
        for nd in self.nodes:
            if nd.proc is None:
                continue
            if nd.running:
                if nd.stopped:
                    nd.sigcont()
                nd._log_marker("SIGTERM")
                nd.proc.send_signal(signal.SIGTERM)
                live.append(nd)
            elif not nd.killed:
                errors.append(f"node {nd.node_id} ({nd.bootstrap}) died unexpectedly "
                              f"(exit {nd.proc.returncode})\n--- stderr tail ---\n{nd.log_tail()}")
        deadline = time.monotonic() + timeout
        for nd in live:
            try:
                nd.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                nd.proc.kill()
                nd.proc.wait()
                errors.append(f"node {nd.node_id} did not exit within {timeout}s of SIGTERM "
                              f"(killed)\n--- stderr tail ---\n{nd.log_tail()}")
                continue
            rc = nd.proc.returncode
            nd.exit_codes.append(rc)
            nd._log_marker(f"exited with {rc}")
            if rc != 0:
                errors.append(f"node {nd.node_id} exited with {rc} on SIGTERM (expected 0)\n"
                              f"--- stderr tail ---\n{nd.log_tail()}")
        return errors

    # ------------------------------------------------------------------ metadata

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap,
                                       "topic.metadata.refresh.interval.ms": 1000})
        return self._admin

    def metadata(self, topic: str | None = None, timeout: float = 5.0):
        """confluent-kafka ClusterMetadata (fresh request to some live broker)."""
        return self.admin().list_topics(topic=topic, timeout=timeout)

    def leader_of(self, topic: str, partition: int) -> int:
        return self.metadata(topic).topics[topic].partitions[partition].leader

    def isr_of(self, topic: str, partition: int) -> list[int]:
        return list(self.metadata(topic).topics[topic].partitions[partition].isrs)

    def replicas_of(self, topic: str, partition: int) -> list[int]:
        return list(self.metadata(topic).topics[topic].partitions[partition].replicas)

    def controller_id(self) -> int:
        return self.metadata().controller_id

    def node_metadata(self, i: int, topics: list[str] | None = None) -> RawMetadata:
        nd = self.node(i)
        return raw_metadata(nd.host, nd.port, topics)

    def partitions_view(self, topic: str) -> dict[int, dict[int, PartMeta]]:
        """{node id: {partition: PartMeta}} from every live node (raw Metadata)."""
        out = {}
        for nd in self.live():
            md = raw_metadata(nd.host, nd.port, [topic])
            err, parts = md.topics.get(topic, (-1, {}))
            out[nd.node_id] = parts if err == 0 else {}
        return out

    def agreed(self, topic: str, partitions: int) -> dict[int, PartMeta] | None:
        """The partitions' state when every live node reports the same leader,
        replicas and ISR for all of them (and every partition has a leader);
        else None."""
        view = self.partitions_view(topic)
        first = None
        for parts in view.values():
            if sorted(parts) != list(range(partitions)):
                return None
            if any(pm.error != 0 or pm.leader < 0 for pm in parts.values()):
                return None
            norm = {p: (pm.leader, pm.replicas, sorted(pm.isr)) for p, pm in parts.items()}
            if first is None:
                first = (norm, parts)
            elif norm != first[0]:
                return None
        return first[1] if first else None

    def wait_for(self, pred, timeout: float, what: str = "condition"):
        return wait_for(pred, timeout, what)

    def wait_isr_full(self, topic: str, partitions: int, timeout: float = 30.0,
                      rf: int | None = None) -> dict[int, PartMeta]:
        """Until every live node agrees that every partition's ISR is all of its replicas."""
        def ok():
            st = self.agreed(topic, partitions)
            if st is None:
                return None
            for pm in st.values():
                if sorted(pm.isr) != sorted(pm.replicas):
                    return None
                if rf is not None and len(pm.replicas) != rf:
                    return None
            return st
        return wait_for(ok, timeout, f"{topic}: ISR == replicas on every live node")

    def create_topic(self, name: str, partitions: int = 1, rf: int = 3,
                     configs: dict | None = None, timeout: float = 30.0) -> dict[int, PartMeta]:
        """CreateTopics, then waits until every live node agrees on the new
        topic's leaders and the ISRs are full; returns the partition state."""
        nt = NewTopic(name, num_partitions=partitions, replication_factor=rf,
                      config={k: str(v) for k, v in (configs or {}).items()})
        fut = self.admin().create_topics([nt], operation_timeout=timeout, request_timeout=timeout)
        fut[name].result(timeout=timeout + 5)
        return self.wait_isr_full(name, partitions, timeout, rf=rf)

    # ------------------------------------------------------------------ replicas on disk

    def replica_logs(self, topic: str, partition: int) -> dict[int, bytes]:
        nodes = self.replicas_of(topic, partition)
        return {i: self.node(i).log_bytes(topic, partition) for i in nodes}

    def wait_logs_identical(self, topic: str, partition: int, timeout: float = 30.0,
                            min_bytes: int = 1) -> bytes:
        """Until every replica's concatenated .log bytes are identical (and non-empty)."""
        last = {}

        def ok():
            logs = self.replica_logs(topic, partition)
            last.clear()
            last.update({i: len(b) for i, b in logs.items()})
            vals = list(logs.values())
            if len(vals) >= 2 and len(vals[0]) >= min_bytes and all(v == vals[0] for v in vals):
                return vals[0]
            return None

        try:
            return wait_for(ok, timeout, f"{topic}-{partition} replica logs identical")
        except AssertionError as e:
            logs = self.replica_logs(topic, partition)
            detail = []
            ref = None
            for i, b in logs.items():
                if ref is None:
                    ref = b
                    detail.append(f"node {i}: {len(b)} bytes")
                    continue
                n = min(len(ref), len(b))
                diff = next((k for k in range(n) if ref[k] != b[k]), n)
                detail.append(f"node {i}: {len(b)} bytes, first difference at byte {diff}")
            raise AssertionError(f"{e}\n  " + "\n  ".join(detail)) from None


# --------------------------------------------------------------------------- clients


class AckedProducer:
    """A confluent-kafka producer thread writing numbered records ("seq")
    round-robin over the partitions until stopped; every delivery report is
    recorded with the time it arrived (the ground truth of what was acked)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1, rate: float = 300.0,
                 conf: dict | None = None, value_pad: int = 50):
        import threading

        from confluent_kafka import Producer

        c = {
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 1000,
        }
        c.update(conf or {})
        self.p = Producer(c)
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.pad = b"x" * value_pad
        self.lock = threading.Lock()
        self.acked: dict[int, tuple[int, int, float]] = {}  # seq -> (partition, offset, t)
        self.failed: dict[int, tuple[str, int, float]] = {}  # seq -> (error, code, t)
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="acked-producer", daemon=True)
        self.thread.start()

    @staticmethod
    def seq_of(value: bytes) -> int:
        return int(value.split(b"-", 1)[0][1:])

    def _cb(self, err, m):
        now = time.monotonic()
        seq = self.seq_of(m.value())
        with self.lock:
            if err is not None:
                self.failed[seq] = (f"{err.name()}: {err.str()}", err.code(), now)
            else:
                self.acked[seq] = (m.partition(), m.offset(), now)

    def _run(self):
        interval = 1.0 / self.rate
        nxt = time.monotonic()
        while not self._stop.is_set():
            seq = self.sent
            try:
                self.p.produce(self.topic, key=b"k%08d" % seq, value=b"v%08d-" % seq + self.pad,
                               partition=seq % self.partitions, on_delivery=self._cb)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0)
            nxt += interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()

    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)

    def acked_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for _, _, ta in self.acked.values() if ta > t)

    def acked_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(1 for _, _, ta in self.acked.values() if t0 < ta <= t1)

    def stop(self, flush_timeout: float = 60.0) -> int:
        """Stops producing and flushes; returns the number still undelivered."""
        self._stop.set()
        self.thread.join(10)
        left = self.p.flush(flush_timeout)
        self.p = None  # destroy it now (a failed test's traceback would keep it reconnecting)
        return left


def consume_all(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0,
                ) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Reads every partition from the beginning up to its high watermark with a
    fresh confluent-kafka consumer (manual assignment); {p: [(offset, key, value)]}."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "verify-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "enable.partition.eof": False, "fetch.wait.max.ms": 100,
    })
    try:
        ends = {}
        for p in range(partitions):
            # retried: a leader change (e.g. preferred-leader election) makes
            # librdkafka's ListOffsets fail once with NOT_LEADER_FOR_PARTITION
            ends[p] = wait_for(
                lambda: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] + 1,
                20, f"{topic}-{p} high watermark", interval=0.3) - 1
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: dict[int, list] = {p: [] for p in range(partitions)}
        nxt = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while any(nxt[p] < ends[p] for p in range(partitions)):
            if time.monotonic() > deadline:
                raise AssertionError(f"consume_all {topic}: timed out at {nxt}, ends {ends}")
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    raise AssertionError(f"consume_all {topic}: {m.error()}")
                out[m.partition()].append((m.offset(), m.key(), m.value()))
                nxt[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


def check_exactly_once(prod: AckedProducer, consumed: dict[int, list[tuple[int, bytes, bytes]]]) -> int:
    """Every acknowledged record is in the log exactly once, at its acked
    offset, and per partition the records are in the order they were sent.
    A record the producer was told failed may or may not be there; nothing
    else may. Returns the number of acknowledged records."""
    problems = []

    def note(s):
        if len(problems) < 15:
            problems.append(s)

    with prod.lock:
        acked = dict(prod.acked)
        failed = dict(prod.failed)
    seen: dict[int, tuple[int, int]] = {}
    for p, recs in consumed.items():
        last_seq = -1
        for off, key, value in recs:
            seq = AckedProducer.seq_of(value)
            if key != b"k%08d" % seq:
                note(f"p{p}@{off}: key {key!r} does not match value seq {seq}")
            if seq in seen:
                note(f"seq {seq} duplicated: p{seen[seq][0]}@{seen[seq][1]} and p{p}@{off}")
            seen[seq] = (p, off)
            if seq % prod.partitions != p:
                note(f"seq {seq} found in partition {p}")
            if seq <= last_seq:
                note(f"p{p}@{off}: seq {seq} after seq {last_seq} (out of order)")
            last_seq = seq
            if seq not in acked and seq not in failed:
                note(f"p{p}@{off}: seq {seq} was never reported delivered or failed")
    for seq, (p, off, _) in sorted(acked.items()):
        if seq not in seen:
            note(f"acked seq {seq} (p{p}@{off}) is missing")
        elif seen[seq] != (p, off):
            note(f"acked seq {seq} at p{p}@{off} found at p{seen[seq][0]}@{seen[seq][1]}")
    assert not problems, (f"{len(acked)} acked, {len(failed)} failed, "
                          f"{sum(len(r) for r in consumed.values())} consumed:\n  "
                          + "\n  ".join(problems))
    return len(acked)
