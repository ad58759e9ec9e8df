//! Command line: `produce`, `consume`, `e2e`, `sweep`, `compare`, `ceiling`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::batch::Compression;
use crate::consumer::{ConsumeOpts, StartAt};
use crate::producer::ProduceOpts;
use crate::run::{self, Length, RunResult, Target};
use crate::workload::{parse_bytes, Keys, Payload, SizeDist};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Open-loop Kafka load generator: HDR latency histograms, sweeps over acks x linger x batch, HTML reports",
    long_about = "Open-loop Kafka load generator. Sends are scheduled at the target rate and latency \
is measured from each message's intended send time, so a stalled broker cannot hide behind a \
slowed-down client (no coordinated omission). `--rate max` is the closed-loop max-throughput mode, \
labelled as such in every output."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce at a rate (open loop) or as fast as possible (--rate max).
    Produce(ProduceCmd),
    /// Consume from earliest or latest; --catch-up stops at the end offsets seen at the start.
    Consume(ConsumeCmd),
    /// Produce and consume at once: produce-ack and end-to-end latency.
    E2e(E2eCmd),
    /// Run a scenario file: a matrix of produce runs; writes results.csv, results.json, report.html.
    Sweep(SweepCmd),
    /// Compare two results.json files cell by cell, with ratios.
    Compare(CompareCmd),
    /// Re-render report.html (and the table) from a results.json.
    Report(ReportCmd),
    /// A fake broker that acks every Produce at once and stores nothing: loadgen's own ceiling.
    Sink(SinkCmd),
    /// Measure a machine ceiling loadgen can measure itself (loopback RTT, sendfile to a socket).
    Ceiling(CeilingCmd),
}

#[derive(Args, Clone)]
pub struct TargetArgs {
    /// Bootstrap brokers, comma separated.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "loadgen")]
    pub topic: String,
    /// Create the topic with this many partitions first (an existing topic is kept).
    #[arg(long)]
    pub create_partitions: Option<i32>,
    /// Replication factor for creation (default: the broker's default.replication.factor).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Topic config for creation, KEY=VALUE (repeatable).
    #[arg(long = "topic-config")]
    pub topic_config: Vec<String>,
}

impl TargetArgs {
    pub fn target(&self) -> Result<Target> {
        Ok(Target {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            create_partitions: self.create_partitions,
            replication_factor: self.replication_factor,
            topic_configs: parse_kv(&self.topic_config)?,
        })
    }
}

pub fn parse_kv(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{kv:?} is not KEY=VALUE"))
        })
        .collect()
}

#[derive(Args, Clone)]
pub struct ProducerArgs {
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Messages per second over all producers, or `max` (closed loop).
    #[arg(long, default_value = "10000")]
    pub rate: String,
    /// How long a batch waits for more records, ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Batch size limit, bytes (64k, 1m ...).
    #[arg(long, default_value = "64k")]
    pub batch_bytes: String,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_inflight: usize,
    /// none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Value size: 1024, uniform:MIN-MAX, exp:MEAN, choice:SIZE=W,...
    #[arg(long, default_value = "1024")]
    pub message_size: String,
    /// none, a key count N, or unique.
    #[arg(long, default_value = "none")]
    pub keys: String,
    /// random (incompressible) or text.
    #[arg(long, default_value = "random")]
    pub payload: String,
    /// Producer connections (one per leader each).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Generator threads the producers are spread over (default: one per producer).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Unsent bytes one producer may buffer (Kafka's buffer.memory).
    #[arg(long, default_value = "32m")]
    pub buffer_bytes: String,
    #[arg(long, default_value = "1m")]
    pub max_request_bytes: String,
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Only these partitions, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Option<Vec<i32>>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl ProducerArgs {
    pub fn opts(&self, topic: &str) -> Result<ProduceOpts> {
        let size: SizeDist = self.message_size.parse()?;
        let producers = self.producers.max(1);
        Ok(ProduceOpts {
            topic: topic.to_string(),
            acks: parse_acks(&self.acks)?,
            linger: Duration::from_millis(self.linger_ms),
            batch_bytes: parse_bytes(&self.batch_bytes)?,
            max_inflight: self.max_inflight.max(1),
            compression: self.compression.parse::<Compression>()?,
            rate: parse_rate(&self.rate, size.mean())?,
            size,
            keys: self.keys.parse::<Keys>()?,
            payload: self.payload.parse::<Payload>()?,
            producers,
            threads: self.threads.unwrap_or(producers).max(1),
            buffer_bytes: parse_bytes(&self.buffer_bytes)?,
            max_request_bytes: parse_bytes(&self.max_request_bytes)?,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            partitions: self.partitions.clone(),
            seed: self.seed,
        })
    }
}

pub fn parse_acks(s: &str) -> Result<i16> {
    Ok(match s {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        _ => bail!("acks must be 0, 1 or all, not {s:?}"),
    })
}

/// `max`, a number of msgs/s (`50000`, `50k`), or a byte rate (`100MB/s`,
/// converted with the mean message size).
pub fn parse_rate(s: &str, mean_message_bytes: f64) -> Result<Option<f64>> {
    let s = s.trim();
    if s == "max" {
        return Ok(None);
    }
    if let Some(mb) = s.strip_suffix("MB/s") {
        let mb: f64 = mb.trim().parse().with_context(|| format!("rate {s:?}"))?;
        return Ok(Some(mb * 1e6 / mean_message_bytes));
    }
    let (num, mult) = match s.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => (s, 1.0),
    };
    let r: f64 = num.parse().with_context(|| format!("rate {s:?}"))?;
    if r <= 0.0 {
        bail!("rate must be positive");
    }
    Ok(Some(r * mult))
}

