"""Shared pieces of the consumer-group tests (no tests in here).

- `Member`: one confluent-kafka group consumer polled by its own thread,
  recording every assign/revoke/lost event and every consumed (partition,
  offset), committing synchronously after each batch and in on_revoke.
- `ContinuousProducer`: a background producer writing round-robin to every
  partition with delivery reports (the ground truth of "what was produced").
- `Raw`: hand-written Kafka wire protocol for the group APIs (JoinGroup v5,
  SyncGroup v3, Heartbeat v3, OffsetCommit v2/v7, OffsetFetch v1), so error
  codes can be checked exactly as the broker sends them.
- `corelog_cli()`: runs `corelog groups ...`.

Run as a script (`python test_groups_helpers.py member ...`) it is a group
member in its own process, so a test can SIGKILL it: it appends
"A p,p" (assigned), "R p,p" (revoked), "M p o" (consumed) and "K p o"
(committed: next offset to read) lines to an output file.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402

from corelog_compat import _recv_exact, corelog_bin  # noqa: E402

# --------------------------------------------------------------------------- waiting


def uid() -> str:
    return uuid.uuid4().hex[:8]


def wait_until(cond, timeout: float, what: str, interval: float = 0.05):
    """Polls cond() until truthy; returns its value or raises AssertionError.
    An exception from cond() (a coordinator still loading after a restart, a
    client timeout) counts as 'not yet'; the last one is reported."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as e:  # noqa: BLE001
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stable_for(cond, hold: float, timeout: float, what: str):
    """Waits until cond() has been truthy continuously for `hold` seconds."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        if cond():
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return
        else:
            since = None
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} to hold for {hold}s")


# --------------------------------------------------------------------------- confluent group member


def member_conf(bootstrap: str, group: str, extra: dict | None = None) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 20000,  # librdkafka's rebalance timeout
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 5000,
    }
    conf.update(extra or {})
    return conf


class Member:
    """A confluent-kafka consumer in a group, polled by a thread."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str,
                 extra: dict | None = None, commit: bool = True, start: bool = True):
        self.name = name
        self.topics = topics
        self.commit_enabled = commit
        self.c = Consumer(member_conf(bootstrap, group, extra))
        self.lock = threading.Lock()
        self.assigned: set[tuple[str, int]] = set()
        self.events: list[tuple[float, str, frozenset]] = []  # (time, assign|revoke|lost, partitions)
        self.consumed: list[tuple[int, int]] = []  # (partition, offset)
        self.consumed_t: list[tuple[str, int, int]] = []  # (topic, partition, offset)
        self.first_after_assign: dict[tuple[str, int], int] = {}
        self.commit_errors: list[str] = []
        self.errors: list[str] = []
        self.commits_ok = 0
        self._stop = threading.Event()
        self._close = True
        self.closed_at = None
        self.thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)
        self.c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)
        if start:
            self.thread.start()

    # callbacks run inside poll()/consume()/close() on the member's thread
    def _on_assign(self, c, parts):
        ps = frozenset((p.topic, p.partition) for p in parts)
        with self.lock:
            self.events.append((time.monotonic(), "assign", ps))
            self.assigned |= set(ps)
            for tp in ps:
                self.first_after_assign.pop(tp, None)

    def _on_revoke(self, c, parts):
        ps = frozenset((p.topic, p.partition) for p in parts)
        if self.commit_enabled:
            self._commit()
        with self.lock:
            self.events.append((time.monotonic(), "revoke", ps))
            self.assigned -= set(ps)

    def _on_lost(self, c, parts):
        ps = frozenset((p.topic, p.partition) for p in parts)
        with self.lock:
            self.events.append((time.monotonic(), "lost", ps))
            self.assigned -= set(ps)

    def _commit(self):
        try:
            self.c.commit(asynchronous=False)
            self.commits_ok += 1
        except KafkaException as e:
            err = e.args[0]
            if err.code() != KafkaError._NO_OFFSET:
                self.commit_errors.append(f"{time.monotonic():.3f} {err}")

    def _run(self):
        try:
            while not self._stop.is_set():
                msgs = self.c.consume(num_messages=500, timeout=0.1)
                got = False
                for m in msgs:
                    if m.error() is not None:
                        self.errors.append(str(m.error()))
                        continue
                    got = True
                    with self.lock:
                        self.consumed.append((m.partition(), m.offset()))
                        self.consumed_t.append((m.topic(), m.partition(), m.offset()))
                        self.first_after_assign.setdefault((m.topic(), m.partition()), m.offset())
                if got and self.commit_enabled:
                    self._commit()
        except Exception as e:  # noqa: BLE001 - surface in the test
            self.errors.append(f"member thread died: {e!r}")
        finally:
            if self._close:
                self.c.close()  # eager: on_revoke (commit) + LeaveGroup
            self.closed_at = time.monotonic()

    def partitions(self) -> set[int]:
        with self.lock:
            return {p for _, p in self.assigned}

    def snapshot_events(self):
        with self.lock:
            return list(self.events)

    def stop(self, close: bool = True, timeout: float = 30.0):
        self._close = close
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"member {self.name} did not stop"


