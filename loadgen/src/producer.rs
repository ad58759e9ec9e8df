//! The producer. Each producer owns one connection per partition leader, a
//! batch per partition, and a schedule. Generator threads (`--threads`) run
//! one or more producers each: they create messages when the schedule says
//! they are due (open loop) or as fast as the pipeline takes them (closed
//! loop), append them to per-partition batches, and when a connection has a
//! full or lingered batch and a free in-flight slot, write one Produce request
//! holding one batch per partition of that leader. A reader thread per
//! connection reads responses (in request order), records each message's
//! latency from its intended send time, and frees the slot.
//!
//! Open loop: message i of a producer is due at i / rate. Latency counts from
//! that instant, so time a message spends waiting for a batch, a slot, a full
//! buffer or a stalled socket is all measured (no coordinated omission).
//! Closed loop: a message's intended time is when it was created, and the
//! generator only creates messages while the pipeline has room.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::batch::{BatchBuilder, Compression, STAMP_BYTES, STAMP_MAGIC};
use crate::cluster::TopicLayout;
use crate::stats::Recorder;
use crate::wire::{self, Conn};
use crate::workload::{self, Keys, Payload, Rng, SizeDist};

/// Highest Produce version loadgen speaks (v10+ adds fields we do not need).
const PRODUCE_VERSION_MAX: i16 = 9;
/// Messages one generator pass may create before it looks at the sockets.
const GENERATE_PASS_MSGS_MAX: u64 = 4096;
/// How long the end of a run waits for outstanding acks.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ProduceOpts {
    pub topic: String,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub linger: Duration,
    pub batch_bytes: usize,
    pub max_inflight: usize,
    pub compression: Compression,
    pub size: SizeDist,
    pub keys: Keys,
    pub payload: Payload,
    pub producers: usize,
    pub threads: usize,
    /// Messages per second over all producers; None is closed loop.
    pub rate: Option<f64>,
    /// Bytes of unsent batches one producer may hold (Kafka's buffer.memory).
    pub buffer_bytes: usize,
    pub max_request_bytes: usize,
    pub request_timeout: Duration,
    /// Only these partitions (None: all).
    pub partitions: Option<Vec<i32>>,
    pub seed: u64,
}

/// When generation stops.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// At this instant.
    Deadline(Instant),
    /// After this many messages over all producers.
    Messages(u64),
}

/// What the generator threads saw, beyond the recorder's counters.
#[derive(Clone, Debug, Default)]
pub struct ProduceOutcome {
    pub generated: u64,
    /// Longest the generator ran behind the open-loop schedule.
    pub schedule_lag_max: Duration,
}

/// Shared by a connection's writer (generator) and reader.
struct ConnShared {
    inflight: AtomicUsize,
    generator: OnceLock<Thread>,
}

/// A batch on the wire: which partition, and each message's intended time.
struct SentBatch {
    partition: i32,
    intended_ns: Vec<u64>,
    payload_bytes: u64,
    wire_bytes: u64,
}

struct InFlight {
    correlation_id: i32,
    batches: Vec<SentBatch>,
}

struct ConnWriter {
    stream: TcpStream,
    addr: String,
    version: i16,
    client_id: StrBytes,
    correlation: i32,
    shared: Arc<ConnShared>,
    to_reader: Option<Sender<InFlight>>,
    reader: Option<JoinHandle<()>>,
    buf: BytesMut,
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    intended_ns: Vec<u64>,
}

struct PartState {
    partition: i32,
    conn: usize,
    open: Option<OpenBatch>,
    full: VecDeque<OpenBatch>,
}

/// Everything one run's threads share.
pub struct RunShared {
    pub recorder: Arc<Recorder>,
    pub start: Instant,
    pub epoch_ns_at_start: u64,
    pub failed: Mutex<Option<String>>,
    pub abort: AtomicBool,
    /// Messages acknowledged (or, with acks=0, written) over the whole run.
    pub acked_total: AtomicU64,
    pool: Vec<u8>,
}

