//! One consumer group's membership state machine (Kafka's classic
//! protocol): Empty -> PreparingRebalance -> CompletingRebalance -> Stable,
//! with generations, a leader, static members and per-member waiters. Pure:
//! no I/O; the coordinator persists and answers. Lives on the shard that owns
//! the group's `__consumer_offsets` partition.

use std::collections::HashMap;

use bytes::Bytes;
use futures::channel::oneshot;
use indexmap::IndexMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup waiter receives when the rebalance completes.
#[derive(Clone, Debug)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// v9+: a restarted static leader keeps the current assignment.
    pub skip_assignment: bool,
}

impl JoinResult {
    /// A JoinGroup answer carrying only an error code.
    pub fn error(code: i16, member_id: &str) -> Self {
        Self {
            error: code,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyncResult {
    pub error: i16,
    pub assignment: Bytes,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their deadline.
    pub pending: HashMap<String, i64>,
    /// group.instance.id -> member id.
    pub statics: HashMap<String, String>,
    pub rebalance_started_ms: i64,
    pub rebalance_deadline_ms: i64,
    /// While set, the first rebalance of an empty group waits for more members.
    pub initial_delay_until_ms: Option<i64>,
    pub offsets: HashMap<(String, i32), Committed>,
    pub state_timestamp_ms: i64,
}

pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_started_ms: 0,
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            offsets: HashMap::new(),
            state_timestamp_ms: now_ms,
        }
    }

    fn set_state(&mut self, s: GroupState, now_ms: i64) {
        self.state = s;
        self.state_timestamp_ms = now_ms;
    }

    /// Protocols every member supports, in the first member's order.
    fn common_protocols(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        common
    }

