"""kcat (Debian's kcat 1.7.1 on librdkafka 2.0.2) round-trip against the real
corelog binary, run as subprocesses.

kcat has no admin API (the topic is created with confluent-kafka's
AdminClient), cannot set per-message timestamps (librdkafka stamps CreateTime
at produce time; checked against the produce window) and sends the same -H
headers on every message. kcat prints no per-message delivery reports, so
each partition is produced by its own `kcat -P -p N` run: a single producer
writing one partition in input order, whose offsets are therefore 0..n-1.
"""

import shutil
import subprocess
import zlib

import pytest

import ck
from corelog_compat import (
    matrix,
    PARTITIONS, Rec, assert_spread, expected_partitions, make_messages, now_ms,
    partition_counts, verify,
)

# every codec x (nothing | clean restart | kill -9 restart) between produce and consume
CASES = matrix("gzip")

KEY_DELIM = b"|~@corelog-kcat-key-delim-9c1b@~|"
MSG_DELIM = b"|~@corelog-kcat-msg-delim-7f3a@~|\n"
REC_MARKER = b"@@CORELOG-KCAT-REC-51e7@@"
# header values must not contain NUL (argv), ',' or '=' (kcat's %h output is "n=v,n=v")
HEADERS = (("str", b"corelog-kcat"), ("bin", bytes([1, 2, 0x7F, 0x80, 0xFE, 0xFF]) + b"kcat"))


def kcat():
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat not found: run scripts/install-test-deps.sh")
    return path


def _run(args, input=None, timeout=180):
    r = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args[:3]))}... exited {r.returncode}\n"
            f"--- stderr ---\n{r.stderr.decode(errors='replace')[-5000:]}"
        )
    return r


def kcat_partition(key: bytes) -> int:
    """librdkafka's `consistent` partitioner (CRC32 of the key) as our fixed mapping."""
    return zlib.crc32(key) % PARTITIONS


def produce(bootstrap, topic, msgs, compression):
    reports = {}
    by_part = {p: [] for p in range(PARTITIONS)}
    for m in msgs:
        for blob in (m.key, m.value):
            assert KEY_DELIM not in blob and MSG_DELIM not in blob and REC_MARKER not in blob
        by_part[kcat_partition(m.key)].append(m)
    for p, pm in by_part.items():
        data = b"".join(m.key + KEY_DELIM + m.value + MSG_DELIM for m in pm)
        args = [kcat(), "-P", "-b", bootstrap, "-t", topic, "-p", str(p),
                "-K", KEY_DELIM.decode(), "-D", MSG_DELIM.decode().replace("\n", "\\n"),
                "-X", "acks=all", "-X", "linger.ms=5", "-X", "enable.idempotence=false",
                "-m", "30"]
        for name, val in HEADERS:
            args += ["-H", name.encode() + b"=" + val]
        if compression != "none":
            args += ["-z", compression]
        _run(args, input=data)
        for off, m in enumerate(pm):
            reports[m.idx] = (p, off)
    return reports


def parse_output(out: bytes, partition: int):
    recs = []
    for chunk in out.split(REC_MARKER)[1:]:
        nl = chunk.index(b"\n")
        p, o, ts, klen, vlen = (int(x) for x in chunk[:nl].split())
        rest = chunk[nl + 1:]
        kl, vl = max(klen, 0), max(vlen, 0)
        key = rest[:kl] if klen >= 0 else None
        value = rest[kl:kl + vl] if vlen >= 0 else None
        hraw = rest[kl + vl:]
        headers = tuple(
            (n.decode(), v) for n, v in (h.split(b"=", 1) for h in hraw.split(b","))
        ) if hraw else ()
        assert p == partition
        recs.append(Rec(partition=p, offset=o, key=key, value=value, headers=headers,
                        timestamp=ts, ts_type=None))
    return recs


def consume(bootstrap, topic, counts):
    out = {}
    fmt = REC_MARKER.decode() + "%p %o %T %K %S\\n%k%s%h"
    for p in counts:
        r = _run([kcat(), "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", "beginning",
                  "-e", "-q", "-X", "check.crcs=true", "-m", "30", "-f", fmt])
        out[p] = parse_output(r.stdout, p)
    return out


@pytest.mark.parametrize("compression,action", CASES, ids=[f"{c}-{a}" for c, a in CASES])
def test_roundtrip(broker, compression, action):
    topic = f"kcat-{compression}-{action}"
    ck.create_topic(broker.bootstrap, topic, PARTITIONS)

    msgs = make_messages(seed=44, timestamps=False)
    t0 = now_ms()
    reports = produce(broker.bootstrap, topic, msgs, compression)
    t1 = now_ms()
    expected = expected_partitions(msgs, reports)
    assert_spread(expected)

    broker.act(action)

    consumed = consume(broker.bootstrap, topic, partition_counts(expected))
    verify(expected, consumed, ts_range=(t0 - 1000, t1 + 1000), expected_headers=HEADERS)