impl RunShared {
    pub fn new(recorder: Arc<Recorder>, payload: Payload, seed: u64) -> Arc<Self> {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        Arc::new(Self {
            recorder,
            start: Instant::now(),
            epoch_ns_at_start: epoch.as_nanos() as u64,
            failed: Mutex::new(None),
            abort: AtomicBool::new(false),
            acked_total: AtomicU64::new(0),
            pool: workload::payload_pool(payload, seed),
        })
    }

    fn fail(&self, why: String) {
        let mut f = self.failed.lock().expect("poisoned");
        if f.is_none() {
            *f = Some(why);
        }
        self.abort.store(true, Ordering::Release);
    }

    fn ns_since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }
}

struct Producer {
    conns: Vec<ConnWriter>,
    parts: Vec<PartState>,
    /// Open loop: nanoseconds between this producer's messages.
    interval_ns: Option<f64>,
    phase_ns: f64,
    quota: Option<u64>,
    generated: u64,
    sticky: usize,
    buffered_bytes: usize,
    rng: Rng,
    key: Vec<u8>,
    pool_at: usize,
}

/// Runs the producers until `until`, then flushes and waits for every ack.
pub fn run(
    opts: &ProduceOpts,
    layout: &TopicLayout,
    shared: &Arc<RunShared>,
    until: Until,
) -> Result<ProduceOutcome> {
    assert!(opts.producers > 0 && opts.threads > 0 && opts.max_inflight > 0);
    let partitions = match &opts.partitions {
        Some(p) => p.clone(),
        None => layout.partitions(),
    };
    let mut producers = Vec::with_capacity(opts.producers);
    for id in 0..opts.producers {
        producers.push(Producer::connect(
            opts,
            layout,
            &partitions,
            shared,
            id,
            until,
        )?);
    }
    // The schedule starts now, not when `shared` was made: connecting is
    // not the broker's latency.
    let connected_ns = shared.ns_since_start(Instant::now()) as f64;
    for p in &mut producers {
        p.phase_ns += connected_ns;
    }
    let threads = opts.threads.min(opts.producers);
    let mut groups: Vec<Vec<Producer>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in producers.into_iter().enumerate() {
        groups[i % threads].push(p);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| {
            let opts = opts.clone();
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("gen-{i}"))
                .spawn(move || generate(&opts, &shared, group, until))
                .expect("spawning a generator")
        })
        .collect();
    let mut outcome = ProduceOutcome::default();
    for h in handles {
        match h.join().expect("generator panicked") {
            Ok(o) => {
                outcome.generated += o.generated;
                outcome.schedule_lag_max = outcome.schedule_lag_max.max(o.schedule_lag_max);
            }
            Err(e) => shared.fail(format!("{e:#}")),
        }
    }
    if let Some(why) = shared.failed.lock().expect("poisoned").clone() {
        bail!("produce failed: {why}");
    }
    Ok(outcome)
}

impl Producer {
    fn connect(
        opts: &ProduceOpts,
        layout: &TopicLayout,
        partitions: &[i32],
        shared: &Arc<RunShared>,
        id: usize,
        until: Until,
    ) -> Result<Self> {
        let mut conns: Vec<ConnWriter> = Vec::new();
        let mut parts = Vec::new();
        for &p in partitions {
            let leader = layout
                .leaders
                .get(&p)
                .with_context(|| format!("partition {p} has no leader"))?;
            let conn = match conns.iter().position(|c| &c.addr == leader) {
                Some(i) => i,
                None => {
                    conns.push(ConnWriter::connect(leader, id, opts, shared)?);
                    conns.len() - 1
                }
            };
            parts.push(PartState {
                partition: p,
                conn,
                open: None,
                full: VecDeque::new(),
            });
        }
        let n = opts.producers as u64;
        let quota = match until {
            Until::Messages(total) => Some(total / n + u64::from((id as u64) < total % n)),
            Until::Deadline(_) => None,
        };
        let interval_ns = opts.rate.map(|r| 1e9 * opts.producers as f64 / r);
        let seed = opts.seed ^ (id as u64).wrapping_mul(0x9E37_79B9);
        Ok(Self {
            conns,
            parts,
            interval_ns,
            phase_ns: interval_ns.unwrap_or(0.0) * id as f64 / opts.producers as f64,
            quota,
            generated: 0,
            sticky: id % partitions.len().max(1),
            buffered_bytes: 0,
            rng: Rng::new(seed),
            key: Vec::with_capacity(32),
            pool_at: (id * 4099) % 65536,
        })
    }