    /// Would a member with these protocols fit the group?
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let common = self.common_protocols();
        protocols.iter().any(|(n, _)| common.contains(n))
    }

    /// Starts (or restarts) a rebalance.
    pub fn prepare_rebalance(&mut self, now_ms: i64, initial_delay_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult {
                        error: REBALANCE_IN_PROGRESS,
                        assignment: Bytes::new(),
                    });
                }
                m.assignment = Bytes::new();
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0) as i64;
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let from_empty = self.state == GroupState::Empty;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        self.rebalance_started_ms = now_ms;
        self.rebalance_deadline_ms = now_ms + rebalance_timeout;
        self.initial_delay_until_ms = None;
        if from_empty && initial_delay_ms > 0 {
            let until = (now_ms + initial_delay_ms).min(self.rebalance_deadline_ms);
            self.initial_delay_until_ms = Some(until);
        }
    }

    /// A new member arrived during the initial delay: wait a little longer.
    pub fn extend_initial_delay(&mut self, now_ms: i64, initial_delay_ms: i64) {
        if let Some(until) = self.initial_delay_until_ms {
            let cap = self.rebalance_deadline_ms;
            self.initial_delay_until_ms = Some((now_ms + initial_delay_ms).min(cap).max(until));
        }
    }

    /// Completes the join phase if everyone is in or time is up. Returns true
    /// when the group changed and should be persisted.
    pub fn try_complete_join(&mut self, now_ms: i64) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_in =
            self.members.values().all(|m| m.join_waiter.is_some()) && self.pending.is_empty();
        let delayed = self.initial_delay_until_ms.is_some_and(|u| now_ms < u);
        let timed_out = now_ms >= self.rebalance_deadline_ms;
        let due = if delayed { false } else { all_in || timed_out };
        let due = due || (timed_out && delayed);
        if !due {
            return false;
        }
        // Members that did not rejoin in time are gone.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.initial_delay_until_ms = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return true;
        }
        self.protocol = Some(self.select_protocol());
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol.as_deref().unwrap_or(""),
            "rebalance completed join phase"
        );
        let protocol = self.protocol.clone().expect("selected");
        let leader = self.leader.clone().expect("chosen");
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
            m.last_heartbeat_ms = now_ms;
        }
        true
    }

    /// Each member votes for its most preferred common protocol.
    fn select_protocol(&self) -> String {
        let common = self.common_protocols();
        let mut votes: IndexMap<&str, usize> = common.iter().map(|p| (p.as_str(), 0)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.get_mut(n.as_str()).expect("common") += 1;
            }
        }
        votes
            .iter()
            .max_by_key(|(_, &v)| v)
            .map(|(p, _)| p.to_string())
            .unwrap_or_default()
    }

    pub fn remove_member(&mut self, id: &str) -> Option<Member> {
        let mut m = self.members.shift_remove(id)?;
        if let Some(inst) = &m.instance_id {
            if self.statics.get(inst).is_some_and(|mid| mid == id) {
                self.statics.remove(inst);
            }
        }
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(UNKNOWN_MEMBER_ID, id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult {
                error: UNKNOWN_MEMBER_ID,
                assignment: Bytes::new(),
            });
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// The leader's SyncGroup: store assignments and become Stable.
    pub fn complete_sync(&mut self, assignments: &HashMap<String, Bytes>, now_ms: i64) {
        for m in self.members.values_mut() {
            m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
        }
        self.set_state(GroupState::Stable, now_ms);
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: 0,
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    /// Members whose session expired (not those waiting in a join or sync).
    pub fn expired_members(&self, now_ms: i64) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
            .filter(|m| now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms))
            .map(|m| m.id.clone())
            .collect()
    }

    /// Is the group's consumer protocol subscribed to `topic`?
    pub fn subscribed_to(&self, topic: &str) -> bool {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return false;
        }
        let Some(protocol) = &self.protocol else {
            return false;
        };
        self.members.values().any(|m| {
            let mut meta = m.metadata_for(protocol);
            if meta.len() < 2 {
                return false;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]).clamp(0, 3);
            let _ = bytes::Buf::get_i16(&mut meta);
            ConsumerProtocolSubscription::decode(&mut meta, version)
                .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
                .unwrap_or(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from_static(b"m")))
                .collect(),
            assignment: Bytes::new(),
            last_heartbeat_ms: 0,
            join_waiter: None,
            sync_waiter: None,
        }
    }

    #[test]
    fn two_members_join_then_leader_syncs_to_stable() {
        let mut g = Group::new("g", 0);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let mut a = member("a", &["range", "roundrobin"]);
        a.join_waiter = Some(tx1);
        let mut b = member("b", &["roundrobin", "range"]);
        b.join_waiter = Some(tx2);
        g.protocol_type = Some("consumer".into());
        g.members.insert("a".into(), a);
        g.members.insert("b".into(), b);
        g.prepare_rebalance(0, 0);
        assert!(g.try_complete_join(1));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation, 1);
        let ja = rx1.try_recv().unwrap().unwrap();
        let jb = rx2.try_recv().unwrap().unwrap();
        assert_eq!(ja.leader, "a");
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty());
        let mut asg = HashMap::new();
        asg.insert("b".to_string(), Bytes::from_static(b"p1"));
        g.complete_sync(&asg, 2);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.members["b"].assignment.as_ref(), b"p1");
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_deadline() {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        let (tx, _rx) = oneshot::channel();
        let mut a = member("a", &["range"]);
        a.join_waiter = Some(tx);
        g.members.insert("a".into(), a);
        g.members.insert("b".into(), member("b", &["range"]));
        g.prepare_rebalance(0, 0);
        assert!(!g.try_complete_join(1));
        assert!(g.try_complete_join(5_000));
        assert_eq!(g.members.len(), 1);
        assert!(g.members.contains_key("a"));
    }

    #[test]
    fn initial_delay_holds_the_first_rebalance() {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        let (tx, _rx) = oneshot::channel();
        let mut a = member("a", &["range"]);
        a.join_waiter = Some(tx);
        g.members.insert("a".into(), a);
        g.prepare_rebalance(0, 3_000);
        assert!(!g.try_complete_join(100));
        assert!(g.try_complete_join(3_000));
    }

    #[test]
    fn protocol_vote_picks_the_most_preferred_common_protocol() {
        let mut g = Group::new("g", 0);
        g.members.insert("a".into(), member("a", &["x", "y"]));
        g.members.insert("b".into(), member("b", &["y", "x"]));
        g.members.insert("c".into(), member("c", &["y"]));
        assert_eq!(g.select_protocol(), "y");
    }
}
