"""`--roles`: three controller-only nodes form the quorum, two broker-only
nodes serve clients. Brokers register with the quorum, topics are placed on
the brokers only, and the controller id clients see is a broker they can
reach."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import FAST_SETTINGS, Node, consume_all, wait_for
from corelog_compat import free_port


class RoleNode(Node):
    def __init__(self, *args, roles: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.roles = roles

    def command(self) -> list[str]:
        return super().command() + ["--roles", self.roles]


def test_controller_only_quorum_with_broker_only_nodes(request, tmp_path):
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    controllers = [RoleNode(tmp_path / f"c{i + 1}", i + 1, ports[i], voters,
                            settings=FAST_SETTINGS, roles="controller") for i in range(3)]
    brokers = [RoleNode(tmp_path / f"b{i}", i, free_port(), voters,
                        settings=FAST_SETTINGS, roles="broker") for i in (4, 5)]
    request.node._corelog_brokers = controllers + brokers
    try:
        for c in controllers:
            c.launch()
        for b in brokers:
            b.start()
        bootstrap = ",".join(b.bootstrap for b in brokers)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        md = wait_for(lambda: (lambda m: m if set(m.brokers) == {4, 5} else None)(
            admin.list_topics(timeout=5)), 20, "both brokers registered")
        assert md.controller_id in (4, 5)
        with pytest.raises(KafkaException) as e:
            admin.create_topics([NewTopic("three", 1, 3)])["three"].result(10)
        assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
        admin.create_topics([NewTopic("split", 2, 2)])["split"].result(10)
        parts = wait_for(lambda: (lambda t: t if t and all(p.leader in (4, 5) and len(p.isrs) == 2
                                                          for p in t.partitions.values()) else None)(
            admin.list_topics("split", timeout=5).topics.get("split")), 20, "leaders and full ISRs")
        assert {p.leader for p in parts.partitions.values()} == {4, 5}
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(200):
            p.produce("split", value=b"%d" % i, partition=i % 2)
        assert p.flush(20) == 0
        got = consume_all(bootstrap, "split", 2)
        assert sorted(int(v) for recs in got.values() for _, _, v in recs) == list(range(200))
    finally:
        # Every node is stopped even if one hangs (stop() kills it and raises).
        codes = []
        for n in brokers + controllers:
            if n.running:
                try:
                    codes.append((n.node_id, n.stop()))
                except RuntimeError as e:
                    codes.append((n.node_id, str(e)))
    assert all(rc == 0 for _, rc in codes), codes
