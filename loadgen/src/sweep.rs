//! `loadgen sweep SCENARIO.toml`: a matrix of produce runs (acks x linger x
//! batch size x rate x message size), each cell warmed up, repeated, and
//! summarised by the median throughput over its repeats and the merged
//! latency histograms. Writes a terminal table, results.csv, results.json
//! (with histograms) and report.html.
//!
//! A rate may be a percentage ("25%"): the sweep then first measures the
//! closed-loop maximum of the same (acks, linger, batch, size) cell and runs
//! at that fraction of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::{parse_acks, parse_rate};
use crate::consumer::{ConsumeOpts, StartAt};
use crate::producer::ProduceOpts;
use crate::run::{self, Length, Params, RunResult, Target};
use crate::stats::{self, Percentiles, StreamSummary};
use crate::workload::{parse_bytes, SizeDist};

/// A string or a number in the scenario file (`64k` or 65536).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Num(f64),
    Str(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Num(n) => format!("{n}"),
            Value::Str(s) => s.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_brokers")]
    pub brokers: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of each cell's topic (default: the broker's default).
    #[serde(default)]
    pub replication_factor: Option<i16>,
    #[serde(default)]
    pub topic_configs: BTreeMap<String, String>,
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    #[serde(default = "default_duration")]
    pub duration_s: f64,
    #[serde(default = "default_repeats")]
    pub repeats: usize,
    /// Also consume (from latest) and record end-to-end latency.
    #[serde(default)]
    pub e2e: bool,
    #[serde(default)]
    pub producer: ProducerDefaults,
    pub matrix: Matrix,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_prefix() -> String {
    "sweep".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_warmup() -> f64 {
    2.0
}
fn default_duration() -> f64 {
    8.0
}
fn default_repeats() -> usize {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerDefaults {
    pub producers: usize,
    pub max_inflight: usize,
    pub compression: String,
    pub keys: String,
    pub payload: String,
    pub buffer_bytes: String,
    pub max_request_bytes: String,
    pub consumers: usize,
}

impl Default for ProducerDefaults {
    fn default() -> Self {
        Self {
            producers: 1,
            max_inflight: 5,
            compression: "none".into(),
            keys: "none".into(),
            payload: "random".into(),
            buffer_bytes: "32m".into(),
            max_request_bytes: "1m".into(),
            consumers: 1,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub acks: Vec<Value>,
    pub linger_ms: Vec<u64>,
    pub batch_bytes: Vec<Value>,
    #[serde(default = "default_rates")]
    pub rate: Vec<Value>,
    #[serde(default = "default_sizes")]
    pub message_size: Vec<Value>,
}

fn default_rates() -> Vec<Value> {
    vec![Value::Str("max".into())]
}
fn default_sizes() -> Vec<Value> {
    vec![Value::Num(1024.0)]
}

/// One cell: its repeats and their combination.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Params with the rate as written in the scenario ("25%", "max", ...):
    /// what `compare` matches cells by.
    pub key: String,
    pub params: Params,
    pub mode: String,
    /// Median over repeats.
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub runs_msgs_per_s: Vec<f64>,
    /// From the histogram merged over repeats.
    pub produce_latency: Percentiles,
    pub produce_histogram: String,
    pub e2e_latency: Option<Percentiles>,
    pub e2e_histogram: Option<String>,
    pub errors: BTreeMap<i16, u64>,
    pub loadgen_cpu_cores: f64,
    pub broker_cpu_cores: Option<f64>,
    pub schedule_lag_max_ms: f64,
    pub runs: Vec<RunResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepResult {
    pub scenario: String,
    pub description: String,
    pub started: String,
    pub host: String,
    pub brokers: String,
    pub loadgen_version: String,
    pub cells: Vec<Cell>,
}

/// Command-line changes to a scenario.
pub struct Overrides {
    pub brokers: Option<String>,
    pub repeats: Option<usize>,
    pub rates: Option<Vec<String>>,
    pub acks: Option<Vec<String>>,
    pub time_scale: f64,
}

pub fn main(
    scenario_path: &Path,
    over: &Overrides,
    out: &Path,
    broker_pid: Option<u32>,
    quiet: bool,
) -> Result<()> {
    let time_scale = over.time_scale;
    let text = std::fs::read_to_string(scenario_path)
        .with_context(|| format!("reading {}", scenario_path.display()))?;
    let mut scenario: Scenario =
        toml::from_str(&text).with_context(|| format!("parsing {}", scenario_path.display()))?;
    if let Some(b) = &over.brokers {
        scenario.brokers = b.clone();
    }
    if let Some(n) = over.repeats {
        scenario.repeats = n;
    }
    if let Some(r) = &over.rates {
        scenario.matrix.rate = r.iter().cloned().map(Value::Str).collect();
    }
    if let Some(a) = &over.acks {
        scenario.matrix.acks = a.iter().cloned().map(Value::Str).collect();
    }
    std::fs::create_dir_all(out)?;
    let result = sweep(&scenario, broker_pid, time_scale, quiet)?;
    println!("{}", table(&result));
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(out.join("results.csv"), csv(&result))?;
    std::fs::write(out.join("report.html"), crate::report::html(&result)?)?;
    println!(
        "wrote {0}/results.csv, {0}/results.json, {0}/report.html",
        out.display()
    );
    Ok(())
}

/// The cells of the matrix, in run order; rates stay as written.
fn expand(s: &Scenario) -> Vec<(String, u64, usize, String, String)> {
    let mut cells = Vec::new();
    for acks in &s.matrix.acks {
        for size in &s.matrix.message_size {
            for linger in &s.matrix.linger_ms {
                for batch in &s.matrix.batch_bytes {
                    for rate in &s.matrix.rate {
                        let batch = parse_bytes(&batch.text()).unwrap_or(0);
                        cells.push((acks.text(), *linger, batch, rate.text(), size.text()));
                    }
                }
            }
        }
    }
    cells
}

pub fn sweep(
    s: &Scenario,
    broker_pid: Option<u32>,
    time_scale: f64,
    quiet: bool,
) -> Result<SweepResult> {
    if s.repeats == 0 {
        bail!("repeats must be at least 1");
    }
    let cells = expand(s);
    let mut done: Vec<Cell> = Vec::new();
    // (acks, linger, batch, size) -> measured closed-loop max msgs/s
    let mut max_of: BTreeMap<(String, u64, usize, String), f64> = BTreeMap::new();
    let total = cells.len();
    for (i, (acks, linger, batch, rate, size)) in cells.iter().enumerate() {
        let base = (acks.clone(), *linger, *batch, size.clone());
        let rate_value = if let Some(pct) = rate.strip_suffix('%') {
            let pct: f64 = pct
                .trim()
                .parse()
                .with_context(|| format!("rate {rate:?}"))?;
            if !max_of.contains_key(&base) {
                eprintln!("sweep: measuring the closed-loop max for {rate} of acks={acks} linger={linger} batch={batch} size={size}");
                let cell = run_cell(s, &base, "max", None, broker_pid, time_scale, quiet)?;
                max_of.insert(base.clone(), cell.msgs_per_s);
                if !cells.iter().any(|c| {
                    c.0 == base.0 && c.1 == base.1 && c.2 == base.2 && c.4 == base.3 && c.3 == "max"
                }) {
                    done.push(cell);
                }
            }
            Some(max_of[&base] * pct / 100.0)
        } else {
            let mean = size.parse::<SizeDist>()?.mean();
            parse_rate(rate, mean)?
        };
        eprintln!("sweep: cell {}/{total}: acks={acks} linger={linger}ms batch={batch} rate={rate} size={size}", i + 1);
        let cell = run_cell(s, &base, rate, rate_value, broker_pid, time_scale, quiet)?;
        if rate == "max" {
            max_of.insert(base.clone(), cell.msgs_per_s);
        }
        done.push(cell);
    }
    Ok(SweepResult {
        scenario: s.name.clone(),
        description: s.description.clone(),
        started: now_iso(),
        host: hostname(),
        brokers: s.brokers.clone(),
        loadgen_version: env!("CARGO_PKG_VERSION").into(),
        cells: done,
    })
}

fn run_cell(
    s: &Scenario,
    base: &(String, u64, usize, String),
    rate_spec: &str,
    rate: Option<f64>,
    broker_pid: Option<u32>,
    time_scale: f64,
    quiet: bool,
) -> Result<Cell> {
    let (acks, linger, batch, size) = base;
    let d = &s.producer;
    let size_dist: SizeDist = size.parse()?;
    let mut runs = Vec::new();
    for rep in 0..s.repeats {
        let topic = format!(
            "{}-{}-{}-{}-{}-{}",
            s.topic_prefix,
            std::process::id(),
            acks.replace('-', "m"),
            linger,
            batch,
            runs_counter()
        );
        let target = Target {
            brokers: s.brokers.clone(),
            topic: topic.clone(),
            create_partitions: Some(s.partitions),
            replication_factor: s.replication_factor,
            topic_configs: s.topic_configs.clone().into_iter().collect(),
        };
        let opts = ProduceOpts {
            topic: topic.clone(),
            acks: parse_acks(acks)?,
            linger: Duration::from_millis(*linger),
            batch_bytes: *batch,
            max_inflight: d.max_inflight.max(1),
            compression: d.compression.parse()?,
            size: size_dist.clone(),
            keys: d.keys.parse()?,
            payload: d.payload.parse()?,
            producers: d.producers.max(1),
            threads: d.producers.max(1),
            rate,
            buffer_bytes: parse_bytes(&d.buffer_bytes)?,
            max_request_bytes: parse_bytes(&d.max_request_bytes)?,
            request_timeout: Duration::from_secs(30),
            partitions: None,
            seed: 42 + rep as u64,
        };
        let len = Length {
            warmup: Duration::from_secs_f64(s.warmup_s * time_scale),
            duration: Duration::from_secs_f64(s.duration_s * time_scale),
            messages: None,
            quiet,
            broker_pid,
        };
        let e2e = s.e2e.then(|| ConsumeOpts {
            topic: topic.clone(),
            partitions: None,
            from: StartAt::Latest,
            consumers: d.consumers.max(1),
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            group: None,
            commit_interval: Duration::from_secs(1),
        });
        let r = run::produce(&target, &opts, size, &len, e2e.as_ref())?;
        if !quiet {
            run::print_summary(&r);
        }
        runs.push(r);
        if let Ok(mut admin) = crate::cluster::bootstrap(&s.brokers) {
            let _ = crate::cluster::delete_topic(&mut admin, &topic);
        }
    }
    combine(rate_spec, runs)
}

fn runs_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn merge(streams: &[&StreamSummary]) -> Result<(Percentiles, String)> {
    let mut h = stats::new_histogram();
    for s in streams {
        h.add(stats::decode_histogram(&s.histogram)?)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    }
    Ok((Percentiles::of(&h), stats::encode_histogram(&h)))
}

fn combine(rate_spec: &str, runs: Vec<RunResult>) -> Result<Cell> {
    let first = runs.first().context("a cell has at least one run")?;
    let mut params = first.params.clone();
    let produce: Vec<&StreamSummary> = runs.iter().filter_map(|r| r.produce.as_ref()).collect();
    let consume: Vec<&StreamSummary> = runs.iter().filter_map(|r| r.consume.as_ref()).collect();
    let (produce_latency, produce_histogram) = merge(&produce)?;
    let e2e = if consume.is_empty() {
        None
    } else {
        Some(merge(&consume)?)
    };
    let mut errors = BTreeMap::new();
    for s in produce.iter().chain(&consume) {
        for (c, n) in &s.errors {
            *errors.entry(*c).or_default() += n;
        }
    }
    let runs_msgs_per_s: Vec<f64> = produce.iter().map(|p| p.msgs_per_s).collect();
    let mb: Vec<f64> = produce.iter().map(|p| p.mb_per_s).collect();
    let brokers: Vec<f64> = runs.iter().filter_map(|r| r.broker_cpu_cores).collect();
    let key = {
        let mut p = params.clone();
        p.rate = rate_spec.to_string();
        p.key()
    };
    if rate_spec.ends_with('%') {
        params.rate = format!("{} ({rate_spec})", params.rate);
    }
    Ok(Cell {
        key,
        mode: first.mode.clone(),
        msgs_per_s: median(&runs_msgs_per_s),
        mb_per_s: median(&mb),
        runs_msgs_per_s,
        produce_latency,
        produce_histogram,
        e2e_latency: e2e.as_ref().map(|e| e.0.clone()),
        e2e_histogram: e2e.map(|e| e.1),
        errors,
        loadgen_cpu_cores: median(&runs.iter().map(|r| r.loadgen_cpu_cores).collect::<Vec<_>>()),
        broker_cpu_cores: (!brokers.is_empty()).then(|| median(&brokers)),
        schedule_lag_max_ms: runs
            .iter()
            .map(|r| r.schedule_lag_max_ms)
            .fold(0.0, f64::max),
        params,
        runs,
    })
}

pub fn table(r: &SweepResult) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "scenario {} on {} ({})", r.scenario, r.host, r.started);
    let _ = writeln!(
        t,
        "{:>4} {:>6} {:>8} {:>16} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>5}",
        "acks",
        "linger",
        "batch",
        "rate",
        "size",
        "msgs/s",
        "MB/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "e2e p99",
        "errors",
        "cpu"
    );
    for c in &r.cells {
        let p = &c.produce_latency;
        let errors: u64 = c.errors.values().sum();
        let _ = writeln!(
            t,
            "{:>4} {:>6} {:>8} {:>16} {:>8} {:>11.0} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>5.2}",
            c.params.acks,
            c.params.linger_ms,
            c.params.batch_bytes,
            c.params.rate,
            c.params.message_bytes,
            c.msgs_per_s,
            c.mb_per_s,
            stats::fmt_ms(p.p50_ms),
            stats::fmt_ms(p.p99_ms),
            stats::fmt_ms(p.p999_ms),
            stats::fmt_ms(p.max_ms),
            c.e2e_latency.as_ref().map_or("-".into(), |e| stats::fmt_ms(e.p99_ms)),
            errors,
            c.loadgen_cpu_cores
        );
    }
    t
}

pub fn csv(r: &SweepResult) -> String {
    let mut t = String::from(
        "scenario,acks,linger_ms,batch_bytes,rate,message_bytes,compression,producers,max_inflight,mode,\
msgs_per_s,mb_per_s,p50_ms,p90_ms,p99_ms,p999_ms,p9999_ms,max_ms,e2e_p50_ms,e2e_p99_ms,e2e_p999_ms,\
errors,loadgen_cpu_cores,broker_cpu_cores,runs_msgs_per_s\n",
    );
    for c in &r.cells {
        let p = &c.produce_latency;
        let e = c.e2e_latency.clone().unwrap_or_default();
        let runs: Vec<String> = c
            .runs_msgs_per_s
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect();
        let _ = writeln!(
            t,
            "{},{},{},{},\"{}\",{},{},{},{},{},{:.1},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{},{:.3},{},{}",
            r.scenario,
            c.params.acks,
            c.params.linger_ms,
            c.params.batch_bytes,
            c.params.rate,
            c.params.message_bytes,
            c.params.compression,
            c.params.producers,
            c.params.max_inflight,
            c.mode,
            c.msgs_per_s,
            c.mb_per_s,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.p999_ms,
            p.p9999_ms,
            p.max_ms,
            e.p50_ms,
            e.p99_ms,
            e.p999_ms,
            c.errors.values().sum::<u64>(),
            c.loadgen_cpu_cores,
            c.broker_cpu_cores.map_or(String::new(), |b| format!("{b:.3}")),
            runs.join(";")
        );
    }
    t
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// UTC now as 2026-01-31T12:34:56Z (civil-from-days, no date crate).
pub fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Loads a results.json, or a single-run JSON from `--json-out` as one cell.
pub fn load(path: &Path) -> Result<SweepResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(r) = serde_json::from_str::<SweepResult>(&text) {
        return Ok(r);
    }
    let run: RunResult = serde_json::from_str(&text)
        .with_context(|| format!("{} is neither a sweep nor a run result", path.display()))?;
    let spec = run.params.rate.clone();
    Ok(SweepResult {
        scenario: path.display().to_string(),
        description: String::new(),
        started: String::new(),
        host: String::new(),
        brokers: String::new(),
        loadgen_version: String::new(),
        cells: vec![combine(&spec, vec![run])?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_files_in_tuning_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let s: Scenario =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!expand(&s).is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn iso_dates_are_civil() {
        let s = now_iso();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
