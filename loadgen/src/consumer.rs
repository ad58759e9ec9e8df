//! The consumer: manual partition assignment, or a consumer group
//! (`--group`, see `group.rs`), Fetch with long
//! polling, one fetch in flight per connection as Kafka's consumers do. One
//! thread per (consumer, leader). Records end-to-end latency from the send
//! timestamp loadgen's producer puts at the start of each value, against the
//! wall clock when the Fetch response arrived (so producer and consumer must
//! share a clock: same host, or synchronised hosts).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::group::Member;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::batch;
use crate::cluster::{self, TopicLayout};
use crate::stats::Recorder;
use crate::wire::{self, Conn};

/// Highest Fetch version loadgen speaks (v13 names topics by id).
const FETCH_VERSION_MAX: i16 = 12;
const OFFSET_OUT_OF_RANGE: i16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

impl std::str::FromStr for StartAt {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "earliest" | "beginning" => StartAt::Earliest,
            "latest" | "end" => StartAt::Latest,
            _ => bail!("--from must be earliest or latest"),
        })
    }
}

#[derive(Clone, Debug)]
pub struct ConsumeOpts {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
    pub from: StartAt,
    pub consumers: usize,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Join this consumer group (classic protocol) instead of assigning
    /// partitions manually.
    pub group: Option<String>,
    /// How often a group member commits its positions.
    pub commit_interval: Duration,
}

/// How the caller stops the consumers.
#[derive(Default)]
pub struct ConsumeControl {
    pub stop: AtomicBool,
    /// Stop once this many messages were consumed (u64::MAX: no target).
    pub target_msgs: AtomicU64,
    pub consumed: AtomicU64,
    /// Stop when every partition reached the end offsets seen at the start.
    pub until_caught_up: AtomicBool,
}

impl ConsumeControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            target_msgs: AtomicU64::new(u64::MAX),
            ..Self::default()
        })
    }

    pub(crate) fn done(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.consumed.load(Ordering::Acquire) >= self.target_msgs.load(Ordering::Acquire)
    }
}

/// Consumers that run on their own threads until stopped.
pub struct Consumers {
    handles: Vec<thread::JoinHandle<Result<()>>>,
    pub start_offsets: BTreeMap<i32, i64>,
    pub end_offsets: BTreeMap<i32, i64>,
}

impl Consumers {
    /// Looks up start offsets, connects, and starts fetching.
    pub fn start(
        opts: &ConsumeOpts,
        layout: &TopicLayout,
        recorder: Arc<Recorder>,
        control: Arc<ConsumeControl>,
    ) -> Result<Self> {
        let partitions = opts
            .partitions
            .clone()
            .unwrap_or_else(|| layout.partitions());
        let earliest = cluster::list_offsets(layout, &partitions, -2)?;
        let latest = cluster::list_offsets(layout, &partitions, -1)?;
        let start_offsets = match opts.from {
            StartAt::Earliest => earliest,
            StartAt::Latest => latest.clone(),
        };
        let consumers = opts.consumers.max(1);
        let mut handles = Vec::new();
        if let Some(group) = &opts.group {
            for id in 0..consumers {
                let member = Member::new(
                    id,
                    group.clone(),
                    opts.clone(),
                    layout.clone(),
                    partitions.clone(),
                    start_offsets.clone(),
                    latest.clone(),
                    recorder.clone(),
                    control.clone(),
                );
                handles.push(
                    thread::Builder::new()
                        .name(format!("member-{id}"))
                        .spawn(move || member.run())?,
                );
            }
        } else {
            // consumer -> (partition, start, end)
            let mut assignment: BTreeMap<usize, Vec<(i32, i64, i64)>> = BTreeMap::new();
            for (i, p) in partitions.iter().enumerate() {
                assignment.entry(i % consumers).or_default().push((
                    *p,
                    start_offsets[p],
                    latest[p],
                ));
            }
            for (id, offsets) in assignment {
                handles.extend(spawn_fetchers(
                    &id.to_string(),
                    opts,
                    layout,
                    &offsets,
                    &recorder,
                    &control,
                    None,
                )?);
            }
        }
        Ok(Self {
            handles,
            start_offsets,
            end_offsets: latest,
        })
    }

