//! Measurement: HDR histograms of latency (nanoseconds), counters of
//! messages, bytes and errors by Kafka error code, a reporter thread that
//! prints a live line every second, and the summary a run ends with.
//!
//! Threads record into a `Recorder` (one mutex per histogram, taken once per
//! response, never contended for long); the reporter swaps the interval
//! histograms out every second and folds them into the run totals once the
//! warm-up is over.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Histogram range: 1 us to 1 hour, 3 significant digits.
const LATENCY_NS_MIN: u64 = 1_000;
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
const LATENCY_SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_NS_MIN, LATENCY_NS_MAX, LATENCY_SIGFIG)
        .expect("static histogram bounds are valid")
}

/// Counters and histograms shared by the threads of one run.
pub struct Recorder {
    pub latency: Mutex<Histogram<u64>>,
    pub msgs: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub wire_bytes: AtomicU64,
    pub errors: Mutex<BTreeMap<i16, u64>>,
    /// When `add` was last called, ns since `clock_origin()`.
    last_add_ns: AtomicU64,
}

/// A process-wide origin for timestamps kept in atomics.
pub fn clock_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn ns_since_origin(t: Instant) -> u64 {
    t.saturating_duration_since(clock_origin()).as_nanos() as u64
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: Mutex::new(new_histogram()),
            msgs: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            last_add_ns: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    pub fn add(&self, msgs: u64, payload_bytes: u64, wire_bytes: u64) {
        self.msgs.fetch_add(msgs, Ordering::Relaxed);
        self.payload_bytes
            .fetch_add(payload_bytes, Ordering::Relaxed);
        self.wire_bytes.fetch_add(wire_bytes, Ordering::Relaxed);
        self.last_add_ns
            .fetch_max(ns_since_origin(Instant::now()), Ordering::Relaxed);
    }

    /// When messages were last counted.
    pub fn last_add(&self) -> Instant {
        clock_origin() + std::time::Duration::from_nanos(self.last_add_ns.load(Ordering::Relaxed))
    }

    pub fn error(&self, code: i16, msgs: u64) {
        *self
            .errors
            .lock()
            .expect("poisoned")
            .entry(code)
            .or_default() += msgs;
    }

    fn take(&self) -> Interval {
        let mut h = self.latency.lock().expect("poisoned");
        let latency = std::mem::replace(&mut *h, new_histogram());
        drop(h);
        Interval {
            latency,
            msgs: self.msgs.swap(0, Ordering::Relaxed),
            payload_bytes: self.payload_bytes.swap(0, Ordering::Relaxed),
            wire_bytes: self.wire_bytes.swap(0, Ordering::Relaxed),
            errors: std::mem::take(&mut *self.errors.lock().expect("poisoned")),
        }
    }
}

struct Interval {
    latency: Histogram<u64>,
    msgs: u64,
    payload_bytes: u64,
    wire_bytes: u64,
    errors: BTreeMap<i16, u64>,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e6,
        }
    }
}

/// The measured part of one stream (produce acks, or consumption).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamSummary {
    pub seconds: f64,
    pub msgs: u64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub wire_mb_per_s: f64,
    /// Error code -> messages.
    pub errors: BTreeMap<i16, u64>,
    pub latency: Percentiles,
    /// The latency histogram, V2 deflate serialized, base64.
    pub histogram: String,
}

/// Totals of one stream after warm-up.
pub struct Totals {
    pub latency: Histogram<u64>,
    pub msgs: u64,
    pub payload_bytes: u64,
    pub wire_bytes: u64,
    pub errors: BTreeMap<i16, u64>,
    pub seconds: f64,
}

