//! Validation of loadgen's numbers against things it does not control: an
//! independent client (confluent-kafka / librdkafka) on the same workload,
//! the broker's own offsets, and a proxy that injects a known delay. Each
//! test starts the real corelog binary on a free loopback port. The tests
//! share two cores, so they take a lock and run one at a time.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loadgen::cluster;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The corelog binary of the same profile as this test (built on demand).
fn corelog_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("corelog");
    if !bin.exists() {
        let release = profile_dir.ends_with("release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace())
            .args(["build", "-p", "corelog", "--bin", "corelog"]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building corelog"
        );
    }
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts corelog; `advertise` makes Metadata point clients elsewhere
    /// (at a proxy).
    fn start(advertise: Option<&str>) -> Self {
        Self::start_with(advertise, &[])
    }

    /// Same, with extra `serve` arguments.
    fn start_with(advertise: Option<&str>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(corelog_bin());
        cmd.args(["serve", "--listen", &addr, "--cores", "1", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(a) = advertise {
            cmd.args(["--advertise", a]);
        }
        cmd.args(extra);
        let child = cmd.spawn().expect("starting corelog");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "corelog did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs loadgen with `args` plus `--json-out`, returns the parsed result.
fn loadgen(args: &[&str]) -> serde_json::Value {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--quiet", "--json-out"])
        .arg(out.path())
        .status()
        .expect("running loadgen");
    assert!(status.success(), "loadgen {args:?} failed");
    serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap()
}

fn high_watermarks(brokers: &str, topic: &str) -> i64 {
    let mut admin = cluster::bootstrap(brokers).unwrap();
    let layout = cluster::topic_layout(&mut admin, topic).unwrap();
    cluster::list_offsets(&layout, &layout.partitions(), -1)
        .unwrap()
        .values()
        .sum()
}

const CONFLUENT_PRODUCER: &str = r#"
import json, sys, time
from confluent_kafka import Producer
brokers, topic, rate, seconds, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
p = Producer({"bootstrap.servers": brokers, "acks": "1", "linger.ms": 5, "batch.size": 65536,
              "compression.type": "none", "queue.buffering.max.kbytes": 1048576})
acked = [0]
errors = [0]
def done(err, msg):
    if err is None: acked[0] += 1
    else: errors[0] += 1
payload = bytes(range(256)) * (size // 256)
start = time.perf_counter()
sent = 0
while True:
    now = time.perf_counter() - start
    if now >= seconds: break
    due = min(int(now * rate) + 1, int(seconds * rate))
    while sent < due:
        try:
            p.produce(topic, payload, on_delivery=done)
            sent += 1
        except BufferError:
            p.poll(0.001)
    p.poll(0)
    time.sleep(0.0005)
p.flush(30)
elapsed = time.perf_counter() - start
print(json.dumps({"sent": sent, "acked": acked[0], "errors": errors[0], "seconds": elapsed}))
"#;

fn python() -> Option<PathBuf> {
    let py = workspace().join(".venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import confluent_kafka"])
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// Same open-loop workload for both clients: 1 KiB values at 20,000 msgs/s
/// for 4 s, acks=1, linger 5 ms, 64 KiB batches, 3 partitions. Compared:
/// each client's own achieved rate (acked messages over its run time), and
/// each against the broker's count of what arrived (high watermarks).
#[test]
fn throughput_agrees_with_confluent_kafka_and_the_broker_on_a_rate_limited_run() {
    let _guard = serial();
    let Some(py) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the test venv (bash scripts/install-test-deps.sh)"
        );
        eprintln!("SKIPPED: no .venv with confluent_kafka; run bash scripts/install-test-deps.sh");
        return;
    };
    let broker = Broker::start(None);
    let (rate, seconds) = (20_000.0, 4.0);
    let r = loadgen(&[
        "produce",
        "--brokers",
        &broker.addr,
        "--topic",
        "agree-lg",
        "--create-partitions",
        "3",
        "--acks",
        "1",
        "--rate",
        "20000",
        "--linger-ms",
        "5",
        "--batch-bytes",
        "64k",
        "--message-size",
        "1024",
        "--duration",
        "4",
        "--warmup",
        "0",
    ]);
    let lg_acked = r["produce"]["msgs"].as_u64().unwrap();
    let lg_rate = r["produce"]["msgs_per_s"].as_f64().unwrap();
    assert_eq!(r["mode"], "open-loop");
    assert!(r["produce"]["errors"].as_object().unwrap().is_empty());
    assert_eq!(
        high_watermarks(&broker.addr, "agree-lg"),
        lg_acked as i64,
        "loadgen's count = broker's"
    );

    let mut admin = cluster::bootstrap(&broker.addr).unwrap();
    cluster::create_topic(&mut admin, "agree-ck", 3, &[]).unwrap();
    let out = Command::new(py)
        .args([
            "-c",
            CONFLUENT_PRODUCER,
            &broker.addr,
            "agree-ck",
            "20000",
            "4",
            "1024",
        ])
        .output()
        .expect("running confluent-kafka");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ck_acked = ck["acked"].as_u64().unwrap();
    let ck_rate = ck_acked as f64 / ck["seconds"].as_f64().unwrap();
    assert_eq!(ck["errors"], 0);
    assert_eq!(high_watermarks(&broker.addr, "agree-ck"), ck_acked as i64);

    eprintln!("loadgen {lg_rate:.0} msgs/s ({lg_acked} acked), confluent-kafka {ck_rate:.0} msgs/s ({ck_acked} acked)");
    for (who, got) in [("loadgen", lg_rate), ("confluent-kafka", ck_rate)] {
        assert!(
            (got - rate).abs() / rate < 0.10,
            "{who} sustained {got:.0} of {rate} msgs/s"
        );
    }
    assert!(
        (lg_rate - ck_rate).abs() / ck_rate < 0.10,
        "loadgen {lg_rate:.0} vs confluent-kafka {ck_rate:.0}"
    );
    let expected = (rate * seconds) as u64;
    assert!(
        lg_acked.abs_diff(expected) <= expected / 100,
        "loadgen acked {lg_acked} of {expected}"
    );
}

/// A TCP proxy in front of the broker. Bytes from the client pass at once;
/// each chunk from the broker is held until `release(arrival)`.
struct Proxy {
    addr: String,
}

impl Proxy {
    fn start(
        broker: Arc<Mutex<Option<String>>>,
        release: fn(Instant, Instant) -> Instant,
    ) -> (Self, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let l2 = listener.try_clone().unwrap();
        let origin = Instant::now();
        thread::spawn(move || {
            for client in l2.incoming() {
                let Ok(client) = client else { return };
                let Some(target) = broker.lock().unwrap().clone() else {
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                delayed_pipe(upstream, client, origin, release);
            }
        });
        (Self { addr }, listener)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

fn delayed_pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    origin: Instant,
    release: fn(Instant, Instant) -> Instant,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((release(origin, Instant::now()), buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (at, bytes) in rx {
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
    });
}

/// Starts a proxy and a broker that advertises the proxy, so every
/// connection loadgen makes (bootstrap and leaders) goes through it.
fn broker_behind_proxy(release: fn(Instant, Instant) -> Instant) -> (Broker, Proxy) {
    let target = Arc::new(Mutex::new(None));
    let (proxy, _listener) = Proxy::start(target.clone(), release);
    let broker = Broker::start(Some(&proxy.addr));
    *target.lock().unwrap() = Some(broker.addr.clone());
    (broker, proxy)
}

const INJECTED: Duration = Duration::from_millis(20);

#[test]
fn produce_latency_shows_a_20ms_delay_injected_on_every_broker_response() {
    let _guard = serial();
    let (_broker, proxy) = broker_behind_proxy(|_, arrived| arrived + INJECTED);
    let r = loadgen(&[
        "produce",
        "--brokers",
        &proxy.addr,
        "--topic",
        "delay",
        "--create-partitions",
        "1",
        "--acks",
        "1",
        "--rate",
        "200",
        "--linger-ms",
        "0",
        "--max-inflight",
        "10",
        "--duration",
        "3",
        "--warmup",
        "0.5",
    ]);
    let p50 = r["produce"]["latency"]["p50_ms"].as_f64().unwrap();
    let p90 = r["produce"]["latency"]["p90_ms"].as_f64().unwrap();
    eprintln!("injected 20 ms: p50 {p50:.2} ms, p90 {p90:.2} ms");
    assert!(p50 >= 20.0, "p50 {p50} ms is below the injected 20 ms");
    assert!(p50 < 25.0, "p50 {p50} ms is far above the injected 20 ms");
    // Loose: a busy 2-core host delays the proxy's own threads too.
    assert!(p90 < 60.0, "p90 {p90} ms");
}

/// The proxy holds every broker response for the whole second 2.0..3.0 s
/// after it started. With one request in flight, a closed-loop client would
/// send nothing during the stall and record one slow request; the open-loop
/// schedule keeps creating messages, and each one's latency counts from when
/// it was due, so about a quarter of a 4 s run sees 0..1 s of stall.
#[test]
fn an_open_loop_run_measures_a_stall_that_coordinated_omission_would_hide() {
    let _guard = serial();
    fn stall(origin: Instant, arrived: Instant) -> Instant {
        let (from, to) = (
            origin + Duration::from_secs(2),
            origin + Duration::from_secs(3),
        );
        if arrived >= from && arrived < to {
            to
        } else {
            arrived
        }
    }
    let (_broker, proxy) = broker_behind_proxy(stall);
    let r = loadgen(&[
        "produce",
        "--brokers",
        &proxy.addr,
        "--topic",
        "stall",
        "--create-partitions",
        "1",
        "--acks",
        "1",
        "--rate",
        "1000",
        "--linger-ms",
        "0",
        "--max-inflight",
        "1",
        "--duration",
        "4",
        "--warmup",
        "0",
    ]);
    let l = &r["produce"]["latency"];
    let (p50, p90, max) = (
        l["p50_ms"].as_f64().unwrap(),
        l["p90_ms"].as_f64().unwrap(),
        l["max_ms"].as_f64().unwrap(),
    );
    eprintln!("1 s stall: p50 {p50:.2} ms, p90 {p90:.1} ms, max {max:.1} ms");
    assert!(max >= 700.0, "the stalled request itself: max {max} ms");
    assert!(
        p90 >= 250.0,
        "messages due during the stall must carry it: p90 {p90} ms"
    );
    assert!(p50 < 50.0, "most of the run is unaffected: p50 {p50} ms");
}

/// Compressed batches, keyed messages and varied sizes through the real
/// broker: everything acked is consumed, with no errors, for each codec;
/// acks=0 and closed-loop runs complete too.
#[test]
fn every_codec_keyed_and_sized_workload_round_trips_through_the_broker() {
    let _guard = serial();
    let broker = Broker::start(None);
    for (i, codec) in ["none", "lz4", "zstd"].iter().enumerate() {
        let topic = format!("codec-{codec}");
        let r = loadgen(&[
            "e2e",
            "--brokers",
            &broker.addr,
            "--topic",
            &topic,
            "--create-partitions",
            "4",
            "--acks",
            "all",
            "--rate",
            "3000",
            "--compression",
            codec,
            "--keys",
            "100",
            "--message-size",
            "uniform:16-3000",
            "--payload",
            "text",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--seed",
            &i.to_string(),
        ]);
        let produced = r["produce"]["msgs"].as_u64().unwrap();
        assert!(produced >= 2900, "{codec}: {produced} acked");
        assert_eq!(
            r["consume"]["msgs"].as_u64().unwrap(),
            produced,
            "{codec}: consumed all acked"
        );
        assert!(
            r["produce"]["errors"].as_object().unwrap().is_empty(),
            "{codec}"
        );
        assert!(r["consume"]["latency"]["count"].as_u64().unwrap() == produced);
        assert_eq!(high_watermarks(&broker.addr, &topic), produced as i64);
    }
    let r = loadgen(&[
        "produce",
        "--brokers",
        &broker.addr,
        "--topic",
        "acks0",
        "--create-partitions",
        "2",
        "--acks",
        "0",
        "--rate",
        "max",
        "--messages",
        "20000",
        "--warmup",
        "0",
    ]);
    assert_eq!(r["produce"]["msgs"], 20000);
    assert_eq!(r["mode"], "closed-loop (max throughput)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while high_watermarks(&broker.addr, "acks0") < 20000 {
        assert!(
            Instant::now() < deadline,
            "acks=0 messages did not all arrive"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let r = loadgen(&[
        "consume",
        "--brokers",
        &broker.addr,
        "--topic",
        "acks0",
        "--from",
        "earliest",
        "--catch-up",
        "--warmup",
        "0",
    ]);
    assert_eq!(r["consume"]["msgs"], 20000);
}

/// `corelog groups describe GROUP`: partition -> (committed, log end, lag).
fn describe_group(brokers: &str, group: &str) -> std::collections::BTreeMap<i32, (i64, i64, i64)> {
    let out = Command::new(corelog_bin())
        .args(["groups", "--bootstrap-server", brokers, "describe", group])
        .output()
        .expect("corelog groups describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter(|l| l.starts_with(group) && !l.starts_with("GROUP"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f[i].parse::<i64>().unwrap_or_else(|_| panic!("{l}"));
            (num(2) as i32, (num(3), num(4), num(5)))
        })
        .collect()
}

/// Consumer groups: two loadgen consumers in one group read a produced
/// topic exactly once between them, the group's committed offsets end at
/// the log end offsets (lag 0), and later runs with the same group read
/// only what was produced since. Also two concurrent processes sharing a
/// group, and e2e with a group.
#[test]
fn a_consumer_group_consumes_everything_once_and_resumes_from_its_commits() {
    let _guard = serial();
    let broker = Broker::start_with(None, &["--set", "group.initial.rebalance.delay.ms=0"]);
    let addr = broker.addr.as_str();
    let produce = |n: &str| {
        let r = loadgen(&[
            "produce",
            "--brokers",
            addr,
            "--topic",
            "grp",
            "--create-partitions",
            "4",
            "--acks",
            "all",
            "--rate",
            "max",
            "--messages",
            n,
            "--keys",
            "1000",
            "--warmup",
            "0",
        ]);
        assert_eq!(
            r["produce"]["msgs"].as_u64().unwrap(),
            n.parse::<u64>().unwrap()
        );
    };
    let consume = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "consume",
            "--brokers",
            addr,
            "--topic",
            "grp",
            "--group",
            "g1",
            "--from",
            "earliest",
            "--warmup",
            "0",
            "--commit-interval-ms",
            "200",
        ];
        args.extend_from_slice(extra);
        let r = loadgen(&args);
        assert!(r["consume"]["errors"].as_object().unwrap().is_empty());
        r["consume"]["msgs"].as_u64().unwrap()
    };
    let assert_lag_zero = |total: i64| {
        let rows = describe_group(addr, "g1");
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(
            rows.values().all(|(c, e, lag)| c == e && *lag == 0),
            "{rows:?}"
        );
        assert_eq!(rows.values().map(|r| r.1).sum::<i64>(), total);
    };

    produce("20000");
    assert_eq!(consume(&["--consumers", "2", "--catch-up"]), 20000);
    assert_lag_zero(20000);
    // Same group again: nothing old is read.
    assert_eq!(consume(&["--consumers", "2", "--catch-up"]), 0);
    assert_eq!(consume(&["--duration", "1"]), 0);

    // New records only; two processes in the group at once share them.
    produce("10000");
    let other = thread::spawn({
        let addr = addr.to_string();
        move || {
            let r = loadgen(&[
                "consume",
                "--brokers",
                &addr,
                "--topic",
                "grp",
                "--group",
                "g1",
                "--warmup",
                "0",
                "--duration",
                "4",
                "--commit-interval-ms",
                "200",
            ]);
            r["consume"]["msgs"].as_u64().unwrap()
        }
    });
    let here = consume(&["--duration", "4"]);
    let there = other.join().unwrap();
    assert_eq!(here + there, 10000, "{here} + {there}");
    assert_lag_zero(30000);

    // e2e with a group: every acked message is consumed, and committed.
    let r = loadgen(&[
        "e2e",
        "--brokers",
        addr,
        "--topic",
        "grp-e2e",
        "--create-partitions",
        "3",
        "--acks",
        "all",
        "--rate",
        "3000",
        "--keys",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--group",
        "g2",
        "--consumers",
        "2",
    ]);
    let produced = r["produce"]["msgs"].as_u64().unwrap();
    assert_eq!(r["consume"]["msgs"].as_u64().unwrap(), produced);
    let rows = describe_group(addr, "g2");
    assert_eq!(
        rows.values().map(|r| r.0).sum::<i64>(),
        produced as i64,
        "{rows:?}"
    );
    assert!(rows.values().all(|r| r.2 == 0), "{rows:?}");
}
