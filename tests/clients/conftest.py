"""Fixtures for the real-client compatibility suite.

`broker`          a running corelog (real binary, free port, temp data dir);
                  .restart() / .kill9_restart(); on teardown it is SIGTERMed and
                  must exit 0.
`broker_factory`  make_broker(settings={...}) for brokers with --set overrides.

The binary is target/release/corelog, or $CORELOG_BIN. When a test fails, the
tail of each of its brokers' stderr is attached to the report.
"""

from __future__ import annotations

import pytest

from corelog_compat import Broker


@pytest.fixture
def broker_factory(request, tmp_path):
    brokers: list[Broker] = []
    request.node._corelog_brokers = brokers

    def make(settings: dict | None = None, cores: int = 2) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", settings=settings, cores=cores)
        brokers.append(b)
        b.start()
        return b

    yield make

    errors = []
    for b in brokers:
        if b.proc is None:
            continue
        if b.running:
            try:
                rc = b.stop()
            except RuntimeError as e:  # hung on SIGTERM
                errors.append(str(e))
                continue
            if rc != 0:
                errors.append(
                    f"corelog on {b.bootstrap} exited with {rc} on SIGTERM (expected 0)\n"
                    f"--- stderr tail ---\n{b.log_tail()}"
                )
        else:
            rc = b.proc.returncode
            errors.append(
                f"corelog on {b.bootstrap} was already dead at teardown (exit {rc})\n"
                f"--- stderr tail ---\n{b.log_tail()}"
            )
    assert not errors, "\n\n".join(errors)


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in getattr(item, "_corelog_brokers", []):
            rep.sections.append(
                (f"corelog stderr tail [{b.bootstrap}] {b.log_path}", b.log_tail(60))
            )


# --------------------------------------------------------------------------- 3-node cluster


@pytest.fixture
def cluster_factory(request, tmp_path):
    """make_cluster(settings={...}, n=3): a started corelog cluster (cluster.py).
    Teardown SIGTERMs every live node at once and requires exit 0; a node that
    died without the test killing it is an error too."""
    from cluster import Cluster

    nodes: list = []
    request.node._corelog_brokers = nodes  # log tails on failure (hook below)
    clusters: list = []

    def make(settings: dict | None = None, n: int = 3) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(clusters)}", n=n, settings=settings, registry=nodes)
        clusters.append(c)
        c.start()
        return c

    yield make

    errors = []
    for c in clusters:
        errors += c.stop_all()
    assert not errors, "\n\n".join(errors)


@pytest.fixture
def cluster(cluster_factory):
    """Three broker+controller nodes with test-speed timeouts (cluster.FAST_SETTINGS)."""
    return cluster_factory()