impl Totals {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            msgs: 0,
            payload_bytes: 0,
            wire_bytes: 0,
            errors: BTreeMap::new(),
            seconds: 0.0,
        }
    }

    fn fold(&mut self, i: &Interval) {
        self.latency.add(&i.latency).expect("same bounds");
        self.msgs += i.msgs;
        self.payload_bytes += i.payload_bytes;
        self.wire_bytes += i.wire_bytes;
        for (code, n) in &i.errors {
            *self.errors.entry(*code).or_default() += n;
        }
    }

    pub fn summary(&self) -> StreamSummary {
        let s = self.seconds.max(1e-9);
        StreamSummary {
            seconds: self.seconds,
            msgs: self.msgs,
            msgs_per_s: self.msgs as f64 / s,
            mb_per_s: self.payload_bytes as f64 / s / 1e6,
            wire_mb_per_s: self.wire_bytes as f64 / s / 1e6,
            errors: self.errors.clone(),
            latency: Percentiles::of(&self.latency),
            histogram: encode_histogram(&self.latency),
        }
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut raw = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut raw)
        .expect("serializing into a Vec cannot fail");
    base64_encode(&raw)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>> {
    let raw = base64_decode(s).context("histogram base64")?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
    Ok(h)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64
            .iter()
            .position(|x| *x == c)
            .with_context(|| format!("bad base64 byte {c}"))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// One stream the reporter follows: a name for the live line and its recorder.
pub struct Stream {
    pub name: &'static str,
    pub recorder: Arc<Recorder>,
}

/// Prints a live line per second and accumulates totals after the warm-up.
pub struct Reporter {
    handle: Option<thread::JoinHandle<Vec<Totals>>>,
    stop: Arc<AtomicBool>,
}

impl Reporter {
    /// `length` is the run's measured length for the progress bar (None for
    /// an open-ended run); `quiet` drops the live line.
    pub fn start(
        streams: Vec<Stream>,
        warmup: Duration,
        length: Option<Duration>,
        quiet: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::Builder::new()
            .name("reporter".into())
            .spawn(move || report_loop(&streams, warmup, length, quiet, &stop2))
            .expect("spawning the reporter");
        Self {
            handle: Some(handle),
            stop,
        }
    }

    /// Stops and returns the totals, one per stream, in order.
    pub fn finish(mut self) -> Vec<Totals> {
        self.stop.store(true, Ordering::Release);
        self.handle
            .take()
            .expect("finish once")
            .join()
            .expect("reporter panicked")
    }
}

fn report_loop(
    streams: &[Stream],
    warmup: Duration,
    length: Option<Duration>,
    quiet: bool,
    stop: &AtomicBool,
) -> Vec<Totals> {
    let start = Instant::now();
    clock_origin();
    let tty = std::io::stderr().is_terminal();
    let mut totals: Vec<Totals> = streams.iter().map(|_| Totals::new()).collect();
    let mut measuring_since: Option<Instant> = warmup.is_zero().then_some(start);
    let mut next_tick = start + Duration::from_secs(1).min(warmup.max(Duration::from_millis(1)));
    if warmup.is_zero() {
        next_tick = start + Duration::from_secs(1);
    }
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let now = Instant::now();
        if !stopping && now < next_tick {
            thread::sleep((next_tick - now).min(Duration::from_millis(20)));
            continue;
        }
        let intervals: Vec<Interval> = streams.iter().map(|s| s.recorder.take()).collect();
        let elapsed = now - start;
        if let Some(since) = measuring_since {
            for ((t, i), s) in totals.iter_mut().zip(&intervals).zip(streams) {
                t.fold(i);
                // The measured window ends with the last message counted,
                // so a drain tail or an idle wait does not dilute the rate.
                let end = if stopping {
                    s.recorder.last_add().min(now)
                } else {
                    now
                };
                t.seconds = end.saturating_duration_since(since).as_secs_f64();
            }
        } else if elapsed >= warmup {
            measuring_since = Some(now);
        }
        if !quiet {
            let line = live_line(
                streams,
                &intervals,
                elapsed,
                warmup,
                length,
                measuring_since.is_some(),
            );
            let mut err = std::io::stderr().lock();
            let _ = if tty && !stopping {
                write!(err, "\r\x1b[2K{line}")
            } else {
                writeln!(err, "{}{line}", if tty { "\r\x1b[2K" } else { "" })
            };
            let _ = err.flush();
        }
        if stopping {
            return totals;
        }
        next_tick = next_tick_after(start, warmup, measuring_since, now);
    }
}

/// Ticks fall on whole seconds from the start during the warm-up, exactly at
/// its end, then on whole seconds from the end of the warm-up.
fn next_tick_after(
    start: Instant,
    warmup: Duration,
    since: Option<Instant>,
    now: Instant,
) -> Instant {
    let base = since.unwrap_or(start);
    let whole = (now - base).as_secs() + 1;
    let tick = base + Duration::from_secs(whole);
    match since {
        Some(_) => tick,
        None => tick.min(start + warmup),
    }
}

fn live_line(
    streams: &[Stream],
    intervals: &[Interval],
    elapsed: Duration,
    warmup: Duration,
    length: Option<Duration>,
    measuring: bool,
) -> String {
    let mut line = String::new();
    let t = elapsed.as_secs_f64();
    match length {
        Some(len) if measuring || warmup.is_zero() => {
            let done = ((t - warmup.as_secs_f64()) / len.as_secs_f64()).clamp(0.0, 1.0);
            let filled = (done * 20.0).round() as usize;
            line.push_str(&format!(
                "[{}{}] {:3.0}% {:5.1}s ",
                "#".repeat(filled),
                "-".repeat(20 - filled),
                done * 100.0,
                t
            ));
        }
        _ if !measuring => line.push_str(&format!("[warm-up] {t:5.1}s ")),
        _ => line.push_str(&format!("{t:6.1}s ")),
    }
    for (s, i) in streams.iter().zip(intervals) {
        let p = Percentiles::of(&i.latency);
        line.push_str(&format!(
            "| {} {:>9.0} msg/s {:>8.1} MB/s p50 {} p99 {} max {}",
            s.name,
            i.msgs as f64,
            i.payload_bytes as f64 / 1e6,
            fmt_ms(p.p50_ms),
            fmt_ms(p.p99_ms),
            fmt_ms(p.max_ms)
        ));
        let errors: u64 = i.errors.values().sum();
        if errors > 0 {
            line.push_str(&format!(" errors {errors} {:?}", i.errors));
        }
        line.push(' ');
    }
    line
}

/// A latency in ms, printed with a unit that keeps 3 digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms == 0.0 {
        "-".into()
    } else if ms < 1.0 {
        format!("{:.0}us", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds (user + system) of another process, from /proc.
pub fn pid_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_json_round_trip() {
        let mut h = new_histogram();
        for v in [1_000u64, 20_000_000, 20_500_000, 3_000_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
    }
}
