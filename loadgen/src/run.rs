//! One measured run: produce, consume, or both (end to end), with warm-up,
//! the live reporter, CPU accounting, and the result record that `sweep`,
//! `compare` and the JSON output share.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, TopicLayout};
use crate::consumer::{ConsumeControl, ConsumeOpts, Consumers, StartAt};
use crate::producer::{self, ProduceOpts, RunShared, Until};
use crate::stats::{self, Recorder, Reporter, Stream, StreamSummary};

/// How long an end-to-end run waits for the consumer to see the last acked
/// message after the producers stopped.
const E2E_TAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and what: the cluster, the topic, and topic creation.
#[derive(Clone, Debug)]
pub struct Target {
    pub brokers: String,
    pub topic: String,
    /// Create the topic with this many partitions first (None: use as is).
    pub create_partitions: Option<i32>,
    /// Replication factor for creation (None: the broker's default).
    pub replication_factor: Option<i16>,
    pub topic_configs: Vec<(String, String)>,
}

impl Target {
    pub fn layout(&self) -> Result<TopicLayout> {
        let mut admin = cluster::bootstrap(&self.brokers)?;
        if let Some(n) = self.create_partitions {
            cluster::create_topic_rf(
                &mut admin,
                &self.topic,
                n,
                self.replication_factor,
                &self.topic_configs,
            )?;
        }
        cluster::topic_layout(&mut admin, &self.topic)
    }
}

/// How long a run lasts.
#[derive(Clone, Debug)]
pub struct Length {
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many messages instead of after `duration`.
    pub messages: Option<u64>,
    pub quiet: bool,
    /// Also account this process's CPU time (e.g. the broker's).
    pub broker_pid: Option<u32>,
}

/// The parameters a result is keyed by, for tables and comparisons.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Params {
    pub acks: String,
    pub linger_ms: u64,
    pub batch_bytes: usize,
    /// "max" (closed loop) or the target in msgs/s.
    pub rate: String,
    pub message_bytes: String,
    pub compression: String,
    pub keys: String,
    pub producers: usize,
    pub max_inflight: usize,
    pub partitions: usize,
}

impl Params {
    pub fn key(&self) -> String {
        format!(
            "acks={} linger={}ms batch={} rate={} size={} comp={} keys={} prod={} inflight={}",
            self.acks,
            self.linger_ms,
            self.batch_bytes,
            self.rate,
            self.message_bytes,
            self.compression,
            self.keys,
            self.producers,
            self.max_inflight
        )
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// "open-loop" or "closed-loop (max throughput)".
    pub mode: String,
    pub params: Params,
    pub target_msgs_per_s: Option<f64>,
    pub produce: Option<StreamSummary>,
    /// Consumption: throughput and end-to-end latency.
    pub consume: Option<StreamSummary>,
    pub generated: u64,
    pub schedule_lag_max_ms: f64,
    /// CPU cores loadgen used on average during the run.
    pub loadgen_cpu_cores: f64,
    pub broker_cpu_cores: Option<f64>,
    pub wall_seconds: f64,
}

pub fn acks_label(acks: i16) -> &'static str {
    match acks {
        0 => "0",
        1 => "1",
        _ => "all",
    }
}

pub fn params_of(opts: &ProduceOpts, size_label: &str, partitions: usize) -> Params {
    Params {
        acks: acks_label(opts.acks).into(),
        linger_ms: opts.linger.as_millis() as u64,
        batch_bytes: opts.batch_bytes,
        rate: opts
            .rate
            .map_or_else(|| "max".into(), |r| format!("{r:.0}")),
        message_bytes: size_label.into(),
        compression: format!("{:?}", opts.compression).to_lowercase(),
        keys: format!("{:?}", opts.keys).to_lowercase(),
        producers: opts.producers,
        max_inflight: opts.max_inflight,
        partitions,
    }
}