    fn done_generating(&self) -> bool {
        self.quota.is_some_and(|q| self.generated >= q)
    }

    /// Messages due by `now_ns` that are not created yet (open loop).
    fn due(&self, now_ns: u64) -> u64 {
        let interval = self.interval_ns.expect("open loop");
        let elapsed = now_ns as f64 - self.phase_ns;
        if elapsed < 0.0 {
            return 0;
        }
        let due_total = (elapsed / interval) as u64 + 1;
        let due_total = self.quota.map_or(due_total, |q| due_total.min(q));
        due_total.saturating_sub(self.generated)
    }

    fn intended_ns(&self, seq: u64) -> u64 {
        (self.phase_ns + seq as f64 * self.interval_ns.expect("open loop")) as u64
    }

    /// Creates one message and appends it to its partition's batch.
    fn append(&mut self, opts: &ProduceOpts, shared: &RunShared, intended_ns: u64, now: Instant) {
        let seq = self.generated;
        self.generated += 1;
        let has_key = workload::make_key(opts.keys, seq, &mut self.rng, &mut self.key);
        let mut idx = if has_key {
            workload::partition_for_key(&self.key, self.parts.len())
        } else {
            self.sticky
        };
        let size = opts.size.sample(&mut self.rng);
        let mut stamp = [0u8; STAMP_BYTES];
        stamp[..8].copy_from_slice(STAMP_MAGIC);
        let epoch_ns = shared.epoch_ns_at_start + intended_ns;
        stamp[8..].copy_from_slice(&epoch_ns.to_be_bytes());
        let rest_len = size - STAMP_BYTES;
        if self.pool_at + rest_len > shared.pool.len() {
            self.pool_at = 0;
        }
        let rest = &shared.pool[self.pool_at..self.pool_at + rest_len];
        self.pool_at += 61; // a different slice each time, so compression sees real data
        let ts_ms = (epoch_ns / 1_000_000) as i64;
        let key = has_key.then_some(self.key.as_slice());
        if close_if_full(&mut self.parts[idx], opts, ts_ms, key, size) && !has_key {
            // Sticky partitioning: a full batch moves unkeyed messages on to
            // the next partition, this one included (as Kafka's does).
            self.sticky = (self.sticky + 1) % self.parts.len();
            idx = self.sticky;
            close_if_full(&mut self.parts[idx], opts, ts_ms, key, size);
        }
        let part = &mut self.parts[idx];
        let open = part.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(opts.batch_bytes, ts_ms),
            created: now,
            intended_ns: Vec::with_capacity(64),
        });
        let before = open.builder.len();
        open.builder.append(ts_ms, key, &stamp, rest);
        open.intended_ns.push(intended_ns);
        self.buffered_bytes += open.builder.len() - before;
    }

    /// A connection is ready when a batch of it is full or has lingered.
    fn ready(&self, conn: usize, opts: &ProduceOpts, now: Instant, flushing: bool) -> bool {
        self.parts.iter().filter(|p| p.conn == conn).any(|p| {
            !p.full.is_empty()
                || p.open
                    .as_ref()
                    .is_some_and(|o| flushing || now >= o.created + opts.linger)
        })
    }

    /// Sends what is ready on every connection with a free slot. Returns
    /// whether anything was sent.
    fn send_ready(
        &mut self,
        opts: &ProduceOpts,
        shared: &RunShared,
        now: Instant,
        flushing: bool,
    ) -> Result<bool> {
        let mut sent = false;
        for c in 0..self.conns.len() {
            while self.conns[c].shared.inflight.load(Ordering::Acquire) < opts.max_inflight
                && self.ready(c, opts, now, flushing)
            {
                self.send_one(c, opts, shared)?;
                sent = true;
            }
        }
        Ok(sent)
    }

    /// Drains one batch per partition of connection `c` into one request.
    fn send_one(&mut self, c: usize, opts: &ProduceOpts, shared: &RunShared) -> Result<()> {
        let mut request_bytes = 0;
        let mut batches: Vec<(i32, Bytes)> = Vec::new();
        let mut sent: Vec<SentBatch> = Vec::new();
        for part in self.parts.iter_mut().filter(|p| p.conn == c) {
            if request_bytes >= opts.max_request_bytes {
                break;
            }
            let Some(b) = part.full.pop_front().or_else(|| part.open.take()) else {
                continue;
            };
            let payload_bytes = b.builder.payload_bytes() as u64;
            let raw_len = b.builder.len();
            let bytes = b.builder.finish(opts.compression)?;
            self.buffered_bytes -= raw_len - crate::batch::HEADER_BYTES;
            request_bytes += bytes.len();
            sent.push(SentBatch {
                partition: part.partition,
                intended_ns: b.intended_ns,
                payload_bytes,
                wire_bytes: bytes.len() as u64,
            });
            batches.push((part.partition, bytes));
        }
        assert!(!batches.is_empty(), "send_one is only called when ready");
        self.conns[c].write_request(opts, shared, batches, sent)
    }

    /// Time at which this producer next has something to do (None: only an
    /// ack can unblock it).
    fn next_wake(&self, opts: &ProduceOpts, shared: &RunShared) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut consider = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let (Some(_), false) = (self.interval_ns, self.done_generating()) {
            if self.buffered_bytes < opts.buffer_bytes {
                let next = self.intended_ns(self.generated);
                consider(shared.start + Duration::from_nanos(next));
            }
        }
        for (i, c) in self.conns.iter().enumerate() {
            if c.shared.inflight.load(Ordering::Acquire) >= opts.max_inflight {
                continue;
            }
            for p in self.parts.iter().filter(|p| p.conn == i) {
                if let Some(o) = &p.open {
                    consider(o.created + opts.linger);
                }
            }
        }
        wake
    }

    /// Closed loop: room for another message on its partition?
    fn closed_loop_has_room(&self, opts: &ProduceOpts) -> bool {
        !self.done_generating()
            && self.buffered_bytes < opts.buffer_bytes
            && self.parts[self.sticky].full.is_empty()
            && self.parts.iter().filter(|p| !p.full.is_empty()).count() < self.parts.len()
    }

    fn unsent(&self) -> bool {
        self.parts
            .iter()
            .any(|p| p.open.is_some() || !p.full.is_empty())
    }

    fn inflight(&self) -> usize {
        self.conns
            .iter()
            .map(|c| c.shared.inflight.load(Ordering::Acquire))
            .sum()
    }
}

