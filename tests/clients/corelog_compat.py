"""Shared pieces of corelog's real-client compatibility suite.

- `Broker`: runs the real `corelog` binary on a free loopback port with a temp
  data dir; start / clean restart / kill -9 restart / stop.
- `probe()`: a raw ApiVersions + Metadata round-trip, used to decide that a
  freshly started broker is ready (no client library involved).
- `make_messages()` / `expected_partitions()` / `verify()`: the deterministic
  corpus every client produces, the per-partition contents the producer's
  delivery reports say the broker must now hold, and the byte-for-byte check
  of what a consumer read back.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "release" / "corelog"

#: messages per round-trip test (>= 10,000 by default; lower it locally with the env var)
N_MESSAGES = int(os.environ.get("CORELOG_COMPAT_MESSAGES", "10000"))
PARTITIONS = 3

#: the "between produce and consume" actions every client is run with
ACTIONS = ("none", "restart", "kill9")


def corelog_bin() -> Path:
    return Path(os.environ.get("CORELOG_BIN") or DEFAULT_BIN)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in a run, and drawn
    below the kernel's ephemeral range (32768+ by default), so neither a
    bind to port 0 (an embedded controller's listener) nor an outgoing
    connection can take it between this check and the broker's bind."""
    low, high = 20000, 32000
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, eph_low - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port found")


# --------------------------------------------------------------------------- raw protocol probe