struct CpuClock {
    start: Instant,
    own: f64,
    broker: Option<(u32, f64)>,
}

impl CpuClock {
    fn start(broker_pid: Option<u32>) -> Self {
        Self {
            start: Instant::now(),
            own: stats::process_cpu_seconds(),
            broker: broker_pid.and_then(|p| stats::pid_cpu_seconds(p).map(|c| (p, c))),
        }
    }

    fn cores(&self) -> (f64, Option<f64>, f64) {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let own = (stats::process_cpu_seconds() - self.own) / wall;
        let broker = self
            .broker
            .and_then(|(pid, c0)| stats::pid_cpu_seconds(pid).map(|c| (c - c0) / wall));
        (own, broker, wall)
    }
}

/// Produces (and, with `e2e`, consumes the same messages from latest).
pub fn produce(
    target: &Target,
    opts: &ProduceOpts,
    size_label: &str,
    len: &Length,
    e2e: Option<&ConsumeOpts>,
) -> Result<RunResult> {
    let layout = target.layout()?;
    let partitions = opts
        .partitions
        .as_ref()
        .map_or(layout.leaders.len(), Vec::len);
    let produced = Arc::new(Recorder::default());
    let consumed = Arc::new(Recorder::default());
    let control = ConsumeControl::new();
    let consumers = match e2e {
        Some(c) => {
            let mut c = c.clone();
            c.from = StartAt::Latest;
            Some(Consumers::start(
                &c,
                &layout,
                consumed.clone(),
                control.clone(),
            )?)
        }
        None => None,
    };
    let mut streams = vec![Stream {
        name: if opts.acks == 0 { "sent" } else { "acked" },
        recorder: produced.clone(),
    }];
    if consumers.is_some() {
        streams.push(Stream {
            name: "e2e",
            recorder: consumed.clone(),
        });
    }
    let shared = RunShared::new(produced.clone(), opts.payload, opts.seed);
    let cpu = CpuClock::start(len.broker_pid);
    let length = len.messages.is_none().then_some(len.duration);
    let reporter = Reporter::start(streams, len.warmup, length, len.quiet);
    let until = match len.messages {
        Some(n) => Until::Messages(n),
        None => Until::Deadline(Instant::now() + len.warmup + len.duration),
    };
    let outcome = producer::run(opts, &layout, &shared, until);
    if let (Ok(_), Some(_)) = (&outcome, &consumers) {
        let acked = shared.acked_total.load(Ordering::Acquire);
        control.target_msgs.store(acked, Ordering::Release);
        let deadline = Instant::now() + E2E_TAIL_TIMEOUT;
        while control.consumed.load(Ordering::Acquire) < acked && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let (own, broker, wall) = cpu.cores();
    control.stop.store(true, Ordering::Release);
    let totals = reporter.finish();
    if let Some(c) = consumers {
        c.join()?;
    }
    let outcome = outcome?;
    let mode = match opts.rate {
        Some(_) => "open-loop",
        None => "closed-loop (max throughput)",
    };
    Ok(RunResult {
        mode: mode.into(),
        params: params_of(opts, size_label, partitions),
        target_msgs_per_s: opts.rate,
        produce: Some(totals[0].summary()),
        consume: totals.get(1).map(stats::Totals::summary),
        generated: outcome.generated,
        schedule_lag_max_ms: outcome.schedule_lag_max.as_secs_f64() * 1e3,
        loadgen_cpu_cores: own,
        broker_cpu_cores: broker,
        wall_seconds: wall,
    })
}

/// Consumes on its own: from earliest or latest, until caught up with the
/// end offsets seen at the start, a message count, or the duration.
pub fn consume(
    target: &Target,
    opts: &ConsumeOpts,
    len: &Length,
    catch_up: bool,
) -> Result<RunResult> {
    let layout = target.layout()?;
    let recorder = Arc::new(Recorder::default());
    let control = ConsumeControl::new();
    control.until_caught_up.store(catch_up, Ordering::Release);
    if let Some(n) = len.messages {
        control.target_msgs.store(n, Ordering::Release);
    }
    let cpu = CpuClock::start(len.broker_pid);
    let streams = vec![Stream {
        name: "consumed",
        recorder: recorder.clone(),
    }];
    let length = (!catch_up && len.messages.is_none()).then_some(len.duration);
    // A catch-up is measured whole: a backlog read within the warm-up
    // would otherwise be reported as 0 messages.
    let warmup = if catch_up { Duration::ZERO } else { len.warmup };
    let reporter = Reporter::start(streams, warmup, length, len.quiet);
    let consumers = Consumers::start(opts, &layout, recorder, control.clone())?;
    let backlog: i64 = consumers
        .end_offsets
        .iter()
        .map(|(p, end)| end - consumers.start_offsets.get(p).copied().unwrap_or(*end))
        .sum();
    // A group resumes from its committed offsets, which may leave nothing
    // to consume: that is an answer, not a usage error.
    if catch_up && backlog <= 0 && opts.group.is_none() {
        bail!(
            "--catch-up: the topic has nothing to consume from {:?}",
            opts.from
        );
    }
    let deadline = Instant::now() + len.warmup + len.duration;
    if !catch_up && len.messages.is_none() {
        while Instant::now() < deadline && !control.stop.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(20));
        }
        control.stop.store(true, Ordering::Release);
    }
    let joined = consumers.join();
    let (own, broker, wall) = cpu.cores();
    let totals = reporter.finish();
    joined?;
    Ok(RunResult {
        mode: if catch_up { "catch-up" } else { "consume" }.into(),
        consume: Some(totals[0].summary()),
        loadgen_cpu_cores: own,
        broker_cpu_cores: broker,
        wall_seconds: wall,
        ..RunResult::default()
    })
}