/// Closes a partition's open batch if this record would overflow it.
fn close_if_full(
    part: &mut PartState,
    opts: &ProduceOpts,
    ts_ms: i64,
    key: Option<&[u8]>,
    size: usize,
) -> bool {
    let Some(open) = &part.open else {
        return false;
    };
    let need = open.builder.record_bytes(ts_ms, key, size);
    if open.builder.is_empty() || open.builder.len() + need <= opts.batch_bytes {
        return false;
    }
    let full = part.open.take().expect("checked above");
    part.full.push_back(full);
    true
}

fn generate(
    opts: &ProduceOpts,
    shared: &RunShared,
    mut producers: Vec<Producer>,
    until: Until,
) -> Result<ProduceOutcome> {
    for p in &producers {
        for c in &p.conns {
            let _ = c.shared.generator.set(thread::current());
        }
    }
    let mut outcome = ProduceOutcome::default();
    loop {
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let stop = match until {
            Until::Deadline(d) => now >= d,
            Until::Messages(_) => producers.iter().all(Producer::done_generating),
        };
        if stop {
            break;
        }
        let now_ns = shared.ns_since_start(now);
        let mut busy = false;
        for p in producers.iter_mut() {
            let mut made = 0;
            if p.interval_ns.is_some() {
                let due = p.due(now_ns).min(GENERATE_PASS_MSGS_MAX);
                if due > 0 {
                    let lag = now_ns.saturating_sub(p.intended_ns(p.generated));
                    outcome.schedule_lag_max =
                        outcome.schedule_lag_max.max(Duration::from_nanos(lag));
                }
                while made < due && p.buffered_bytes < opts.buffer_bytes {
                    let intended = p.intended_ns(p.generated);
                    p.append(opts, shared, intended, now);
                    made += 1;
                }
                busy |= made == GENERATE_PASS_MSGS_MAX;
            } else {
                while made < GENERATE_PASS_MSGS_MAX && p.closed_loop_has_room(opts) {
                    p.append(opts, shared, now_ns, now);
                    made += 1;
                }
            }
            busy |= p.send_ready(opts, shared, now, false)?;
            if p.interval_ns.is_none() && p.closed_loop_has_room(opts) {
                busy = true;
            }
        }
        if busy {
            continue;
        }
        let wake = producers
            .iter()
            .filter_map(|p| p.next_wake(opts, shared))
            .min();
        let wake = match (wake, until) {
            (Some(w), Until::Deadline(d)) => w.min(d),
            (None, Until::Deadline(d)) => d,
            (w, Until::Messages(_)) => w.unwrap_or(now + Duration::from_millis(50)),
        };
        let now = Instant::now();
        if wake > now {
            thread::park_timeout(wake - now);
        }
    }
    for p in &producers {
        outcome.generated += p.generated;
    }
    flush(opts, shared, &mut producers)?;
    for p in producers {
        for c in p.conns {
            c.close();
        }
    }
    Ok(outcome)
}