class ProbeError(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError(f"connection closed after {len(buf)}/{n} bytes")
        buf += chunk
    return bytes(buf)


def _roundtrip(sock, api_key, api_version, corr, body, flexible=False) -> bytes:
    client_id = b"corelog-compat-probe"
    header = struct.pack(">hhih", api_key, api_version, corr, len(client_id)) + client_id
    if flexible:
        header += b"\x00"  # request header v2: empty tagged fields
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if size < 4 or size > 64 * 1024 * 1024:
        raise ProbeError(f"implausible response size {size}")
    resp = _recv_exact(sock, size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ProbeError(f"correlation id {got} != {corr}")
    return resp[4:]


def probe(host: str, port: int, timeout: float = 2.0) -> dict:
    """ApiVersions v0 then Metadata (all topics); returns {api_key: (min, max)}."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        resp = _roundtrip(sock, 18, 0, 1, b"")
        (err,) = struct.unpack(">h", resp[:2])
        if err != 0:
            raise ProbeError(f"ApiVersions error_code {err}")
        (n,) = struct.unpack(">i", resp[2:6])
        apis = {}
        for i in range(n):
            k, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            apis[k] = (lo, hi)
        if 3 not in apis:
            raise ProbeError(f"Metadata not advertised in ApiVersions: {sorted(apis)}")
        lo, hi = apis[3]
        v = max(lo, min(hi, 8))
        if v <= 8:
            body = struct.pack(">i", -1)  # topics: null = all
            if v >= 4:
                body += b"\x00"  # allow_auto_topic_creation
            if v >= 8:
                body += b"\x00\x00"  # include cluster/topic authorized operations
            _roundtrip(sock, 3, v, 2, body)
        else:  # flexible versions only
            body = b"\x00" + b"\x00"  # topics: compact null; allow_auto_topic_creation
            if v <= 10:
                body += b"\x00"  # include_cluster_authorized_operations
            body += b"\x00" + b"\x00"  # include_topic_authorized_operations; tagged fields
            _roundtrip(sock, 3, v, 2, body, flexible=True)
        return apis


# --------------------------------------------------------------------------- broker process


class Broker:
    """One corelog process (restartable on the same port and data dir)."""

    def __init__(self, workdir: Path, settings: dict | None = None, cores: int = 2):
        self.bin = corelog_bin()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "corelog.stderr.log"
        self.settings = dict(settings or {})
        self.cores = cores
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [
            str(self.bin), "serve",
            "--listen", self.bootstrap,
            "--data-dir", str(self.data_dir),
            "--cores", str(self.cores),
        ]
        for k, v in self.settings.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def _log_marker(self, text: str) -> None:
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== [harness {time.strftime('%H:%M:%S')}] {text} =====\n".encode())

    def start(self, ready_timeout: float = 30.0) -> None:
        if not self.bin.exists():
            raise RuntimeError(
                f"corelog binary not found at {self.bin} "
                "(run `cargo build --release` or set CORELOG_BIN)"
            )
        assert not self.running, "broker already running"
        self.starts += 1
        cmd = self.command()
        self._log_marker(f"start #{self.starts}: {' '.join(cmd)}")
        log = open(self.log_path, "ab")
        try:
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_codes.append(rc)
                raise RuntimeError(
                    f"corelog exited with {rc} during startup\n--- stderr tail ---\n{self.log_tail()}"
                )
            try:
                probe(self.host, self.port, timeout=2.0)
                return
            except (OSError, ProbeError, struct.error) as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(
            f"corelog not ready on {self.bootstrap} after {timeout}s (last probe error: {last!r})"
            f"\n--- stderr tail ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILLs and raises on a hang)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self._log_marker("SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_codes.append(self.proc.returncode)
                raise RuntimeError(
                    f"corelog did not exit within {timeout}s of SIGTERM (killed)"
                    f"\n--- stderr tail ---\n{self.log_tail()}"
                )
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        self._log_marker(f"exited with {rc}")
        return rc

    def restart(self) -> None:
        """Clean restart: SIGTERM, wait, require exit 0, start again (same port and dir)."""
        rc = self.stop()
        if rc != 0:
            raise AssertionError(
                f"corelog exited with {rc} on SIGTERM (expected 0)\n--- stderr tail ---\n{self.log_tail()}"
            )
        self.start()

    def kill9_restart(self) -> None:
        """Crash restart: SIGKILL (no chance to flush), start again on the same port and dir."""
        assert self.running, "broker not running"
        self._log_marker("SIGKILL")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append(self.proc.returncode)
        self.start()

    def act(self, action: str) -> None:
        if action == "none":
            return
        if action == "restart":
            self.restart()
        elif action == "kill9":
            self.kill9_restart()
        else:
            raise ValueError(action)

    def log_tail(self, lines: int = 80) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- message corpus


@dataclass(frozen=True)
class Msg:
    idx: int
    key: bytes
    value: bytes
    headers: tuple  # ((name: str, value: bytes), ...), in order
    timestamp: int | None  # explicit CreateTime (ms) or None when the client picks it


@dataclass(frozen=True)
class Rec:
    """A consumed record, normalised across clients."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple  # ((name: str, value: bytes | None), ...)
    timestamp: int
    ts_type: str | None = None  # "create" | "logappend" | None (client does not say)


def now_ms() -> int:
    return int(time.time() * 1000)


def make_messages(
    n: int = N_MESSAGES,
    seed: int = 1,
    timestamps: bool = True,
    headers: bool = True,
    ts_base: int | None = None,
) -> list[Msg]:
    """Deterministic keyed messages: binary keys and values of varying size
    (some empty, some ~10KB), >= 2 headers incl. a binary one, explicit and
    increasing CreateTime timestamps one hour in the past."""
    rng = random.Random(seed)
    if ts_base is None:
        ts_base = (now_ms() - 3_600_000) // 1000 * 1000
    out = []
    for i in range(n):
        key = b"key-%06d-" % i + rng.randbytes(rng.randrange(0, 9))
        if i % 100 == 7:
            value = b""
        elif i % 250 == 3:
            value = rng.randbytes(10 * 1024 + rng.randrange(0, 512))
        elif i % 3 == 0:
            value = (b"text value %d; " % i) * rng.randrange(1, 20)
        else:
            value = rng.randbytes(rng.randrange(1, 400))
        hdrs: tuple = ()
        if headers:
            hdrs = (
                ("idx", b"%d" % i),
                ("bin", bytes([0, 1, 0x7F, 0x80, 0xFE, 0xFF]) + struct.pack(">I", i)
                 + rng.randbytes(rng.randrange(0, 16))),
            )
            if i % 10 == 0:
                hdrs += (("empty", b""),)
        ts = ts_base + i * 3 if timestamps else None
        out.append(Msg(i, key, value, hdrs, ts))
    return out


def expected_partitions(msgs: list[Msg], reports: dict[int, tuple[int, int]]) -> dict[int, list[tuple[int, Msg]]]:
    """From delivery reports {msg idx: (partition, offset)} build
    {partition: [(offset, msg), ...]} sorted by offset."""
    missing = [m.idx for m in msgs if m.idx not in reports]
    assert not missing, f"{len(missing)} messages have no delivery report, e.g. {missing[:10]}"
    parts: dict[int, list[tuple[int, Msg]]] = {}
    for m in msgs:
        p, off = reports[m.idx]
        parts.setdefault(p, []).append((off, m))
    for p, lst in parts.items():
        lst.sort(key=lambda t: t[0])
        offs = [o for o, _ in lst]
        assert len(set(offs)) == len(offs), f"partition {p}: duplicate offsets in delivery reports"
    return parts


def _short(b) -> str:
    if b is None:
        return "None"
    if isinstance(b, (bytes, bytearray)) and len(b) > 40:
        return f"{bytes(b[:40])!r}...(len {len(b)})"
    return repr(b)


def verify(
    expected: dict[int, list[tuple[int, Msg]]],
    consumed: dict[int, list[Rec]],
    ts_range: tuple[int, int] | None = None,
    expected_headers: tuple | None = None,
    dense_offsets: bool = True,
    max_report: int = 15,
) -> None:
    """Byte-for-byte check of every consumed record against the delivery
    reports, in per-partition order.

    ts_range: when messages had no explicit timestamp, the window in which the
    client's CreateTime must fall. expected_headers: when the client can only
    send the same headers on every message (kcat -H).
    """
    problems: list[str] = []
    total = 0

    def note(s):
        if len(problems) < max_report:
            problems.append(s)
        else:
            problems.append("...")

    for p in sorted(set(expected) | set(consumed)):
        exp = expected.get(p, [])
        got = consumed.get(p, [])
        total += len(exp)
        if len(got) != len(exp):
            note(f"partition {p}: consumed {len(got)} records, delivery reports say {len(exp)}")
        if dense_offsets and exp:
            offs = [o for o, _ in exp]
            if offs != list(range(offs[0], offs[0] + len(offs))):
                note(f"partition {p}: delivery-report offsets are not contiguous: {offs[:5]}...")
        for j, (e, g) in enumerate(zip(exp, got)):
            off, m = e
            where = f"p{p}[{j}] msg#{m.idx} offset {off}"
            if g.partition != p:
                note(f"{where}: record says partition {g.partition}")
            if g.offset != off:
                note(f"{where}: consumed offset {g.offset} (order/offset mismatch)")
            if g.key != m.key:
                note(f"{where}: key {_short(g.key)} != {_short(m.key)}")
            if g.value != m.value:
                note(f"{where}: value {_short(g.value)} != {_short(m.value)}")
            want_h = expected_headers if expected_headers is not None else m.headers
            if tuple(g.headers) != tuple(want_h):
                note(f"{where}: headers {g.headers!r:.200} != {want_h!r:.200}")
            if m.timestamp is not None:
                if g.timestamp != m.timestamp:
                    note(f"{where}: timestamp {g.timestamp} != {m.timestamp}")
            elif ts_range is not None and not (ts_range[0] <= g.timestamp <= ts_range[1]):
                note(f"{where}: timestamp {g.timestamp} outside produce window {ts_range}")
            if g.ts_type is not None and g.ts_type != "create":
                note(f"{where}: timestamp type {g.ts_type}, expected CreateTime")
            if len(problems) > max_report:
                break
        if len(problems) > max_report:
            break
    assert not problems, (
        f"round-trip mismatch ({total} messages expected):\n  " + "\n  ".join(problems)
    )


def partition_counts(expected: dict[int, list]) -> dict[int, int]:
    return {p: len(v) for p, v in expected.items()}


def assert_spread(expected: dict[int, list], partitions: int = PARTITIONS) -> None:
    """The keyed corpus must have landed on every partition."""
    assert sorted(expected) == list(range(partitions)), (
        f"messages landed on partitions {sorted(expected)}, expected all of 0..{partitions - 1}"
    )


def matrix(*codecs: str) -> list[tuple[str, str]]:
    """(compression, action) cases: every codec x every action."""
    return [(c, a) for c in ("none",) + codecs for a in ACTIONS]
