"""Shopify's sarama (Go; Debian's golang-github-shopify-sarama-dev 1.22)
against the real corelog binary: ClusterAdmin CreateTopic, an idempotent
acks=all SyncProducer with keyed records (hash partitioner), a consumer
group that commits, and the committed offsets read back. The driver is
tests/clients/go/sarama_check.go, built here in GOPATH mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

GO_DIR = Path(__file__).resolve().parent / "go"
N = 600


@pytest.fixture(scope="session")
def sarama_check(tmp_path_factory) -> Path:
    go = shutil.which("go")
    assert go, "go not installed (scripts/install-test-deps.sh installs golang-go)"
    assert Path("/usr/share/gocode/src/github.com/Shopify/sarama").is_dir(), \
        "sarama not installed (golang-github-shopify-sarama-dev)"
    out = tmp_path_factory.mktemp("sarama") / "sarama_check"
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off",
               GOCACHE=str(GO_DIR / ".gocache"), GOFLAGS="")
    r = subprocess.run([go, "build", "-o", str(out), "sarama_check.go"], cwd=GO_DIR, env=env,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    return out


def run_check(binary: Path, bootstrap: str, topic: str, group: str) -> dict:
    r = subprocess.run([str(binary), bootstrap, topic, group, str(N)], capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    return json.loads(r.stdout)


def test_sarama_idempotent_producer_and_consumer_group(broker_factory, sarama_check):
    b = broker_factory(settings={"group.initial.rebalance.delay.ms": 0})
    res = run_check(sarama_check, b.bootstrap, "sarama", "sarama-g")
    assert res["produced"] == N and res["consumed"] == N, res
    # every acknowledged record was consumed at the partition and offset it was acked at
    got = res["got"]
    for v, off in res["acked"].items():
        assert got.get(v) == off, f"{v} acked at {off}, consumed at {got.get(v)}"
    # offsets per partition are dense, and one key stays on one partition, in order
    per_part = defaultdict(list)
    for v, p in res["partition"].items():
        per_part[p].append(res["acked"][v])
    for p, offs in per_part.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {p}: offsets not dense"
    by_key = defaultdict(list)
    for i in range(N):
        v = f"v{i}"
        by_key[i % 10].append((res["partition"][v], res["acked"][v]))
    for k, seq in by_key.items():
        assert len({p for p, _ in seq}) == 1, f"key k{k} spread over partitions"
        assert [o for _, o in seq] == sorted(o for _, o in seq), f"key k{k} out of order"
    # the group committed up to the end of every partition
    assert res["committed"] == res["end"], res
    assert sum(res["end"].values()) == N