class ContinuousProducer:
    """Produces small records round-robin over all partitions until stopped."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: float = 400.0):
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.p = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "enable.idempotence": False, "message.timeout.ms": 60000,
            "retries": 100, "retry.backoff.ms": 200,
        })
        self.delivered: set[tuple[int, int]] = set()
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.thread.start()

    def _cb(self, err, m):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered.add((m.partition(), m.offset()))

    def _run(self):
        interval = 1.0 / self.rate
        nxt = time.monotonic()
        while not self._stop.is_set():
            p = self.sent % self.partitions
            try:
                self.p.produce(self.topic, value=b"v%d" % self.sent, key=b"k%d" % self.sent,
                               partition=p, on_delivery=self._cb)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0)
            nxt += interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)

    def stop(self) -> set[tuple[int, int]]:
        self._stop.set()
        self.thread.join(10)
        left = self.p.flush(60)
        assert left == 0, f"{left} records undelivered"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"
        assert len(self.delivered) == self.sent, (len(self.delivered), self.sent)
        return set(self.delivered)


def produce_n(bootstrap: str, topic: str, partitions: int, per_partition: int,
              tag: bytes = b"") -> dict[int, list[int]]:
    """Produces per_partition records to every partition; returns {p: [offsets]}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": False})
    out: dict[int, list[int]] = {i: [] for i in range(partitions)}
    errs = []

    def cb(err, m):
        if err is not None:
            errs.append(str(err))
        else:
            out[m.partition()].append(m.offset())

    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=tag + b"%d-%d" % (part, i), partition=part, on_delivery=cb)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errs, errs[:5]
    for v in out.values():
        v.sort()
    return out


# --------------------------------------------------------------------------- admin


def describe_group(bootstrap: str, group: str):
    """AdminClient.describe_consumer_groups for one group (the AdminClient must
    stay referenced until the future completes, or it never does)."""
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": bootstrap})
    return a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (AdminClient.list_consumer_group_offsets)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    res = a.list_consumer_group_offsets([req], request_timeout=15)[group].result(timeout=20)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"{group} {tp}: {tp.error}"
        out[tp.partition] = tp.offset
    return out


# --------------------------------------------------------------------------- CLI