#[derive(Args, Clone)]
pub struct LengthArgs {
    /// Measured length, seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up, seconds: runs at the same load, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Stop after this many messages instead of --duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// No live line.
    #[arg(long)]
    pub quiet: bool,
    /// Also report this process's CPU use (the broker's pid).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Write the result (with serialized histograms) here as JSON.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

impl LengthArgs {
    fn length(&self) -> Length {
        Length {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            messages: self.messages,
            quiet: self.quiet,
            broker_pid: self.broker_pid,
        }
    }
}

#[derive(Args, Clone)]
pub struct ConsumerArgs {
    /// Consumer connections; partitions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    #[arg(long, default_value_t = 1)]
    pub fetch_min_bytes: i32,
    #[arg(long, default_value = "50m")]
    pub fetch_max_bytes: String,
    #[arg(long, default_value = "1m")]
    pub partition_max_bytes: String,
    /// Consume as members of this consumer group (classic protocol, range
    /// assignment, committed offsets); default: manual assignment.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: how often consumed positions are committed, ms.
    #[arg(long, default_value_t = 1000)]
    pub commit_interval_ms: u64,
}

impl ConsumerArgs {
    fn opts(&self, topic: &str, from: StartAt) -> Result<ConsumeOpts> {
        Ok(ConsumeOpts {
            topic: topic.to_string(),
            partitions: None,
            from,
            consumers: self.consumers,
            max_wait_ms: self.fetch_max_wait_ms,
            min_bytes: self.fetch_min_bytes,
            max_bytes: i32::try_from(parse_bytes(&self.fetch_max_bytes)?)?,
            partition_max_bytes: i32::try_from(parse_bytes(&self.partition_max_bytes)?)?,
            group: self.group.clone(),
            commit_interval: Duration::from_millis(self.commit_interval_ms.max(1)),
        })
    }
}

#[derive(Args)]
struct ProduceCmd {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    #[command(flatten)]
    length: LengthArgs,
}

#[derive(Args)]
struct ConsumeCmd {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// earliest or latest.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop once every partition reached the end offsets seen at the start.
    #[arg(long)]
    catch_up: bool,
    #[command(flatten)]
    length: LengthArgs,
}

#[derive(Args)]
struct E2eCmd {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    #[command(flatten)]
    length: LengthArgs,
}

#[derive(Args)]
struct SweepCmd {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Overrides the scenario's brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Where results.csv, results.json and report.html go.
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Scale every cell's duration and warm-up (0.2 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Overrides the scenario's repeats per cell.
    #[arg(long)]
    repeats: Option<usize>,
    /// Overrides the scenario's rate list (e.g. max,25%).
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<String>>,
    /// Overrides the scenario's acks list (e.g. 1,all).
    #[arg(long, value_delimiter = ',')]
    acks: Option<Vec<String>>,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ReportCmd {
    results: PathBuf,
    /// Default: report.html beside the results file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CompareCmd {
    a: PathBuf,
    b: PathBuf,
}

#[derive(Args)]
struct SinkCmd {
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: String,
    /// Partitions every topic has.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

#[derive(Args)]
struct CeilingCmd {
    /// rtt (loopback TCP ping-pong) or sendfile (page cache to a loopback socket).
    what: String,
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

pub fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Produce(c) => {
            let opts = c.producer.opts(&c.target.topic)?;
            let r = run::produce(
                &c.target.target()?,
                &opts,
                &c.producer.message_size,
                &c.length.length(),
                None,
            )?;
            finish(&r, &c.length)
        }
        Command::E2e(c) => {
            let opts = c.producer.opts(&c.target.topic)?;
            let copts = c.consumer.opts(&c.target.topic, StartAt::Latest)?;
            let r = run::produce(
                &c.target.target()?,
                &opts,
                &c.producer.message_size,
                &c.length.length(),
                Some(&copts),
            )?;
            finish(&r, &c.length)
        }
        Command::Consume(c) => {
            let copts = c.consumer.opts(&c.target.topic, c.from.parse()?)?;
            let r = run::consume(&c.target.target()?, &copts, &c.length.length(), c.catch_up)?;
            finish(&r, &c.length)
        }
        Command::Sweep(c) => crate::sweep::main(
            &c.scenario,
            &crate::sweep::Overrides {
                brokers: c.brokers,
                repeats: c.repeats,
                rates: c.rates,
                acks: c.acks,
                time_scale: c.time_scale,
            },
            &c.out,
            c.broker_pid,
            c.quiet,
        ),
        Command::Compare(c) => crate::compare::main(&c.a, &c.b),
        Command::Report(c) => {
            let r = crate::sweep::load(&c.results)?;
            let out = c
                .out
                .unwrap_or_else(|| c.results.with_file_name("report.html"));
            std::fs::write(&out, crate::report::html(&r)?)?;
            print!("{}", crate::sweep::table(&r));
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Sink(c) => crate::sink::main(&c.listen, c.partitions),
        Command::Ceiling(c) => crate::ceiling::main(&c.what, Duration::from_secs_f64(c.seconds)),
    }
}

fn finish(r: &RunResult, len: &LengthArgs) -> Result<()> {
    run::print_summary(r);
    if let Some(path) = &len.json_out {
        std::fs::write(path, serde_json::to_string_pretty(r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let errors: u64 = r
        .produce
        .iter()
        .chain(&r.consume)
        .flat_map(|s| s.errors.values())
        .sum();
    if errors > 0 {
        eprintln!("loadgen: {errors} messages failed (see errors by code above)");
    }
    Ok(())
}
