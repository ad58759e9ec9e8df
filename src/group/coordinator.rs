//! The group coordinator of one shard: the groups whose `__consumer_offsets`
//! partition this shard owns. It answers the group APIs, persists group
//! metadata and committed offsets to those partitions, rebuilds them on
//! startup, expires sessions, and expires offsets of empty groups after
//! `offsets.retention.minutes`. Shard-local (`!Send`), reached through
//! `coordinator()` on the owning shard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{GroupValue, Key, MemberValue, OffsetValue};
use super::state::*;
use crate::io;
use crate::protocol::batch;
use crate::storage::PartitionLog;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Group settings, Kafka's property names.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    pub initial_rebalance_delay_ms: i64,
    pub group_size_max: usize,
    pub offsets_partitions: i32,
    pub offsets_retention_ms: i64,
    pub offset_metadata_bytes_max: usize,
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's String.hashCode.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

enum Load {
    Loaded,
    Loading,
    Elsewhere,
}

/// Errors that end a group request early.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const INVALID_GROUP_ID: i16 = 24;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: an unknown member must first get an id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader can be told to skip assignment.
    pub supports_skip_assignment: bool,
}

pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Set by the caller when the topic/partition does not exist.
    pub error: i16,
}

/// A described group, for DescribeGroups and the CLI.
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

pub struct GroupCoordinator {
    config: GroupConfig,
    groups: RefCell<HashMap<String, Group>>,
    logs: RefCell<HashMap<i32, Rc<PartitionLog>>>,
}

thread_local! {
    static COORDINATOR: RefCell<Option<Rc<GroupCoordinator>>> = const { RefCell::new(None) };
}

/// This shard's coordinator.
pub fn coordinator() -> Rc<GroupCoordinator> {
    COORDINATOR
        .with(|c| c.borrow().clone())
        .expect("group coordinator not installed")
}

/// The members with their metadata for the chosen protocol (the leader's view).
fn roster(g: &Group) -> Vec<(String, Option<String>, Bytes)> {
    let protocol = g.protocol.clone().unwrap_or_default();
    g.members
        .values()
        .map(|m| {
            (
                m.id.clone(),
                m.instance_id.clone(),
                m.metadata_for(&protocol),
            )
        })
        .collect()
}

fn err_join(code: i16, member_id: &str) -> JoinResult {
    JoinResult::error(code, member_id)
}

/// Records to append: key and value (None is a tombstone).
type RecordList = Vec<(Key, Option<Bytes>)>;

enum Outcome<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