/// Prints a run's summary to stdout.
pub fn print_summary(r: &RunResult) {
    println!("mode: {}", r.mode);
    if r.mode != "catch-up" && r.mode != "consume" {
        println!("params: {}", r.params.key());
    }
    let show = |name: &str, s: &StreamSummary, what: &str| {
        let l = &s.latency;
        println!(
            "{name}: {} msgs in {:.1}s = {:.0} msgs/s, {:.1} MB/s payload ({:.1} MB/s on the wire)",
            s.msgs, s.seconds, s.msgs_per_s, s.mb_per_s, s.wire_mb_per_s
        );
        if l.count > 0 {
            println!(
                "  {what} latency: p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} (n={})",
                stats::fmt_ms(l.p50_ms),
                stats::fmt_ms(l.p90_ms),
                stats::fmt_ms(l.p99_ms),
                stats::fmt_ms(l.p999_ms),
                stats::fmt_ms(l.p9999_ms),
                stats::fmt_ms(l.max_ms),
                l.count
            );
        }
        if !s.errors.is_empty() {
            println!("  errors by Kafka error code: {:?}", s.errors);
        }
    };
    if let Some(p) = &r.produce {
        let what = if r.params.acks == "0" {
            "send (acks=0: until written to the socket)"
        } else {
            "produce-ack"
        };
        show("produce", p, what);
    }
    if let Some(c) = &r.consume {
        show("consume", c, "end-to-end");
    }
    if let Some(t) = r.target_msgs_per_s {
        let got = r.produce.as_ref().map_or(0.0, |p| p.msgs_per_s);
        println!(
            "target {t:.0} msgs/s, achieved {got:.0} ({:.1}%), generator behind schedule at most {:.1} ms",
            100.0 * got / t,
            r.schedule_lag_max_ms
        );
    }
    print!("cpu: loadgen {:.2} cores", r.loadgen_cpu_cores);
    if let Some(b) = r.broker_cpu_cores {
        print!(", broker {b:.2} cores");
    }
    println!();
}