/// Sends every remaining batch and waits until every request is answered.
fn flush(opts: &ProduceOpts, shared: &RunShared, producers: &mut [Producer]) -> Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        if shared.abort.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        for p in producers.iter_mut() {
            p.send_ready(opts, shared, now, true)?;
        }
        if producers.iter().all(|p| !p.unsent() && p.inflight() == 0) {
            return Ok(());
        }
        if now >= deadline {
            bail!(
                "{} requests still unanswered after {DRAIN_TIMEOUT:?}",
                producers.iter().map(Producer::inflight).sum::<usize>()
            );
        }
        thread::park_timeout(Duration::from_millis(10));
    }
}

impl ConnWriter {
    fn connect(addr: &str, id: usize, opts: &ProduceOpts, shared: &Arc<RunShared>) -> Result<Self> {
        let conn = Conn::connect(addr, &format!("loadgen-producer-{id}"))?;
        let version = conn.versions.pick(ApiKey::Produce, PRODUCE_VERSION_MAX)?;
        if version < 3 {
            bail!("{addr} speaks Produce only up to v{version}; RecordBatch v2 needs v3");
        }
        let conn_shared = Arc::new(ConnShared {
            inflight: AtomicUsize::new(0),
            generator: OnceLock::new(),
        });
        let (to_reader, reader) = if opts.acks == 0 {
            (None, None)
        } else {
            let (tx, rx) = channel();
            let mut stream = conn.stream.try_clone()?;
            stream.set_read_timeout(Some(opts.request_timeout + Duration::from_secs(5)))?;
            let s = shared.clone();
            let cs = conn_shared.clone();
            let handle = thread::Builder::new()
                .name(format!("ack-{id}"))
                .spawn(move || read_acks(&mut stream, version, &rx, &s, &cs))?;
            (Some(tx), Some(handle))
        };
        Ok(Self {
            stream: conn.stream,
            addr: addr.to_string(),
            version,
            client_id: conn.client_id,
            correlation: 1000,
            shared: conn_shared,
            to_reader,
            reader,
            buf: BytesMut::with_capacity(opts.max_request_bytes + 4096),
        })
    }