def corelog_cli(bootstrap: str, *args: str, timeout: float = 30.0) -> str:
    r = subprocess.run([str(corelog_bin()), "groups", "--bootstrap-server", bootstrap, *args],
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, (
        f"corelog groups {' '.join(args)} exited {r.returncode}\n"
        f"stdout: {r.stdout.decode(errors='replace')}\nstderr: {r.stderr.decode(errors='replace')}"
    )
    return r.stdout.decode()


def parse_describe(out: str) -> dict[tuple[str, int], dict]:
    """Rows of `corelog groups describe` keyed by (topic, partition)."""
    rows = {}
    lines = out.splitlines()
    hdr = next(i for i, l in enumerate(lines) if l.split()[:2] == ["GROUP", "TOPIC"])
    for line in lines[hdr + 1:]:
        f = line.split()
        if len(f) < 6:
            continue
        rows[(f[1], int(f[2]))] = {
            "current": None if f[3] == "-" else int(f[3]),
            "end": None if f[4] == "-" else int(f[4]),
            "lag": None if f[5] == "-" else int(f[5]),
            "consumer": f[6] if len(f) > 6 else "-",
        }
    return rows


# --------------------------------------------------------------------------- raw protocol


def _s(x: str) -> bytes:
    b = x.encode()
    return struct.pack(">h", len(b)) + b


def _ns(x: str | None) -> bytes:
    return struct.pack(">h", -1) if x is None else _s(x)


def _b(x: bytes | None) -> bytes:
    return struct.pack(">i", -1) if x is None else struct.pack(">i", len(x)) + x


def _arr(items: list[bytes]) -> bytes:
    return struct.pack(">i", len(items)) + b"".join(items)


class Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def _u(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.i)[0]
        self.i += struct.calcsize(fmt)
        return v

    def i16(self):
        return self._u(">h")

    def i32(self):
        return self._u(">i")

    def i64(self):
        return self._u(">q")

    def s(self):
        n = self.i16()
        if n < 0:
            return None
        v = self.d[self.i:self.i + n].decode()
        self.i += n
        return v

    def b(self):
        n = self.i32()
        if n < 0:
            return None
        v = self.d[self.i:self.i + n]
        self.i += n
        return v


def subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0."""
    return struct.pack(">h", 0) + _arr([_s(t) for t in topics]) + _b(None)


def assignment(parts: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return struct.pack(">h", 0) + _arr([
        _s(t) + _arr([struct.pack(">i", p) for p in ps]) for t, ps in parts.items()
    ]) + _b(None)


class Raw:
    """One connection speaking the group APIs by hand."""

    def __init__(self, bootstrap: str, timeout: float = 30.0, client_id: str = "corelog-groups-raw"):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0
        self.client_id = client_id.encode()

    def close(self):
        self.sock.close()

    def send(self, api_key: int, version: int, body: bytes) -> int:
        self.corr += 1
        hdr = struct.pack(">hhih", api_key, version, self.corr, len(self.client_id)) + self.client_id
        msg = hdr + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        return self.corr

    def recv(self, corr: int) -> Reader:
        (size,) = struct.unpack(">i", _recv_exact(self.sock, 4))
        resp = _recv_exact(self.sock, size)
        (got,) = struct.unpack(">i", resp[:4])
        assert got == corr, f"correlation id {got} != {corr}"
        return Reader(resp[4:])

    def call(self, api_key: int, version: int, body: bytes) -> Reader:
        return self.recv(self.send(api_key, version, body))

    # JoinGroup v5 -> dict
    @staticmethod
    def join_body(group, member_id="", instance_id=None, session_ms=6000, rebalance_ms=10000,
                  topics=("t",), protocol="range"):
        return (_s(group) + struct.pack(">ii", session_ms, rebalance_ms) + _s(member_id)
                + _ns(instance_id) + _s("consumer")
                + _arr([_s(protocol) + _b(subscription(list(topics)))]))

    @staticmethod
    def parse_join(r: Reader) -> dict:
        out = {"throttle": r.i32(), "error": r.i16(), "generation": r.i32(),
               "protocol": r.s(), "leader": r.s(), "member_id": r.s()}
        out["members"] = [(r.s(), r.s(), r.b()) for _ in range(r.i32())]
        return out

    def join(self, group, member_id="", **kw) -> dict:
        return self.parse_join(self.call(11, 5, self.join_body(group, member_id, **kw)))

    @staticmethod
    def sync_body(group, generation, member_id, assignments: dict[str, bytes] | None = None,
                  instance_id=None) -> bytes:
        """SyncGroup v3."""
        return (_s(group) + struct.pack(">i", generation) + _s(member_id) + _ns(instance_id)
                + _arr([_s(m) + _b(a) for m, a in (assignments or {}).items()]))

    @staticmethod
    def parse_sync(r: Reader) -> dict:
        return {"throttle": r.i32(), "error": r.i16(), "assignment": r.b()}

    def sync(self, group, generation, member_id, assignments: dict[str, bytes] | None = None,
             instance_id=None) -> dict:
        return self.parse_sync(self.call(14, 3, self.sync_body(group, generation, member_id,
                                                                assignments, instance_id)))

    def heartbeat(self, group, generation, member_id, instance_id=None) -> int:
        body = _s(group) + struct.pack(">i", generation) + _s(member_id) + _ns(instance_id)
        r = self.call(12, 3, body)
        r.i32()
        return r.i16()

    def join_and_sync(self, group, topics, parts: dict[str, list[int]], **kw) -> dict:
        """Two-step join as the only member, then SyncGroup assigning `parts` to itself."""
        j = self.join(group, "", topics=topics, **kw)
        assert j["error"] == 79, f"first JoinGroup v5: expected MEMBER_ID_REQUIRED(79): {j}"
        j = self.join(group, j["member_id"], topics=topics, **kw)
        assert j["error"] == 0, f"second JoinGroup v5: {j}"
        s = self.sync(group, j["generation"], j["member_id"], {j["member_id"]: assignment(parts)})
        assert s["error"] == 0, f"SyncGroup: {s}"
        return j

    def offset_commit(self, group, generation, member_id, offsets, version=7,
                      instance_id=None) -> dict:
        """offsets: [(topic, partition, offset, metadata)] -> {(topic, partition): error}."""
        by_topic: dict[str, list] = {}
        for t, p, o, meta in offsets:
            by_topic.setdefault(t, []).append((p, o, meta))
        body = _s(group)
        if version >= 1:
            body += struct.pack(">i", generation) + _s(member_id)
        if version >= 7:
            body += _ns(instance_id)
        if 2 <= version <= 4:
            body += struct.pack(">q", -1)  # retention_time_ms
        parts = []
        for t, ps in by_topic.items():
            items = []
            for p, o, meta in ps:
                item = struct.pack(">iq", p, o)
                if version == 1:
                    item += struct.pack(">q", -1)  # commit timestamp
                if version >= 6:
                    item += struct.pack(">i", -1)
                item += _ns(meta)
                items.append(item)
            parts.append(_s(t) + _arr(items))
        body += _arr(parts)
        r = self.call(8, version, body)
        if version >= 3:
            r.i32()
        out = {}
        for _ in range(r.i32()):
            t = r.s()
            for _ in range(r.i32()):
                p = r.i32()
                out[(t, p)] = r.i16()
        return out

    def offset_fetch(self, group, parts: dict[str, list[int]]) -> dict:
        """OffsetFetch v1 -> {(topic, partition): (offset, metadata, error)}."""
        body = _s(group) + _arr([_s(t) + _arr([struct.pack(">i", p) for p in ps])
                                 for t, ps in parts.items()])
        r = self.call(9, 1, body)
        out = {}
        for _ in range(r.i32()):
            t = r.s()
            for _ in range(r.i32()):
                p = r.i32()
                out[(t, p)] = (r.i64(), r.s(), r.i16())
        return out


# --------------------------------------------------------------------------- subprocess member


def _member_main(bootstrap: str, group: str, topic: str, out_path: str) -> None:
    out = open(out_path, "a", buffering=1)

    def on_assign(c, parts):
        out.write("A " + ",".join(str(p.partition) for p in parts) + "\n")

    def on_revoke(c, parts):
        commit(c)
        out.write("R " + ",".join(str(p.partition) for p in parts) + "\n")

    def commit(c):
        try:
            res = c.commit(asynchronous=False)
        except KafkaException:
            return
        for tp in res or []:
            if tp.error is None and tp.offset >= 0:
                out.write(f"K {tp.partition} {tp.offset}\n")

    c = Consumer(member_conf(bootstrap, group, {"client.id": "killable-member"}))
    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    out.write(f"P {os.getpid()}\n")
    while True:
        msgs = c.consume(num_messages=500, timeout=0.1)
        lines = [f"M {m.partition()} {m.offset()}\n" for m in msgs if m.error() is None]
        if lines:
            out.write("".join(lines))
            commit(c)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "member":
        _member_main(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} member BOOTSTRAP GROUP TOPIC OUTFILE")