impl GroupCoordinator {
    pub fn install(config: GroupConfig) -> Rc<Self> {
        let c = Rc::new(Self {
            config,
            groups: RefCell::new(HashMap::new()),
            logs: RefCell::new(HashMap::new()),
        });
        COORDINATOR.with(|slot| *slot.borrow_mut() = Some(c.clone()));
        c
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn new_member_id(&self, client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    fn log_for(&self, group: &str) -> Option<Rc<PartitionLog>> {
        let p = partition_for(group, self.config.offsets_partitions);
        self.logs.borrow().get(&p).cloned()
    }

    /// Is this shard ready to coordinate `group`? If not: NOT_COORDINATOR
    /// when another broker leads the group's partition, or, as Kafka,
    /// COORDINATOR_LOAD_IN_PROGRESS while this broker leads it (or this
    /// shard has not applied the metadata naming its leader yet) but the
    /// partition is still being opened and replayed here. A client retries
    /// the latter on the same broker instead of looking the coordinator up
    /// again.
    pub fn owns(&self, group: &str) -> Result<(), i16> {
        let p = partition_for(group, self.config.offsets_partitions);
        match self.load_state(p) {
            Load::Loaded => Ok(()),
            Load::Loading => {
                tracing::debug!(
                    group,
                    partition = p,
                    "group request while its partition loads"
                );
                Err(COORDINATOR_LOAD_IN_PROGRESS)
            }
            Load::Elsewhere => Err(NOT_COORDINATOR),
        }
    }

    fn load_state(&self, partition: i32) -> Load {
        if self.logs.borrow().contains_key(&partition) {
            return Load::Loaded;
        }
        let c = crate::server::context::ctx();
        match c.image().partition(OFFSETS_TOPIC, partition) {
            Some(s) if s.leader != c.config.node_id => Load::Elsewhere,
            _ => Load::Loading,
        }
    }

    /// Waits up to `timeout` for this shard to finish loading the group's
    /// partition when this broker is its leader. FindCoordinator uses it so
    /// a client is not sent to a coordinator that would only answer
    /// COORDINATOR_LOAD_IN_PROGRESS for the first few milliseconds after the
    /// offsets topic is created or its leadership moves here.
    pub async fn wait_loaded(&self, group: &str, timeout: std::time::Duration) -> bool {
        let p = partition_for(group, self.config.offsets_partitions);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.load_state(p) {
                Load::Loaded => return true,
                Load::Elsewhere => return false,
                Load::Loading if std::time::Instant::now() >= deadline => return false,
                Load::Loading => io::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    }

    /// Takes ownership of a `__consumer_offsets` partition and replays it.
    pub fn load_partition(&self, partition: i32, log: Rc<PartitionLog>) -> Result<(), String> {
        let mut offset = log.log_start_offset();
        // A new leader has everything to its log end (the high watermark
        // may still be catching up to it).
        let end = log.log_end_offset();
        let mut applied = 0usize;
        while offset < end {
            let Some(slice) = log
                .read(offset, 1 << 20, log.log_end_offset())
                .map_err(|e| e.to_string())?
            else {
                break;
            };
            let mut buf = vec![0u8; slice.len as usize];
            crate::io::file::pread(&slice.file, &mut buf, slice.pos).map_err(|e| e.to_string())?;
            let mut at = 0usize;
            let mut progressed = false;
            while at + crate::model::limits::batch_header_bytes <= buf.len() {
                let h = crate::model::BatchHeader::new(&buf[at..]).expect("61 bytes");
                let len = h.total_bytes() as usize;
                if len < crate::model::limits::batch_header_bytes || at + len > buf.len() {
                    break;
                }
                let mut bytes = Bytes::copy_from_slice(&buf[at..at + len]);
                if let Ok(set) = RecordBatchDecoder::decode(&mut bytes) {
                    for r in set.records {
                        if r.offset >= offset {
                            self.apply_record(r.key, r.value);
                            applied += 1;
                        }
                    }
                }
                offset = h.last_offset() + 1;
                at += len;
                progressed = true;
            }
            if !progressed {
                return Err(format!(
                    "cannot parse {OFFSETS_TOPIC}-{partition} at offset {offset}"
                ));
            }
        }
        self.logs.borrow_mut().insert(partition, log);
        tracing::debug!(
            partition,
            records = applied,
            "loaded group coordinator partition"
        );
        Ok(())
    }

    /// Gives up a `__consumer_offsets` partition (this broker no longer
    /// leads it): its groups are forgotten here; the new leader loads them.
    pub fn unload_partition(&self, partition: i32) {
        if self.logs.borrow_mut().remove(&partition).is_none() {
            return;
        }
        let n = self.config.offsets_partitions;
        let mut groups = self.groups.borrow_mut();
        let before = groups.len();
        groups.retain(|g, _| partition_for(g, n) != partition);
        tracing::info!(
            partition,
            groups = before - groups.len(),
            "unloaded group coordinator partition"
        );
    }

    fn apply_record(&self, key: Option<Bytes>, value: Option<Bytes>) {
        let Some(key) = key.and_then(Key::decode) else {
            return;
        };
        let now = io::now_ms();
        let mut groups = self.groups.borrow_mut();
        match key {
            Key::Offset {
                group,
                topic,
                partition,
            } => match value.and_then(OffsetValue::decode) {
                Some(v) => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now));
                    g.offsets.insert(
                        (topic, partition),
                        Committed {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp: v.commit_timestamp,
                        },
                    );
                }
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            Key::Group { group } => match value.and_then(GroupValue::decode) {
                Some(v) => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now));
                    restore_group(g, v, now);
                }
                None => {
                    groups.remove(&group);
                }
            },
        }
    }

    /// Appends records to the group's partition and waits until durable.
    async fn persist(&self, group: &str, records: RecordList) -> Result<(), i16> {
        let log = self.log_for(group).ok_or(NOT_COORDINATOR)?;
        let now = io::now_ms();
        let recs: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: now,
                key: Some(k.encode()),
                value: v,
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
        let bytes = buf.freeze();
        let spans = batch::validate(&bytes, usize::MAX).map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
        // As Kafka: group records are written with acks=all.
        crate::replication::append_leader(
            &log.tp,
            bytes,
            spans,
            crate::replication::Acks::All,
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            tracing::warn!(group, error = ?e, "persisting group state failed");
            match e {
                crate::replication::ReplicaError::Code(c, _)
                    if c == crate::protocol::ResponseError::NotLeaderOrFollower.code() =>
                {
                    NOT_COORDINATOR
                }
                _ => COORDINATOR_NOT_AVAILABLE,
            }
        })?;
        Ok(())
    }

    fn group_value(g: &Group) -> GroupValue {
        GroupValue {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation,
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            state_timestamp: g.state_timestamp_ms,
            members: g
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: g
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Persists the group's metadata in the background (after a state change
    /// that nobody is waiting on).
    fn persist_group_later(self: &Rc<Self>, group: &str) {
        let value = match self.groups.borrow().get(group) {
            Some(g) => Self::group_value(g).encode(),
            None => return,
        };
        let me = self.clone();
        let group = group.to_string();
        io::spawn_detached(async move {
            let _ = me
                .persist(
                    &group,
                    vec![(
                        Key::Group {
                            group: group.clone(),
                        },
                        Some(value),
                    )],
                )
                .await;
        });
    }

    pub async fn join(self: &Rc<Self>, req: JoinRequest) -> JoinResult {
        let now = io::now_ms();
        if req.group_id.is_empty() {
            return err_join(INVALID_GROUP_ID, &req.member_id);
        }
        if let Err(code) = self.owns(&req.group_id) {
            return err_join(code, &req.member_id);
        }
        if req.session_timeout_ms < self.config.session_timeout_ms_min
            || req.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return err_join(INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        let outcome = self.join_locked(req, now);
        let result = match outcome {
            Outcome::Now(r) => r,
            Outcome::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| err_join(REBALANCE_IN_PROGRESS, "")),
        };
        result
    }

    fn join_locked(self: &Rc<Self>, req: JoinRequest, now: i64) -> Outcome<JoinResult> {
        let delay = self.config.initial_rebalance_delay_ms;
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        if g.state == GroupState::Dead {
            return Outcome::Now(err_join(COORDINATOR_NOT_AVAILABLE, &req.member_id));
        }
        if !g.accepts(&req.protocol_type, &req.protocols) {
            return Outcome::Now(err_join(INCONSISTENT_GROUP_PROTOCOL, &req.member_id));
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(inst) = &req.instance_id {
                if let Some(old) = g.statics.get(inst).cloned() {
                    // A static member restarted: it takes over its old slot.
                    let new_id = self.new_member_id(&req.client_id);
                    if let Some(mut m) = g.members.shift_remove(&old) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(err_join(FENCED_INSTANCE_ID, &old));
                        }
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: FENCED_INSTANCE_ID,
                                assignment: Bytes::new(),
                            });
                        }
                        m.id = new_id.clone();
                        m.protocols = req.protocols.clone();
                        m.last_heartbeat_ms = now;
                        g.members.insert(new_id.clone(), m);
                    }
                    g.statics.insert(inst.clone(), new_id.clone());
                    let was_leader = g.leader.as_deref() == Some(old.as_str());
                    if was_leader {
                        g.leader = Some(new_id.clone());
                    }
                    if g.state == GroupState::Stable {
                        // No rebalance for a restarted static member: it
                        // gets its stored assignment in SyncGroup. A
                        // restarted leader is told to skip assignment (v9+)
                        // or, before v9, is shown the old leader id so it
                        // acts as a follower, as Kafka does.
                        let skip = was_leader && req.supports_skip_assignment;
                        let leader = if was_leader && !skip {
                            old.clone()
                        } else {
                            g.leader.clone().unwrap_or_default()
                        };
                        return Outcome::Now(JoinResult {
                            error: 0,
                            generation: g.generation,
                            protocol_type: g.protocol_type.clone(),
                            protocol: g.protocol.clone(),
                            leader,
                            member_id: new_id,
                            members: if skip { roster(g) } else { Vec::new() },
                            skip_assignment: skip,
                        });
                    }
                    member_id = new_id;
                } else {
                    member_id = self.new_member_id(&req.client_id);
                    g.statics.insert(inst.clone(), member_id.clone());
                }
            } else if req.require_known_member_id {
                let id = self.new_member_id(&req.client_id);
                g.pending
                    .insert(id.clone(), now + i64::from(req.session_timeout_ms));
                return Outcome::Now(err_join(MEMBER_ID_REQUIRED, &id));
            } else {
                member_id = self.new_member_id(&req.client_id);
            }
        } else if g.pending.remove(&member_id).is_some() {
            // Second step of the two-step join.
        } else if g.members.contains_key(&member_id) {
            if let Some(inst) = &req.instance_id {
                if g.statics.get(inst).is_some_and(|m| *m != member_id) {
                    return Outcome::Now(err_join(FENCED_INSTANCE_ID, &member_id));
                }
            }
            // A known member re-sending the same JoinGroup does not start a
            // rebalance (unless it is the Stable group's leader, whose rejoin
            // signals a metadata change): it gets the current generation.
            let unchanged = g.members[&member_id].protocols == req.protocols;
            let is_leader = g.leader.as_deref() == Some(member_id.as_str());
            let settled = matches!(
                g.state,
                GroupState::Stable | GroupState::CompletingRebalance
            );
            if unchanged && settled && (!is_leader || g.state == GroupState::CompletingRebalance) {
                g.members
                    .get_mut(&member_id)
                    .expect("known")
                    .last_heartbeat_ms = now;
                return Outcome::Now(JoinResult {
                    error: 0,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id,
                    members: if is_leader { roster(g) } else { Vec::new() },
                    skip_assignment: false,
                });
            }
        } else {
            return Outcome::Now(err_join(UNKNOWN_MEMBER_ID, &member_id));
        }
        let is_new = !g.members.contains_key(&member_id);
        if is_new && g.members.len() >= self.config.group_size_max {
            return Outcome::Now(err_join(GROUP_MAX_SIZE_REACHED, &member_id));
        }
        let (tx, rx) = oneshot::channel();
        let m = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.clone(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat_ms: now,
                join_waiter: None,
                sync_waiter: None,
            });
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms.max(0);
        m.last_heartbeat_ms = now;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(err_join(REBALANCE_IN_PROGRESS, &member_id));
        }
        if g.protocol_type.is_none() {
            g.protocol_type = Some(req.protocol_type.clone());
        }
        if g.state == GroupState::PreparingRebalance && is_new {
            g.extend_initial_delay(now, delay);
            // A later, larger rebalance timeout extends the deadline.
            let deadline = g.rebalance_started_ms + i64::from(req.rebalance_timeout_ms.max(0));
            g.rebalance_deadline_ms = g.rebalance_deadline_ms.max(deadline);
        }
        g.prepare_rebalance(now, delay);
        let changed = g.try_complete_join(now);
        let empty = g.state == GroupState::Empty;
        let gid = g.id.clone();
        drop(groups);
        if changed && empty {
            self.persist_group_later(&gid);
        }
        Outcome::Wait(rx)
    }

    pub async fn sync(self: &Rc<Self>, req: SyncRequest) -> SyncResult {
        let now = io::now_ms();
        let err = |code| SyncResult {
            error: code,
            assignment: Bytes::new(),
        };
        if let Err(code) = self.owns(&req.group_id) {
            return err(code);
        }
        let outcome = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&req.group_id) else {
                return err(UNKNOWN_MEMBER_ID);
            };
            if let Err(code) = check_member(
                g,
                &req.member_id,
                req.instance_id.as_deref(),
                req.generation,
            ) {
                return err(code);
            }
            if req
                .protocol_type
                .as_ref()
                .is_some_and(|p| Some(p) != g.protocol_type.as_ref())
                || req
                    .protocol_name
                    .as_ref()
                    .is_some_and(|p| Some(p) != g.protocol.as_ref())
            {
                return err(INCONSISTENT_GROUP_PROTOCOL);
            }
            let m = g.members.get_mut(&req.member_id).expect("checked");
            m.last_heartbeat_ms = now;
            match g.state {
                GroupState::PreparingRebalance => return err(REBALANCE_IN_PROGRESS),
                GroupState::Empty | GroupState::Dead => return err(UNKNOWN_MEMBER_ID),
                GroupState::Stable => Outcome::Now(SyncResult {
                    error: 0,
                    assignment: m.assignment.clone(),
                }),
                GroupState::CompletingRebalance => {
                    let (tx, rx) = oneshot::channel();
                    m.sync_waiter = Some(tx);
                    if g.leader.as_deref() == Some(req.member_id.as_str()) {
                        let assignments: HashMap<String, Bytes> =
                            req.assignments.iter().cloned().collect();
                        let generation = g.generation;
                        let mut value = Self::group_value(g);
                        for mv in &mut value.members {
                            mv.assignment =
                                assignments.get(&mv.member_id).cloned().unwrap_or_default();
                        }
                        let me = self.clone();
                        let gid = req.group_id.clone();
                        io::spawn_detached(async move {
                            let persisted = me
                                .persist(
                                    &gid,
                                    vec![(Key::Group { group: gid.clone() }, Some(value.encode()))],
                                )
                                .await;
                            let mut groups = me.groups.borrow_mut();
                            let Some(g) = groups.get_mut(&gid) else {
                                return;
                            };
                            if g.state != GroupState::CompletingRebalance
                                || g.generation != generation
                            {
                                return;
                            }
                            match persisted {
                                Ok(()) => g.complete_sync(&assignments, io::now_ms()),
                                Err(code) => {
                                    for m in g.members.values_mut() {
                                        if let Some(w) = m.sync_waiter.take() {
                                            let _ = w.send(SyncResult {
                                                error: code,
                                                assignment: Bytes::new(),
                                            });
                                        }
                                    }
                                    g.prepare_rebalance(io::now_ms(), 0);
                                }
                            }
                        });
                    }
                    Outcome::Wait(rx)
                }
            }
        };
        match outcome {
            Outcome::Now(r) => r,
            Outcome::Wait(rx) => rx.await.unwrap_or_else(|_| err(REBALANCE_IN_PROGRESS)),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let now = io::now_ms();
        if let Err(code) = self.owns(group_id) {
            return code;
        }
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if let Err(code) = check_member(g, member_id, instance_id, generation) {
            return code;
        }
        g.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now;
        match g.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    /// Removes members; returns one error code per (member id, instance id).
    pub fn leave(
        self: &Rc<Self>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        let now = io::now_ms();
        self.owns(group_id)?;
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(UNKNOWN_MEMBER_ID);
        };
        let mut out = Vec::with_capacity(members.len());
        let mut any = false;
        for (mid, inst) in members {
            let target = match inst {
                Some(i) => match g.statics.get(i) {
                    Some(known) if mid.is_empty() || known == mid => Some(known.clone()),
                    Some(_) => {
                        out.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => None,
                },
                None => g.members.contains_key(mid).then(|| mid.clone()),
            };
            match target {
                Some(id) if g.members.contains_key(&id) => {
                    g.remove_member(&id);
                    if let Some(i) = inst {
                        g.statics.remove(i);
                    }
                    any = true;
                    out.push(0);
                }
                _ => out.push(UNKNOWN_MEMBER_ID),
            }
        }
        if any {
            match g.state {
                GroupState::Stable | GroupState::CompletingRebalance => g.prepare_rebalance(now, 0),
                _ => {}
            }
            let changed = g.try_complete_join(now);
            let gid = g.id.clone();
            drop(groups);
            if changed {
                self.persist_group_later(&gid);
            }
        }
        Ok(out)
    }

    /// Commits offsets; fills `error` per partition.
    pub async fn commit(
        self: &Rc<Self>,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        parts: &mut [CommitPartition],
    ) {
        let now = io::now_ms();
        let fail = |parts: &mut [CommitPartition], code: i16| {
            for p in parts.iter_mut().filter(|p| p.error == 0) {
                p.error = code;
            }
        };
        if group_id.is_empty() {
            return fail(parts, INVALID_GROUP_ID);
        }
        if let Err(code) = self.owns(group_id) {
            return fail(parts, code);
        }
        {
            let mut groups = self.groups.borrow_mut();
            let g = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let simple = generation < 0 && member_id.is_empty();
            if simple {
                if g.state != GroupState::Empty {
                    return fail(parts, UNKNOWN_MEMBER_ID);
                }
            } else {
                if let Err(code) = check_member(g, member_id, instance_id, generation) {
                    return fail(parts, code);
                }
                if g.state == GroupState::CompletingRebalance {
                    return fail(parts, REBALANCE_IN_PROGRESS);
                }
                if let Some(m) = g.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                }
            }
        }
        for p in parts.iter_mut() {
            if p.error == 0
                && p.metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > self.config.offset_metadata_bytes_max)
            {
                p.error = OFFSET_METADATA_TOO_LARGE;
            }
        }
        let records: RecordList = parts
            .iter()
            .filter(|p| p.error == 0)
            .map(|p| {
                (
                    Key::Offset {
                        group: group_id.to_string(),
                        topic: p.topic.clone(),
                        partition: p.partition,
                    },
                    Some(
                        OffsetValue {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata: p.metadata.clone().unwrap_or_default(),
                            commit_timestamp: now,
                        }
                        .encode(),
                    ),
                )
            })
            .collect();
        if records.is_empty() {
            return;
        }
        if let Err(code) = self.persist(group_id, records).await {
            return fail(parts, code);
        }
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        for p in parts.iter().filter(|p| p.error == 0) {
            g.offsets.insert(
                (p.topic.clone(), p.partition),
                Committed {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone().unwrap_or_default(),
                    commit_timestamp: now,
                },
            );
        }
    }

    /// Committed offsets of a group: all, or the named partitions (with
    /// offset -1 where nothing is committed).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<(String, i32, Committed)>, i16> {
        self.owns(group_id)?;
        let groups = self.groups.borrow();
        let none = Committed {
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: -1,
        };
        let g = groups.get(group_id);
        let mut out = Vec::new();
        match wanted {
            Some(w) => {
                for (t, ps) in w {
                    for &p in ps {
                        let c = g
                            .and_then(|g| g.offsets.get(&(t.clone(), p)))
                            .cloned()
                            .unwrap_or_else(|| none.clone());
                        out.push((t.clone(), p, c));
                    }
                }
            }
            None => {
                if let Some(g) = g {
                    let mut all: Vec<_> = g
                        .offsets
                        .iter()
                        .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                        .collect();
                    all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                    out = all;
                }
            }
        }
        Ok(out)
    }

    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.groups.borrow();
        let mut out: Vec<_> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, i16> {
        self.owns(group_id)?;
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group_id) else {
            return Ok(GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Ok(GroupDescription {
            group_id: g.id.clone(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        if stable {
                            m.metadata_for(&protocol)
                        } else {
                            Bytes::new()
                        },
                        if stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    )
                })
                .collect(),
        })
    }

    pub async fn delete_group(&self, group_id: &str) -> i16 {
        if let Err(code) = self.owns(group_id) {
            return code;
        }
        let records = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(group_id) else {
                return GROUP_ID_NOT_FOUND;
            };
            if g.state != GroupState::Empty {
                return NON_EMPTY_GROUP;
            }
            let mut r: RecordList = g
                .offsets
                .keys()
                .map(|(t, p)| {
                    (
                        Key::Offset {
                            group: group_id.to_string(),
                            topic: t.clone(),
                            partition: *p,
                        },
                        None,
                    )
                })
                .collect();
            r.push((
                Key::Group {
                    group: group_id.to_string(),
                },
                None,
            ));
            r
        };
        if let Err(code) = self.persist(group_id, records).await {
            return code;
        }
        self.groups.borrow_mut().remove(group_id);
        0
    }

    /// OffsetDelete: per-partition error codes, or a group-level error.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        parts: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        self.owns(group_id)?;
        let (codes, records) = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(group_id) else {
                return Err(GROUP_ID_NOT_FOUND);
            };
            let active = g.state != GroupState::Empty;
            let mut codes = Vec::with_capacity(parts.len());
            let mut records = Vec::new();
            for (t, p) in parts {
                if active && g.subscribed_to(t) {
                    codes.push(GROUP_SUBSCRIBED_TO_TOPIC);
                } else {
                    codes.push(0);
                    if g.offsets.contains_key(&(t.clone(), *p)) {
                        records.push((
                            Key::Offset {
                                group: group_id.to_string(),
                                topic: t.clone(),
                                partition: *p,
                            },
                            None,
                        ));
                    }
                }
            }
            (codes, records)
        };
        if !records.is_empty() {
            self.persist(group_id, records).await?;
            let mut groups = self.groups.borrow_mut();
            if let Some(g) = groups.get_mut(group_id) {
                for ((t, p), c) in parts.iter().zip(&codes) {
                    if *c == 0 {
                        g.offsets.remove(&(t.clone(), *p));
                    }
                }
            }
        }
        Ok(codes)
    }

    /// Periodic work: session expiry, join deadlines, offset retention.
    pub fn tick(self: &Rc<Self>, now: i64, expire_offsets: bool) {
        let mut to_persist = Vec::new();
        let mut tombstones: Vec<(String, RecordList)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for g in groups.values_mut() {
                g.pending.retain(|_, deadline| *deadline > now);
                let expired = g.expired_members(now);
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "member session expired");
                    g.remove_member(id);
                }
                if !expired.is_empty()
                    && matches!(
                        g.state,
                        GroupState::Stable | GroupState::CompletingRebalance
                    )
                {
                    g.prepare_rebalance(now, 0);
                }
                if g.try_complete_join(now) {
                    to_persist.push(g.id.clone());
                }
                if expire_offsets && g.state == GroupState::Empty {
                    let retention = self.config.offsets_retention_ms;
                    let old: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, c)| {
                            now - c.commit_timestamp.max(g.state_timestamp_ms) > retention
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !old.is_empty() {
                        for k in &old {
                            g.offsets.remove(k);
                        }
                        let recs = old
                            .into_iter()
                            .map(|(t, p)| {
                                (
                                    Key::Offset {
                                        group: g.id.clone(),
                                        topic: t,
                                        partition: p,
                                    },
                                    None,
                                )
                            })
                            .collect();
                        tombstones.push((g.id.clone(), recs));
                    }
                }
            }
        }
        for gid in to_persist {
            self.persist_group_later(&gid);
        }
        for (gid, recs) in tombstones {
            let me = self.clone();
            io::spawn_detached(async move {
                let _ = me.persist(&gid, recs).await;
            });
        }
    }
}