    /// Waits for every fetcher to stop; the first error wins.
    pub fn join(self) -> Result<()> {
        let mut first = Ok(());
        for h in self.handles {
            let r = h.join().expect("fetcher panicked");
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

pub type FetcherHandle = thread::JoinHandle<Result<()>>;

/// A group member's hold on its fetchers: a stop flag for the generation and
/// the positions they publish (partition -> next offset).
pub type GenerationLink = (Arc<AtomicBool>, Arc<Mutex<BTreeMap<i32, i64>>>);

/// One fetcher thread per leader of `offsets` ((partition, start, end)).
pub fn spawn_fetchers(
    name: &str,
    opts: &ConsumeOpts,
    layout: &TopicLayout,
    offsets: &[(i32, i64, i64)],
    recorder: &Arc<Recorder>,
    control: &Arc<ConsumeControl>,
    link: Option<GenerationLink>,
) -> Result<Vec<FetcherHandle>> {
    let mut by_leader: BTreeMap<String, Vec<(i32, i64, i64)>> = BTreeMap::new();
    for o in offsets {
        let leader = layout.leaders.get(&o.0).context("no leader")?.clone();
        by_leader.entry(leader).or_default().push(*o);
    }
    // Where a fetcher asks for the new leaders when a partition moves.
    let brokers = layout.brokers.clone();
    let mut handles = Vec::new();
    for (leader, offsets) in by_leader {
        let client_id = format!("loadgen-consumer-{name}");
        let conn = connect_fetch(&leader, &client_id)?;
        let fetcher = Fetcher {
            conns: BTreeMap::from([(leader.clone(), conn)]),
            leader_of: offsets.iter().map(|o| (o.0, leader.clone())).collect(),
            brokers: brokers.clone(),
            client_id,
            opts: opts.clone(),
            offsets,
            recorder: recorder.clone(),
            control: control.clone(),
            link: link.clone(),
        };
        handles.push(
            thread::Builder::new()
                .name(format!("fetch-{name}"))
                .spawn(move || fetcher.run())?,
        );
    }
    Ok(handles)
}

/// A connection for fetching and the Fetch version it speaks.
fn connect_fetch(addr: &str, client_id: &str) -> Result<(Conn, i16)> {
    let conn = Conn::connect(addr, client_id)?;
    let version = conn.versions.pick(ApiKey::Fetch, FETCH_VERSION_MAX)?;
    if version < 4 {
        bail!("{addr} speaks Fetch only up to v{version}; loadgen needs v4");
    }
    Ok((conn, version))
}

/// Partition errors that mean "ask the cluster who leads it now".
const LEADERSHIP_ERRORS: [i16; 5] = [
    3,  // UNKNOWN_TOPIC_OR_PARTITION
    5,  // LEADER_NOT_AVAILABLE
    6,  // NOT_LEADER_OR_FOLLOWER
    74, // FENCED_LEADER_EPOCH
    75, // UNKNOWN_LEADER_EPOCH
];

struct Fetcher {
    /// leader address -> connection and its Fetch version
    conns: BTreeMap<String, (Conn, i16)>,
    /// partition -> the address it is fetched from
    leader_of: BTreeMap<i32, String>,
    /// where to look leaders up again
    brokers: Vec<String>,
    client_id: String,
    opts: ConsumeOpts,
    /// (partition, next offset, end offset at start)
    offsets: Vec<(i32, i64, i64)>,
    recorder: Arc<Recorder>,
    control: Arc<ConsumeControl>,
    link: Option<GenerationLink>,
}

impl Fetcher {
    fn run(mut self) -> Result<()> {
        let result = self.fetch_loop();
        if result.is_err() {
            self.control.stop.store(true, Ordering::Release);
        }
        result
    }

    fn caught_up(&self) -> bool {
        self.control.until_caught_up.load(Ordering::Acquire)
            && self.offsets.iter().all(|(_, next, end)| next >= end)
    }

    fn generation_over(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|(stop, _)| stop.load(Ordering::Acquire))
    }

    /// One Fetch per leader of this fetcher's partitions, in turn (one
    /// leader unless partitions moved). A leadership error or a lost
    /// connection leads to a new look-up of the leaders (for up to a minute)
    /// instead of an end: the cluster may be failing over.
    fn fetch_loop(&mut self) -> Result<()> {
        let topic = TopicName(StrBytes::from_string(self.opts.topic.clone()));
        let mut lost_since: Option<std::time::Instant> = None;
        while !self.control.done() && !self.caught_up() && !self.generation_over() {
            let mut leaders: Vec<String> = self.leader_of.values().cloned().collect();
            leaders.sort();
            leaders.dedup();
            let mut moved = false;
            for leader in leaders {
                match self.fetch_from(&leader, &topic) {
                    Ok(m) => moved |= m,
                    Err(e) => {
                        eprintln!(
                            "loadgen: fetch from {leader} failed ({e:#}); looking up leaders again"
                        );
                        self.conns.remove(&leader);
                        moved = true;
                    }
                }
            }
            if moved {
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    bail!(
                        "topic {}: partitions without a reachable leader for 60 s",
                        self.opts.topic
                    );
                }
                thread::sleep(Duration::from_millis(100));
                self.refresh_leaders();
            } else {
                lost_since = None;
            }
            if let Some((_, positions)) = &self.link {
                let mut positions = positions.lock().expect("poisoned");
                for (p, next, _) in &self.offsets {
                    positions.insert(*p, *next);
                }
            }
        }
        Ok(())
    }

    /// Fetches this fetcher's partitions led by `leader`; true if one of
    /// them answered with a leadership error.
    fn fetch_from(&mut self, leader: &str, topic: &TopicName) -> Result<bool> {
        if !self.conns.contains_key(leader) {
            let conn = connect_fetch(leader, &self.client_id)?;
            self.conns.insert(leader.to_string(), conn);
        }
        let parts: Vec<i32> = self
            .leader_of
            .iter()
            .filter(|(_, l)| l.as_str() == leader)
            .map(|(p, _)| *p)
            .collect();
        let request = self.request(topic, &parts);
        let (conn, version) = self.conns.get_mut(leader).expect("connected above");
        let version = *version;
        let timeout = Duration::from_millis(self.opts.max_wait_ms as u64) + Duration::from_secs(30);
        conn.set_read_timeout(Some(timeout))?;
        let corr = conn.next_correlation();
        let mut buf = bytes::BytesMut::with_capacity(256);
        wire::encode_request(
            &mut buf,
            ApiKey::Fetch,
            version,
            corr,
            &conn.client_id,
            &request,
        )?;
        std::io::Write::write_all(&mut conn.stream, &buf)?;
        let frame = wire::read_frame(&mut conn.stream)?;
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        let response: FetchResponse = wire::decode_response(frame, ApiKey::Fetch, version, corr)?;
        if response.error_code != 0 {
            bail!("Fetch: error {}", response.error_code);
        }
        self.absorb(&response, now_ns)
    }

    /// Asks any broker for the topic's leaders; keeps the old ones when
    /// none answers (the next round tries again).
    fn refresh_leaders(&mut self) {
        for addr in self.brokers.clone() {
            let layout = Conn::connect(&addr, &self.client_id)
                .and_then(|mut c| cluster::topic_layout(&mut c, &self.opts.topic));
            if let Ok(layout) = layout {
                for (p, l) in self.leader_of.iter_mut() {
                    if let Some(new) = layout.leaders.get(p) {
                        l.clone_from(new);
                    }
                }
                for l in layout.leaders.values() {
                    if !self.brokers.contains(l) {
                        self.brokers.push(l.clone());
                    }
                }
                return;
            }
        }
    }

    fn request(&self, topic: &TopicName, parts: &[i32]) -> FetchRequest {
        let partitions = self
            .offsets
            .iter()
            .filter(|(p, _, _)| parts.contains(p))
            .map(|(p, next, _)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(*next)
                    .with_current_leader_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.opts.partition_max_bytes)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.opts.max_wait_ms)
            .with_min_bytes(self.opts.min_bytes)
            .with_max_bytes(self.opts.max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(partitions)])
    }

    fn absorb(&mut self, response: &FetchResponse, now_ns: u64) -> Result<bool> {
        let mut moved = false;
        let mut msgs = 0u64;
        let mut payload = 0u64;
        let mut wire_bytes = 0u64;
        let mut h = self.recorder.latency.lock().expect("poisoned");
        for pd in response.responses.iter().flat_map(|t| &t.partitions) {
            let Some(slot) = self.offsets.iter_mut().find(|o| o.0 == pd.partition_index) else {
                continue;
            };
            if pd.error_code == OFFSET_OUT_OF_RANGE {
                self.recorder.error(pd.error_code, 0);
                slot.1 = pd.log_start_offset.max(0);
                continue;
            }
            if pd.error_code != 0 {
                self.recorder.error(pd.error_code, 0);
                moved |= LEADERSHIP_ERRORS.contains(&pd.error_code);
                continue;
            }
            let Some(records) = &pd.records else { continue };
            let from = slot.1;
            let infos = batch::walk_batches(records, from, true, |bytes, stamp| {
                msgs += 1;
                payload += bytes as u64;
                if let Some(sent) = stamp {
                    h.saturating_record(now_ns.saturating_sub(sent));
                }
            })?;
            for info in &infos {
                wire_bytes += info.batch_bytes as u64;
                slot.1 = slot.1.max(info.next_offset);
            }
        }
        drop(h);
        self.recorder.add(msgs, payload, wire_bytes);
        self.control.consumed.fetch_add(msgs, Ordering::AcqRel);
        Ok(moved)
    }
}
