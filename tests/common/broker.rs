//! The broker process: spawn on a free port, wait until it accepts, kill,
//! restart on the same data dir, and peek at its files and /proc status.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A running `corelog serve`. SIGKILLed on drop; the temp dir goes with it.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub settings: Vec<String>,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Broker {
    /// One shard, the given `--set key=value` overrides.
    pub fn start(settings: &[&str]) -> Broker {
        Self::start_with(1, settings)
    }

    pub fn start_with(cores: usize, settings: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("broker.log");
        let mut b = Broker {
            child: None,
            addr: "127.0.0.1:1".parse().unwrap(),
            data_dir,
            cores,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            log_path,
            _tmp: tmp,
        };
        b.spawn_ready();
        b
    }

    /// Spawns the binary on a fresh free port and waits until it accepts.
    /// A lost race for the port (another test grabbed it) is retried.
    fn spawn_ready(&mut self) {
        for _attempt in 0..5 {
            self.addr = free_addr();
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .expect("broker log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_corelog"));
            cmd.arg("serve")
                .arg("--listen")
                .arg(self.addr.to_string())
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--cores")
                .arg(self.cores.to_string());
            for s in &self.settings {
                cmd.arg("--set").arg(s);
            }
            cmd.env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            self.child = Some(cmd.spawn().expect("spawn corelog"));
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                    let tail = self.log_tail(20);
                    if tail.contains("Address already in use") || tail.contains("binding") {
                        break; // retry on another port
                    }
                    panic!("corelog exited during startup with {status}\n--- log ---\n{tail}");
                }
                if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.is_alive() {
                panic!(
                    "corelog did not accept within {STARTUP_TIMEOUT:?}\n--- log ---\n{}",
                    self.log_tail(40)
                );
            }
        }
        panic!(
            "corelog could not bind a free port\n--- log ---\n{}",
            self.log_tail(40)
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Panics with the log tail unless the process is still running.
    pub fn assert_alive(&mut self) {
        if !self.is_alive() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "corelog died (status {status:?})\n--- log ---\n{}",
                self.log_tail(200)
            );
        }
    }

    /// SIGKILL: no shutdown path runs, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (panics if it takes longer than `IO_TIMEOUT`).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("broker running");
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "corelog ignored SIGTERM for {IO_TIMEOUT:?}\n--- log ---\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and insist on exit code 0.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "corelog exited with {status} on SIGTERM\n--- log ---\n{}",
            self.log_tail(40)
        );
    }

    /// Starts the binary again on the same data dir (after `kill9` or `stop`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped broker");
        self.spawn_ready();
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Opens a plain socket with timeouts, for hand-crafted bytes.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// The partition's `.log` files, sorted by base offset.
    pub fn log_files(&self, topic: &str, partition: i32) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.partition_dir(topic, partition))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let text =
            fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} missing from /proc status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The property every bad-input test ends with: the process is alive and
    /// a fresh, well-behaved client gets ApiVersions, creates a topic,
    /// produces and fetches back exactly what it wrote.
    pub fn assert_serves_a_well_behaved_client(&mut self) {
        self.assert_alive();
        let mut c = self.client();
        let av = c.api_versions(API_VERSIONS_V);
        assert_eq!(av.error_code, code::NONE, "ApiVersions error");
        assert!(
            av.api_keys.iter().any(|k| k.api_key == 0),
            "ApiVersions lists Produce"
        );
        let topic = format!("probe-{}", unique());
        let err = c.create_topic(&topic, 1, 1, &[]);
        assert_eq!(err, code::NONE, "CreateTopics {topic}");
        let values: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("{topic}-value-{i}").into_bytes())
            .collect();
        let batch = batch_of_values(&values, now_ms());
        let p = c.produce(&topic, 0, -1, batch);
        assert_eq!(p.error_code, code::NONE, "produce to {topic}");
        assert_eq!(p.base_offset, 0);
        let got = c.fetch_all(&topic, 0, 0, 3);
        let got_values: Vec<Vec<u8>> = got
            .iter()
            .map(|r| r.value.clone().unwrap().to_vec())
            .collect();
        assert_eq!(got_values, values, "fetched what was produced");
        self.assert_alive();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- corelog log tail ({}) ---\n{}",
                self.addr,
                self.log_tail(30)
            );
        }
        self.kill9();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap()
}

/// A number unique within this test process (for topic names).
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until `f` holds, or panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
