"""KafkaJS 2.2.4 round-trip against the real corelog binary.

The node driver (node/kafkajs_client.js) is run as a subprocess; data goes
through JSON files (bytes as base64)."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corelog_compat import (
    matrix,
    PARTITIONS, Rec, assert_spread, expected_partitions, make_messages, partition_counts, verify,
)

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "kafkajs_client.js"

# every codec x (nothing | clean restart | kill -9 restart) between produce and consume
CASES = matrix("gzip")

_TS_TYPES = {0: "create", 1: "logappend"}


def _b64(b):
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s):
    return None if s is None else base64.b64decode(s)


def run_driver(tmp_path, request: dict, timeout=240):
    if shutil.which("node") is None:
        pytest.fail("node not found (scripts/install-test-deps.sh installs the test dependencies)")
    if not (NODE_DIR / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs not installed: run scripts/install-test-deps.sh")
    req_path = tmp_path / f"kafkajs-{request['cmd']}.json"
    req_path.write_text(json.dumps(request))
    r = subprocess.run(
        ["node", str(DRIVER), str(req_path)], cwd=NODE_DIR, capture_output=True, timeout=timeout,
        env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"),
    )
    if r.returncode != 0:
        raise AssertionError(
            f"kafkajs {request['cmd']} failed (exit {r.returncode})\n"
            f"--- stdout ---\n{r.stdout.decode(errors='replace')[-3000:]}\n"
            f"--- stderr ---\n{r.stderr.decode(errors='replace')[-5000:]}"
        )
    return r


@pytest.mark.parametrize("compression,action", CASES, ids=[f"{c}-{a}" for c, a in CASES])
def test_roundtrip(broker, tmp_path, compression, action):
    topic = f"kjs-{compression}-{action}"
    brokers = [broker.bootstrap]
    run_driver(tmp_path, {"cmd": "create-topic", "brokers": brokers, "topic": topic,
                          "partitions": PARTITIONS})

    msgs = make_messages(seed=33)
    (tmp_path / "in.json").write_text(json.dumps([
        {"k": _b64(m.key), "v": _b64(m.value), "h": [[n, _b64(v)] for n, v in m.headers],
         "ts": m.timestamp}
        for m in msgs
    ]))
    run_driver(tmp_path, {"cmd": "produce", "brokers": brokers, "topic": topic,
                          "compression": compression, "input": str(tmp_path / "in.json"),
                          "output": str(tmp_path / "reports.json")})
    rep = json.loads((tmp_path / "reports.json").read_text())["reports"]
    reports = {i: (p, o) for i, (p, o) in enumerate(rep)}
    expected = expected_partitions(msgs, reports)
    assert_spread(expected)

    broker.act(action)

    run_driver(tmp_path, {"cmd": "consume", "brokers": brokers, "topic": topic,
                          "counts": partition_counts(expected), "timeoutMs": 120000,
                          "output": str(tmp_path / "consumed.json")})
    raw = json.loads((tmp_path / "consumed.json").read_text())["partitions"]
    consumed = {
        int(p): [
            Rec(partition=int(p), offset=r["o"], key=_unb64(r["k"]), value=_unb64(r["v"]),
                headers=tuple((n, _unb64(v)) for n, v in r["h"]), timestamp=r["ts"],
                ts_type=_TS_TYPES.get(r["tsType"]))
            for r in recs
        ]
        for p, recs in raw.items()
    }
    verify(expected, consumed)