    fn write_request(
        &mut self,
        opts: &ProduceOpts,
        shared: &RunShared,
        batches: Vec<(i32, Bytes)>,
        sent: Vec<SentBatch>,
    ) -> Result<()> {
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(opts.topic.clone())))
            .with_partition_data(
                batches
                    .into_iter()
                    .map(|(index, records)| {
                        PartitionProduceData::default()
                            .with_index(index)
                            .with_records(Some(records))
                    })
                    .collect(),
            );
        let request = ProduceRequest::default()
            .with_acks(opts.acks)
            .with_timeout_ms(opts.request_timeout.as_millis() as i32)
            .with_topic_data(vec![topic]);
        self.correlation = self.correlation.wrapping_add(1);
        self.buf.clear();
        wire::encode_request(
            &mut self.buf,
            ApiKey::Produce,
            self.version,
            self.correlation,
            &self.client_id,
            &request,
        )?;
        if let Some(tx) = &self.to_reader {
            // Registered before the write, so the reader never sees a
            // response it does not expect.
            self.shared.inflight.fetch_add(1, Ordering::AcqRel);
            tx.send(InFlight {
                correlation_id: self.correlation,
                batches: sent,
            })
            .context("ack reader has stopped")?;
            self.stream
                .write_all(&self.buf)
                .context("writing a Produce request")?;
        } else {
            self.stream
                .write_all(&self.buf)
                .context("writing a Produce request")?;
            // acks=0: nothing comes back; the latency is until the socket took it.
            let done_ns = shared.ns_since_start(Instant::now());
            record_acked(shared, &sent, done_ns);
        }
        Ok(())
    }

    fn close(self) {
        drop(self);
    }
}

impl Drop for ConnWriter {
    fn drop(&mut self) {
        drop(self.to_reader.take());
        if self.shared.inflight.load(Ordering::Acquire) > 0 {
            // Only on a failed run: unblock the reader instead of waiting
            // for its read timeout.
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn record_acked(shared: &RunShared, batches: &[SentBatch], done_ns: u64) {
    let mut msgs = 0;
    let mut payload = 0;
    let mut wire_bytes = 0;
    {
        let mut h = shared.recorder.latency.lock().expect("poisoned");
        for b in batches {
            for t in &b.intended_ns {
                h.saturating_record(done_ns.saturating_sub(*t));
            }
            msgs += b.intended_ns.len() as u64;
            payload += b.payload_bytes;
            wire_bytes += b.wire_bytes;
        }
    }
    shared.recorder.add(msgs, payload, wire_bytes);
    shared.acked_total.fetch_add(msgs, Ordering::AcqRel);
}

fn read_acks(
    stream: &mut TcpStream,
    version: i16,
    rx: &Receiver<InFlight>,
    shared: &RunShared,
    conn: &ConnShared,
) {
    while let Ok(f) = rx.recv() {
        if let Err(e) = read_one_ack(stream, version, f, shared) {
            shared.fail(format!("produce connection: {e:#}"));
        }
        conn.inflight.fetch_sub(1, Ordering::AcqRel);
        if let Some(t) = conn.generator.get() {
            t.unpark();
        }
        if shared.abort.load(Ordering::Acquire) {
            return;
        }
    }
}

fn read_one_ack(
    stream: &mut TcpStream,
    version: i16,
    f: InFlight,
    shared: &RunShared,
) -> Result<()> {
    let frame = wire::read_frame(stream)?;
    let done_ns = shared.ns_since_start(Instant::now());
    let response: ProduceResponse =
        wire::decode_response(frame, ApiKey::Produce, version, f.correlation_id)?;
    let mut ok = Vec::with_capacity(f.batches.len());
    let mut answered = 0;
    for b in f.batches {
        let code = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.index == b.partition)
            .map(|p| p.error_code);
        match code {
            Some(0) => ok.push(b),
            Some(code) => shared.recorder.error(code, b.intended_ns.len() as u64),
            // A partition missing from the response: counted as UNKNOWN (-1).
            None => shared.recorder.error(-1, b.intended_ns.len() as u64),
        }
        answered += 1;
    }
    assert!(answered > 0);
    record_acked(shared, &ok, done_ns);
    Ok(())
}