/// Validates a member's identity and generation.
fn check_member(
    g: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Result<(), i16> {
    if let Some(inst) = instance_id {
        if let Some(known) = g.statics.get(inst) {
            if known != member_id {
                return Err(FENCED_INSTANCE_ID);
            }
        }
    }
    if !g.members.contains_key(member_id) {
        return Err(UNKNOWN_MEMBER_ID);
    }
    if generation != g.generation {
        return Err(ILLEGAL_GENERATION);
    }
    Ok(())
}

fn restore_group(g: &mut Group, v: GroupValue, now: i64) {
    g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
    g.generation = v.generation;
    g.protocol = v.protocol.clone();
    g.leader = v.leader;
    g.members.clear();
    g.statics.clear();
    for m in v.members {
        if let Some(i) = &m.group_instance_id {
            g.statics.insert(i.clone(), m.member_id.clone());
        }
        let protocols = match &v.protocol {
            Some(p) => vec![(p.clone(), m.subscription.clone())],
            None => Vec::new(),
        };
        g.members.insert(
            m.member_id.clone(),
            Member {
                id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout,
                rebalance_timeout_ms: m.rebalance_timeout,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocols,
                assignment: m.assignment,
                last_heartbeat_ms: now,
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }
    g.state = if g.members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    g.state_timestamp_ms = if v.state_timestamp > 0 {
        v.state_timestamp
    } else {
        now
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_matches_kafkas_string_hash() {
        assert_eq!(partition_for("", 50), 0);
        for g in ["a", "group-1", "consumer-group", "ünïcödé"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p));
            assert_eq!(p, partition_for(g, 50));
        }
        // "a".hashCode() == 97
        assert_eq!(partition_for("a", 50), 97 % 50);
        // "ab".hashCode() == 97*31+98 == 3105
        assert_eq!(partition_for("ab", 50), 3105 % 50);
    }
}
