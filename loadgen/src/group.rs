//! Consumer-group membership with the classic protocol: FindCoordinator,
//! JoinGroup (with the MEMBER_ID_REQUIRED step of v4+), SyncGroup (the leader
//! computes a range assignment over the topic's partitions, in the standard
//! ConsumerProtocolSubscription / ConsumerProtocolAssignment encodings),
//! Heartbeat interleaved with the member's supervision loop, OffsetFetch to
//! resume, OffsetCommit of consumed positions, LeaveGroup on exit.
//!
//! One `Member` per consumer, on its own thread. Fetching is done by the
//! ordinary fetchers (one thread per leader), started per generation with
//! the assigned partitions and stopped when the group rebalances; their
//! positions are committed before the member rejoins.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::cluster::TopicLayout;
use crate::consumer::{spawn_fetchers, ConsumeControl, ConsumeOpts, FetcherHandle};
use crate::stats::Recorder;
use crate::wire::Conn;

pub const SESSION_TIMEOUT_MS: i32 = 10_000;
pub const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1_000);
/// How long joining (or finding the coordinator) may take before giving up.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(20);

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";

fn coordinator_error(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

/// `version` (i16) followed by the message at that version: the consumer
/// protocol's embedded encoding.
fn encode_versioned<T: Encodable>(version: i16, msg: &T) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// Decodes a versioned consumer-protocol blob; newer versions only append
/// fields, so they are read as the newest version we know (3).
fn decode_versioned<T: Decodable>(mut bytes: Bytes) -> Result<T> {
    if bytes.remaining() < 2 {
        bail!("consumer protocol data of {} bytes", bytes.remaining());
    }
    let version = bytes.get_i16();
    if version < 0 {
        bail!("consumer protocol version {version}");
    }
    T::decode(&mut bytes, version.min(3))
}

/// Range assignment (Kafka's RangeAssignor for one topic): members sorted by
/// id, each gets a contiguous run of partitions, the first `n % m` one more.
pub fn range_assign(members: &[String], partitions: &[i32]) -> BTreeMap<String, Vec<i32>> {
    let mut members = members.to_vec();
    members.sort();
    members.dedup();
    let mut partitions = partitions.to_vec();
    partitions.sort_unstable();
    let mut out = BTreeMap::new();
    if members.is_empty() {
        return out;
    }
    let (per, extra) = (
        partitions.len() / members.len(),
        partitions.len() % members.len(),
    );
    let mut start = 0;
    for (i, m) in members.into_iter().enumerate() {
        let len = per + usize::from(i < extra);
        out.insert(m, partitions[start..start + len].to_vec());
        start += len;
    }
    out
}

/// One group member (one `--consumers` slot).
pub struct Member {
    pub id: usize,
    pub group: String,
    pub opts: ConsumeOpts,
    pub layout: TopicLayout,
    /// The subscribed partitions (the leader assigns these).
    pub partitions: Vec<i32>,
    /// Where a partition without a committed offset starts.
    pub defaults: BTreeMap<i32, i64>,
    /// End offsets seen at the start (for --catch-up).
    pub ends: BTreeMap<i32, i64>,
    pub recorder: Arc<Recorder>,
    pub control: Arc<ConsumeControl>,
    coord: Option<Conn>,
    member_id: StrBytes,
    generation: i32,
    committed: BTreeMap<i32, i64>,
}

impl Member {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        group: String,
        opts: ConsumeOpts,
        layout: TopicLayout,
        partitions: Vec<i32>,
        defaults: BTreeMap<i32, i64>,
        ends: BTreeMap<i32, i64>,
        recorder: Arc<Recorder>,
        control: Arc<ConsumeControl>,
    ) -> Self {
        Self {
            id,
            group,
            opts,
            layout,
            partitions,
            defaults,
            ends,
            recorder,
            control,
            coord: None,
            member_id: StrBytes::default(),
            generation: -1,
            committed: BTreeMap::new(),
        }
    }

    /// Joins, consumes, rejoins on rebalances; commits and leaves on exit.
    pub fn run(mut self) -> Result<()> {
        let result = self.member_loop();
        if result.is_err() {
            self.control.stop.store(true, Ordering::Release);
        }
        self.leave();
        result
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group.clone()))
    }

    fn topic(&self) -> TopicName {
        TopicName(StrBytes::from_string(self.opts.topic.clone()))
    }

    fn member_loop(&mut self) -> Result<()> {
        loop {
            if self.control.done() {
                return Ok(());
            }
            let assigned = self.join()?;
            let positions = self.start_positions(&assigned)?;
            self.committed = positions.clone();
            let offsets: Vec<(i32, i64, i64)> = assigned
                .iter()
                .map(|p| (*p, positions[p], self.ends.get(p).copied().unwrap_or(0)))
                .collect();
            let shared = Arc::new(Mutex::new(positions));
            let gen_stop = Arc::new(AtomicBool::new(false));
            let handles = spawn_fetchers(
                &format!("{}-{}", self.id, self.generation),
                &self.opts,
                &self.layout,
                &offsets,
                &self.recorder,
                &self.control,
                Some((gen_stop.clone(), shared.clone())),
            )?;
            let supervised = self.supervise(&handles, &shared);
            gen_stop.store(true, Ordering::Release);
            let mut fetch_result = Ok(());
            for h in handles {
                let r = h.join().expect("fetcher panicked");
                if fetch_result.is_ok() {
                    fetch_result = r;
                }
            }
            let last = shared.lock().expect("poisoned").clone();
            // A commit refused because the generation moved on is not an
            // error: the partitions' new owners resume from the last commit.
            let committed = self.commit(&last);
            fetch_result?;
            let rejoin = supervised?;
            committed?;
            if !rejoin {
                return Ok(());
            }
        }
    }

    /// Heartbeats and commits while the fetchers run. Ok(true): rejoin.
    fn supervise(
        &mut self,
        handles: &[FetcherHandle],
        positions: &Mutex<BTreeMap<i32, i64>>,
    ) -> Result<bool> {
        let commit_interval = self.opts.commit_interval;
        let mut next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
        let mut next_commit = Instant::now() + commit_interval;
        loop {
            if self.control.done() {
                return Ok(false);
            }
            let finished = if handles.is_empty() {
                self.control.until_caught_up.load(Ordering::Acquire)
            } else {
                handles.iter().all(|h| h.is_finished())
            };
            if finished {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= next_heartbeat {
                next_heartbeat = now + HEARTBEAT_INTERVAL;
                if self.heartbeat()? {
                    return Ok(true);
                }
            }
            if now >= next_commit {
                next_commit = now + commit_interval;
                let p = positions.lock().expect("poisoned").clone();
                if self.commit(&p)? {
                    return Ok(true);
                }
            }
            thread::sleep(TICK);
        }
    }

    /// The coordinator connection, found (and connected) on first use.
    fn coordinator(&mut self) -> Result<&mut Conn> {
        if self.coord.is_none() {
            let deadline = Instant::now() + JOIN_DEADLINE;
            let bootstrap = self
                .layout
                .leaders
                .values()
                .next()
                .context("no broker known")?
                .clone();
            let client_id = format!("loadgen-consumer-{}", self.id);
            let mut conn = Conn::connect(&bootstrap, &client_id)?;
            let request = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(self.group.clone()))
                .with_key_type(0);
            let addr = loop {
                let (_, r): (_, FindCoordinatorResponse) =
                    conn.call_auto(ApiKey::FindCoordinator, 3, &request)?;
                match r.error_code {
                    0 => break format!("{}:{}", r.host, r.port),
                    code if coordinator_error(code) && Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(100));
                    }
                    code => bail!("FindCoordinator {}: error {code}", self.group),
                }
            };
            let coord = Conn::connect(&addr, &client_id)?;
            coord.set_read_timeout(Some(
                Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + Duration::from_secs(10),
            ))?;
            self.coord = Some(coord);
        }
        Ok(self.coord.as_mut().expect("just set"))
    }

    /// Drops the coordinator connection after a coordinator error.
    fn lost_coordinator(&mut self) {
        self.coord = None;
        thread::sleep(Duration::from_millis(100));
    }

    /// JoinGroup + SyncGroup until a generation is reached; the assignment.
    fn join(&mut self) -> Result<Vec<i32>> {
        let deadline = Instant::now() + JOIN_DEADLINE;
        loop {
            if let Some(assigned) = self.try_join()? {
                return Ok(assigned);
            }
            if Instant::now() > deadline {
                bail!(
                    "group {}: no stable generation after {JOIN_DEADLINE:?}",
                    self.group
                );
            }
        }
    }

    fn try_join(&mut self) -> Result<Option<Vec<i32>>> {
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_string(self.opts.topic.clone())]);
        let request = JoinGroupRequest::default()
            .with_group_id(self.group_id())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(ASSIGNOR))
                .with_metadata(encode_versioned(0, &subscription)?)]);
        let (_, join): (_, JoinGroupResponse) =
            self.coordinator()?
                .call_auto(ApiKey::JoinGroup, 7, &request)?;
        match join.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                self.member_id = join.member_id;
                return Ok(None);
            }
            UNKNOWN_MEMBER_ID => {
                self.member_id = StrBytes::default();
                return Ok(None);
            }
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => return Ok(None),
            code if coordinator_error(code) => {
                self.lost_coordinator();
                return Ok(None);
            }
            code => bail!("JoinGroup {}: error {code}", self.group),
        }
        self.member_id = join.member_id.clone();
        self.generation = join.generation_id;
        let assignments = if join.leader == join.member_id {
            self.assign(&join.members)?
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(self.member_id.clone())
            .with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
            .with_protocol_name(Some(
                join.protocol_name
                    .unwrap_or_else(|| StrBytes::from_static_str(ASSIGNOR)),
            ))
            .with_assignments(assignments);
        let (_, sync): (_, SyncGroupResponse) =
            self.coordinator()?
                .call_auto(ApiKey::SyncGroup, 5, &request)?;
        match sync.error_code {
            0 => {}
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => return Ok(None),
            UNKNOWN_MEMBER_ID => {
                self.member_id = StrBytes::default();
                return Ok(None);
            }
            code if coordinator_error(code) => {
                self.lost_coordinator();
                return Ok(None);
            }
            code => bail!("SyncGroup {}: error {code}", self.group),
        }
        if sync.assignment.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let assignment: ConsumerProtocolAssignment = decode_versioned(sync.assignment)?;
        let mut mine: Vec<i32> = assignment
            .assigned_partitions
            .iter()
            .filter(|tp| tp.topic.0.as_str() == self.opts.topic)
            .flat_map(|tp| tp.partitions.iter().copied())
            .filter(|p| self.layout.leaders.contains_key(p))
            .collect();
        mine.sort_unstable();
        mine.dedup();
        Ok(Some(mine))
    }

    /// The leader's job: a range assignment of our topic over the members
    /// that subscribe to it (every member gets an entry, maybe empty).
    fn assign(
        &self,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut subscribed = Vec::new();
        for m in members {
            let sub: ConsumerProtocolSubscription = decode_versioned(m.metadata.clone())
                .with_context(|| format!("subscription of member {}", m.member_id))?;
            if sub.topics.iter().any(|t| t.as_str() == self.opts.topic) {
                subscribed.push(m.member_id.to_string());
            }
        }
        let plan = range_assign(&subscribed, &self.partitions);
        members
            .iter()
            .map(|m| {
                let parts = plan.get(m.member_id.as_str()).cloned().unwrap_or_default();
                let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    if parts.is_empty() {
                        Vec::new()
                    } else {
                        vec![consumer_protocol_assignment::TopicPartition::default()
                            .with_topic(self.topic())
                            .with_partitions(parts)]
                    },
                );
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(m.member_id.clone())
                    .with_assignment(encode_versioned(0, &assignment)?))
            })
            .collect()
    }

    /// Committed offsets of the assigned partitions, or the --from default.
    fn start_positions(&mut self, assigned: &[i32]) -> Result<BTreeMap<i32, i64>> {
        let mut out = BTreeMap::new();
        if assigned.is_empty() {
            return Ok(out);
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(self.group_id())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(self.topic())
                .with_partition_indexes(assigned.to_vec())]))
            .with_require_stable(true);
        let deadline = Instant::now() + JOIN_DEADLINE;
        'retry: loop {
            if Instant::now() > deadline {
                bail!(
                    "OffsetFetch {}: no answer within {JOIN_DEADLINE:?}",
                    self.group
                );
            }
            let (_, r): (_, OffsetFetchResponse) =
                self.coordinator()?
                    .call_auto(ApiKey::OffsetFetch, 7, &request)?;
            let codes = std::iter::once(r.error_code).chain(
                r.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.error_code),
            );
            for code in codes {
                match code {
                    0 => {}
                    UNSTABLE_OFFSET_COMMIT | COORDINATOR_LOAD_IN_PROGRESS => {
                        thread::sleep(Duration::from_millis(100));
                        continue 'retry;
                    }
                    code if coordinator_error(code) => {
                        self.lost_coordinator();
                        continue 'retry;
                    }
                    code => bail!("OffsetFetch {}: error {code}", self.group),
                }
            }
            for p in r.topics.iter().flat_map(|t| &t.partitions) {
                if p.committed_offset >= 0 {
                    out.insert(p.partition_index, p.committed_offset);
                }
            }
            break;
        }
        for p in assigned {
            if !out.contains_key(p) {
                let d = self
                    .defaults
                    .get(p)
                    .copied()
                    .with_context(|| format!("no start offset for partition {p}"))?;
                out.insert(*p, d);
            }
        }
        Ok(out)
    }

    /// Commits positions that moved since the last commit. Ok(true): the
    /// group is rebalancing (or forgot us), rejoin.
    fn commit(&mut self, positions: &BTreeMap<i32, i64>) -> Result<bool> {
        let changed: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .map(|(p, o)| (*p, *o))
            .collect();
        if changed.is_empty() || self.member_id.is_empty() {
            return Ok(false);
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(self.member_id.clone())
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(self.topic())
                .with_partitions(
                    changed
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                )]);
        for _attempt in 0..3 {
            let (_, r): (_, OffsetCommitResponse) =
                self.coordinator()?
                    .call_auto(ApiKey::OffsetCommit, 8, &request)?;
            let mut worst = 0;
            for p in r.topics.iter().flat_map(|t| &t.partitions) {
                if p.error_code == 0 {
                    if let Some((_, o)) = changed.iter().find(|(q, _)| *q == p.partition_index) {
                        self.committed.insert(p.partition_index, *o);
                    }
                } else if worst == 0 {
                    worst = p.error_code;
                }
            }
            match worst {
                0 => return Ok(false),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => return Ok(true),
                UNKNOWN_MEMBER_ID => {
                    self.member_id = StrBytes::default();
                    return Ok(true);
                }
                code if coordinator_error(code) => self.lost_coordinator(),
                code => bail!("OffsetCommit {}: error {code}", self.group),
            }
        }
        bail!("OffsetCommit {}: coordinator unavailable", self.group)
    }

    /// Ok(true): rejoin.
    fn heartbeat(&mut self) -> Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(self.member_id.clone());
        let (_, r): (_, HeartbeatResponse) =
            self.coordinator()?
                .call_auto(ApiKey::Heartbeat, 4, &request)?;
        match r.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => Ok(true),
            UNKNOWN_MEMBER_ID => {
                self.member_id = StrBytes::default();
                Ok(true)
            }
            code if coordinator_error(code) => {
                self.lost_coordinator();
                Ok(true)
            }
            code => bail!("Heartbeat {}: error {code}", self.group),
        }
    }

    /// LeaveGroup, best effort.
    fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        let member_id = std::mem::take(&mut self.member_id);
        let group_id = self.group_id();
        let Some(conn) = self.coord.as_mut() else {
            return;
        };
        let Ok(v) = conn.versions.pick(ApiKey::LeaveGroup, 5) else {
            return;
        };
        let request = if v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group_id)
                .with_members(vec![MemberIdentity::default().with_member_id(member_id)])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id)
                .with_member_id(member_id)
        };
        let _: Result<LeaveGroupResponse> = conn.call(ApiKey::LeaveGroup, v, &request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_is_contiguous_and_complete() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let plan = range_assign(&members, &[3, 0, 1, 2, 4, 5, 6]);
        assert_eq!(plan["a"], vec![0, 1, 2]);
        assert_eq!(plan["b"], vec![3, 4]);
        assert_eq!(plan["c"], vec![5, 6]);
        let plan = range_assign(&members, &[0]);
        assert_eq!(plan["a"], vec![0]);
        assert!(plan["b"].is_empty() && plan["c"].is_empty());
    }

    #[test]
    fn consumer_protocol_blobs_round_trip() {
        let sub = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")]);
        let back: ConsumerProtocolSubscription =
            decode_versioned(encode_versioned(0, &sub).unwrap()).unwrap();
        assert_eq!(back.topics, sub.topics);
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![1, 2]),
        ]);
        let bytes = encode_versioned(0, &a).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        let back: ConsumerProtocolAssignment = decode_versioned(bytes).unwrap();
        assert_eq!(back.assigned_partitions[0].partitions, vec![1, 2]);
    }
}
