//! Layer 3: partition replication, Kafka's ISR design. Every shard holds a
//! `ReplicaManager` (thread-local, `!Send`) with the role of each replica it
//! owns: leader (tracks each follower's log end offset, advances the high
//! watermark to the ISR minimum, shrinks and expands the ISR through the
//! controller) or follower (fetched by this shard's fetcher for that leader,
//! which truncates by leader epoch and appends the leader's batches
//! verbatim).
//!
//! Roles change only when a metadata image arrives (`apply`); the ISR also
//! changes when the controller accepts this leader's AlterPartition.

pub mod fetcher;
pub mod peer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::io;
use crate::model::TopicPartition;
use crate::protocol::batch::BatchSpan;
use crate::protocol::ResponseError;
use crate::storage::{Appended, PartitionLog, StorageError};

/// Settings, from the broker properties.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub node_id: i32,
    /// `replica.lag.time.max.ms`
    pub lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`
    pub fetch_wait_max_ms: i32,
    /// `replica.fetch.max.bytes`
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`
    pub fetch_backoff_ms: u64,
}

/// An ISR change this leader asks the controller for.
#[derive(Clone, Debug)]
pub struct IsrChange {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
    /// (broker, incarnation) of each member being added, as its fetches
    /// showed it caught up (the controller refuses a restarted broker).
    pub added_incarnations: Vec<(i32, u64)>,
}

/// Sends an ISR change to the controller: the committed (partition epoch,
/// ISR), or the Kafka error code it was refused with.
pub type AlterIsrFn =
    Rc<dyn Fn(IsrChange) -> Pin<Box<dyn Future<Output = Result<(i32, Vec<i32>), i16>>>>>;

/// What the metadata says about one partition (a copy of its state).
#[derive(Clone, Debug)]
pub struct Assignment {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A follower as its leader sees it.
#[derive(Clone, Debug)]
struct Peer {
    /// Its log end offset (from its last fetch), -1 until it fetches.
    leo: i64,
    caught_up_ms: i64,
    last_fetch_ms: i64,
    leader_leo_at_last_fetch: i64,
}

#[derive(Clone, Debug)]
enum Role {
    Leader {
        epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
        replicas: Vec<i32>,
        peers: HashMap<i32, Peer>,
        /// This leader's log end offset when it took over.
        epoch_start: i64,
        alter_in_flight: bool,
        /// Members of an ISR change awaiting the controller: the high
        /// watermark counts them already ("maximal ISR", KIP-497), so an
        /// expansion never commits a member that lacks acknowledged data.
        pending_isr: Vec<i32>,
    },
    Follower {
        leader: i32,
        epoch: i32,
        needs_truncation: bool,
    },
    Offline {
        epoch: i32,
    },
}

/// One partition replica on this shard.
pub struct Replica {
    pub log: Rc<PartitionLog>,
    role: RefCell<Role>,
}

/// Errors of the replication layer, for the handlers to map.
#[derive(Debug, Clone)]
pub enum ReplicaError {
    /// A Kafka error code with an optional message.
    Code(i16, Option<String>),
    Storage(StorageError),
}

impl From<StorageError> for ReplicaError {
    fn from(e: StorageError) -> Self {
        ReplicaError::Storage(e)
    }
}

fn code(e: ResponseError) -> ReplicaError {
    ReplicaError::Code(e.code(), None)
}

/// The replicas of this shard and their fetchers.
pub struct ReplicaManager {
    pub config: ReplicationConfig,
    replicas: RefCell<HashMap<TopicPartition, Rc<Replica>>>,
    /// One fetcher per leader broker this shard follows.
    fetchers: RefCell<HashMap<i32, Rc<fetcher::FetcherToken>>>,
    /// Kafka listener address and incarnation of each live broker.
    brokers: RefCell<HashMap<i32, (SocketAddr, u64)>>,
    alter_isr: AlterIsrFn,
    next_token: Cell<u64>,
}

thread_local! {
    static MANAGER: RefCell<Option<Rc<ReplicaManager>>> = const { RefCell::new(None) };
}

/// This shard's replica manager.
pub fn manager() -> Rc<ReplicaManager> {
    MANAGER
        .with(|m| m.borrow().clone())
        .expect("replica manager not installed")
}

impl ReplicaManager {
    pub fn install(config: ReplicationConfig, alter_isr: AlterIsrFn) -> Rc<Self> {
        let m = Rc::new(Self {
            config,
            replicas: RefCell::new(HashMap::new()),
            fetchers: RefCell::new(HashMap::new()),
            brokers: RefCell::new(HashMap::new()),
            alter_isr,
            next_token: Cell::new(0),
        });
        MANAGER.with(|slot| *slot.borrow_mut() = Some(m.clone()));
        m
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn set_brokers(&self, brokers: HashMap<i32, (SocketAddr, u64)>) {
        *self.brokers.borrow_mut() = brokers;
    }

    pub fn broker_addr(&self, id: i32) -> Option<SocketAddr> {
        self.brokers.borrow().get(&id).map(|b| b.0)
    }

    fn broker_incarnation(&self, id: i32) -> Option<u64> {
        self.brokers.borrow().get(&id).map(|b| b.1)
    }

    pub fn replica(&self, tp: &TopicPartition) -> Option<Rc<Replica>> {
        self.replicas.borrow().get(tp).cloned()
    }

    /// Forgets a replica (its partition was deleted or moved away).
    pub fn remove(&self, tp: &TopicPartition) {
        self.replicas.borrow_mut().remove(tp);
    }

    /// Brings a replica's role in line with the metadata. Returns what
    /// changed: `Some(true)` became leader, `Some(false)` stopped leading,
    /// `None` no leadership change.
    pub fn apply(&self, log: Rc<PartitionLog>, a: &Assignment) -> Option<bool> {
        let me = self.node_id();
        let tp = log.tp.clone();
        let replica = {
            let mut map = self.replicas.borrow_mut();
            map.entry(tp.clone())
                .or_insert_with(|| {
                    log.set_hw_managed(true);
                    Rc::new(Replica {
                        log: log.clone(),
                        role: RefCell::new(Role::Offline { epoch: -1 }),
                    })
                })
                .clone()
        };
        let was_leader = replica.is_leader();
        let current_epoch = replica.leader_epoch();
        if a.leader_epoch < current_epoch {
            return None; // an older image than what we already acted on
        }
        let now = io::now_ms();
        if a.leader == me {
            let mut role = replica.role.borrow_mut();
            match &mut *role {
                Role::Leader {
                    epoch,
                    partition_epoch,
                    isr,
                    replicas,
                    ..
                } if *epoch == a.leader_epoch => {
                    if a.partition_epoch > *partition_epoch {
                        *partition_epoch = a.partition_epoch;
                        *isr = a.isr.clone();
                    }
                    *replicas = a.replicas.clone();
                }
                _ => {
                    if let Err(e) = replica.log.assign_leader_epoch(a.leader_epoch) {
                        tracing::error!(partition = %tp, error = %e, "writing leader epoch checkpoint failed");
                    }
                    let peers = a
                        .replicas
                        .iter()
                        .filter(|&&r| r != me)
                        .map(|&r| {
                            (
                                r,
                                Peer {
                                    leo: -1,
                                    caught_up_ms: now,
                                    last_fetch_ms: now,
                                    leader_leo_at_last_fetch: -1,
                                },
                            )
                        })
                        .collect();
                    tracing::info!(partition = %tp, epoch = a.leader_epoch, isr = ?a.isr, leo = replica.log.log_end_offset(), "became leader");
                    *role = Role::Leader {
                        epoch: a.leader_epoch,
                        partition_epoch: a.partition_epoch,
                        isr: a.isr.clone(),
                        replicas: a.replicas.clone(),
                        peers,
                        epoch_start: replica.log.log_end_offset(),
                        alter_in_flight: false,
                        pending_isr: Vec::new(),
                    };
                }
            }
            drop(role);
            replica.advance_hw();
        } else if a.leader >= 0 {
            let mut role = replica.role.borrow_mut();
            let same = matches!(&*role, Role::Follower { leader, epoch, .. } if *leader == a.leader && *epoch == a.leader_epoch);
            if !same {
                tracing::info!(partition = %tp, leader = a.leader, epoch = a.leader_epoch, "became follower");
                *role = Role::Follower {
                    leader: a.leader,
                    epoch: a.leader_epoch,
                    needs_truncation: true,
                };
                drop(role);
                self.ensure_fetcher(a.leader);
            }
        } else {
            let mut role = replica.role.borrow_mut();
            if !matches!(&*role, Role::Offline { epoch } if *epoch == a.leader_epoch) {
                tracing::warn!(partition = %tp, epoch = a.leader_epoch, "partition offline: no leader");
                *role = Role::Offline {
                    epoch: a.leader_epoch,
                };
            }
        }
        let is_leader = replica.is_leader();
        (is_leader != was_leader).then_some(is_leader)
    }

    /// Starts a fetcher for `leader` on this shard unless one runs.
    fn ensure_fetcher(&self, leader: i32) {
        if self.fetchers.borrow().contains_key(&leader) {
            return;
        }
        let id = self.next_token.get() + 1;
        self.next_token.set(id);
        let token = Rc::new(fetcher::FetcherToken { leader, id });
        self.fetchers.borrow_mut().insert(leader, token.clone());
        io::spawn_detached(fetcher::run(token));
    }

    /// Whether the fetcher holding `token` should keep running.
    pub(crate) fn fetcher_current(&self, token: &fetcher::FetcherToken) -> bool {
        self.fetchers
            .borrow()
            .get(&token.leader)
            .is_some_and(|t| t.id == token.id)
    }

    pub(crate) fn retire_fetcher(&self, token: &fetcher::FetcherToken) {
        let mut f = self.fetchers.borrow_mut();
        if f.get(&token.leader).is_some_and(|t| t.id == token.id) {
            f.remove(&token.leader);
        }
    }

    /// Follower replicas whose leader is `leader`: (replica, leader epoch,
    /// needs truncation).
    pub(crate) fn following(&self, leader: i32) -> Vec<(Rc<Replica>, i32, bool)> {
        self.replicas
            .borrow()
            .values()
            .filter_map(|r| match &*r.role.borrow() {
                Role::Follower {
                    leader: l,
                    epoch,
                    needs_truncation,
                } if *l == leader => Some((r.clone(), *epoch, *needs_truncation)),
                _ => None,
            })
            .collect()
    }

    /// Every replica this shard leads (for the ISR check and the tools).
    pub fn led(&self) -> Vec<Rc<Replica>> {
        self.replicas
            .borrow()
            .values()
            .filter(|r| r.is_leader())
            .cloned()
            .collect()
    }

    /// Shrinks the ISR of led partitions whose followers stopped catching
    /// up within `replica.lag.time.max.ms`. Runs periodically.
    pub fn check_isr(&self) {
        let now = io::now_ms();
        let lag = self.config.lag_time_max_ms;
        for r in self.led() {
            let change = {
                let role = r.role.borrow();
                let Role::Leader {
                    epoch,
                    partition_epoch,
                    isr,
                    peers,
                    alter_in_flight,
                    ..
                } = &*role
                else {
                    continue;
                };
                if *alter_in_flight {
                    continue;
                }
                let out: Vec<i32> = isr
                    .iter()
                    .copied()
                    .filter(|id| peers.get(id).is_some_and(|p| now - p.caught_up_ms > lag))
                    .collect();
                if out.is_empty() {
                    continue;
                }
                tracing::info!(partition = %r.log.tp, lagging = ?out, lag_ms = lag, "shrinking ISR");
                IsrChange {
                    tp: r.log.tp.clone(),
                    leader_epoch: *epoch,
                    partition_epoch: *partition_epoch,
                    new_isr: isr.iter().copied().filter(|i| !out.contains(i)).collect(),
                    added_incarnations: Vec::new(),
                }
            };
            self.propose_isr(r, change);
        }
    }

    fn propose_isr(&self, r: Rc<Replica>, change: IsrChange) {
        if let Role::Leader {
            alter_in_flight,
            pending_isr,
            ..
        } = &mut *r.role.borrow_mut()
        {
            *alter_in_flight = true;
            *pending_isr = change.new_isr.clone();
        }
        let call = (self.alter_isr)(change.clone());
        io::spawn_detached(async move {
            let result = call.await;
            let mut role = r.role.borrow_mut();
            let Role::Leader {
                epoch,
                partition_epoch,
                isr,
                alter_in_flight,
                pending_isr,
                ..
            } = &mut *role
            else {
                return;
            };
            if *epoch != change.leader_epoch {
                return; // a later leadership of ours; its own alter is its own
            }
            *alter_in_flight = false;
            pending_isr.clear();
            match result {
                Ok((pe, new_isr)) if *epoch == change.leader_epoch => {
                    if pe > *partition_epoch {
                        tracing::info!(partition = %r.log.tp, isr = ?new_isr, "ISR changed");
                        *partition_epoch = pe;
                        *isr = new_isr;
                    }
                    drop(role);
                    r.advance_hw();
                }
                Ok(_) => {}
                Err(code) => {
                    tracing::info!(partition = %r.log.tp, error = code, "ISR change refused; waiting for metadata");
                }
            }
        });
    }
}

impl Replica {
    pub fn is_leader(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leader { .. })
    }

    pub fn leader_epoch(&self) -> i32 {
        match &*self.role.borrow() {
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } | Role::Offline { epoch } => {
                *epoch
            }
        }
    }

    /// The ISR as this leader knows it (empty when not leader).
    pub fn isr(&self) -> Vec<i32> {
        match &*self.role.borrow() {
            Role::Leader { isr, .. } => isr.clone(),
            _ => Vec::new(),
        }
    }

    fn isr_len(&self) -> usize {
        match &*self.role.borrow() {
            Role::Leader { isr, .. } => isr.len(),
            _ => 0,
        }
    }

    /// Checks that this replica leads, and the client's view of the leader
    /// epoch (-1: not given) is current.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), ReplicaError> {
        match &*self.role.borrow() {
            Role::Leader { epoch, .. } => check_epoch(*epoch, current_leader_epoch),
            Role::Follower { epoch, .. } | Role::Offline { epoch } => {
                if current_leader_epoch >= 0 && current_leader_epoch > *epoch {
                    Err(code(ResponseError::UnknownLeaderEpoch))
                } else {
                    Err(code(ResponseError::NotLeaderOrFollower))
                }
            }
        }
    }

    /// High watermark = the smallest log end offset in the ISR.
    fn advance_hw(&self) {
        let hw = {
            let role = self.role.borrow();
            let Role::Leader {
                isr,
                peers,
                pending_isr,
                ..
            } = &*role
            else {
                return;
            };
            let mut hw = self.log.log_end_offset();
            for id in isr.iter().chain(pending_isr.iter()) {
                if let Some(p) = peers.get(id) {
                    hw = hw.min(if p.leo >= 0 {
                        p.leo
                    } else {
                        self.log.high_watermark()
                    });
                }
            }
            hw
        };
        if hw > self.log.high_watermark() {
            self.log.set_high_watermark(hw);
        }
    }

    /// A follower fetched from `fetch_offset`: note its progress, advance
    /// the high watermark, and ask for it to rejoin the ISR when caught up.
    fn on_follower_fetch(self: &Rc<Self>, replica_id: i32, fetch_offset: i64) -> Option<IsrChange> {
        let now = io::now_ms();
        // The process behind this fetch, as this broker's metadata knows it.
        let incarnation = manager().broker_incarnation(replica_id);
        let leo = self.log.log_end_offset();
        let hw = self.log.high_watermark();
        let change = {
            let mut role = self.role.borrow_mut();
            let Role::Leader {
                epoch,
                partition_epoch,
                isr,
                replicas,
                peers,
                epoch_start,
                alter_in_flight,
                ..
            } = &mut *role
            else {
                return None;
            };
            let p = peers.entry(replica_id).or_insert(Peer {
                leo: -1,
                caught_up_ms: now,
                last_fetch_ms: now,
                leader_leo_at_last_fetch: -1,
            });
            if fetch_offset >= leo {
                p.caught_up_ms = now;
            } else if fetch_offset >= p.leader_leo_at_last_fetch {
                p.caught_up_ms = p.caught_up_ms.max(p.last_fetch_ms);
            }
            p.leader_leo_at_last_fetch = leo;
            p.last_fetch_ms = now;
            p.leo = fetch_offset;
            let rejoin = !isr.contains(&replica_id)
                && replicas.contains(&replica_id)
                && fetch_offset >= hw
                && fetch_offset >= *epoch_start
                && !*alter_in_flight;
            // Unknown to this broker's metadata (not registered, or fenced):
            // it cannot join yet.
            incarnation.filter(|_| rejoin).map(|incarnation| {
                let mut new_isr = isr.clone();
                new_isr.push(replica_id);
                tracing::info!(partition = %self.log.tp, replica = replica_id, "follower caught up: expanding ISR");
                IsrChange {
                    tp: self.log.tp.clone(),
                    leader_epoch: *epoch,
                    partition_epoch: *partition_epoch,
                    new_isr,
                    added_incarnations: vec![(replica_id, incarnation)],
                }
            })
        };
        self.advance_hw();
        change
    }

    pub(crate) fn set_truncated(&self, epoch_seen: i32) {
        if let Role::Follower {
            epoch,
            needs_truncation,
            ..
        } = &mut *self.role.borrow_mut()
        {
            if *epoch == epoch_seen {
                *needs_truncation = false;
            }
        }
    }

    pub(crate) fn set_needs_truncation(&self) {
        if let Role::Follower {
            needs_truncation, ..
        } = &mut *self.role.borrow_mut()
        {
            *needs_truncation = true;
        }
    }

    /// Whether this replica still follows `leader` at `epoch`.
    pub(crate) fn follows(&self, leader: i32, epoch: i32) -> bool {
        matches!(&*self.role.borrow(), Role::Follower { leader: l, epoch: e, .. } if *l == leader && *e == epoch)
    }
}

fn check_epoch(ours: i32, theirs: i32) -> Result<(), ReplicaError> {
    if theirs < 0 || theirs == ours {
        Ok(())
    } else if theirs < ours {
        Err(code(ResponseError::FencedLeaderEpoch))
    } else {
        Err(code(ResponseError::UnknownLeaderEpoch))
    }
}

/// The replica of `tp` on this shard, or UNKNOWN_TOPIC_OR_PARTITION.
pub fn replica(tp: &TopicPartition) -> Result<Rc<Replica>, ReplicaError> {
    manager()
        .replica(tp)
        .ok_or(code(ResponseError::UnknownTopicOrPartition))
}

/// The log of a partition this shard leads (for consumers and tools).
pub fn leader_log(
    tp: &TopicPartition,
    current_leader_epoch: i32,
) -> Result<Rc<PartitionLog>, ReplicaError> {
    let r = match manager().replica(tp) {
        Some(r) => r,
        None => return Err(code(ResponseError::NotLeaderOrFollower)),
    };
    r.check_leader(current_leader_epoch)?;
    Ok(r.log.clone())
}

/// How a produce wants to be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn from_kafka(acks: i16) -> Option<Self> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Appends on the leader. acks=all: refuses with NOT_ENOUGH_REPLICAS when
/// the ISR is below `min.insync.replicas`, fsyncs when the topic asks, then
/// waits until the high watermark covers the batch (REQUEST_TIMED_OUT after
/// `timeout`), and answers NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR
/// shrank below the minimum meanwhile.
pub async fn append_leader(
    tp: &TopicPartition,
    records: Bytes,
    spans: Vec<BatchSpan>,
    acks: Acks,
    timeout: Duration,
) -> Result<Appended, ReplicaError> {
    let r = match manager().replica(tp) {
        Some(r) => r,
        None => return Err(code(ResponseError::NotLeaderOrFollower)),
    };
    r.check_leader(-1)?;
    let (min_isr, flush_on_ack_all) = r.log.ack_all_policy();
    let min_isr = min_isr.max(1) as usize;
    if acks == Acks::All && r.isr_len() < min_isr {
        return Err(ReplicaError::Code(
            ResponseError::NotEnoughReplicas.code(),
            Some(format!(
                "ISR {:?} is smaller than min.insync.replicas {min_isr}",
                r.isr()
            )),
        ));
    }
    let epoch = r.leader_epoch();
    let appended = r.log.append(records, spans).await?;
    r.advance_hw();
    if acks != Acks::All {
        return Ok(appended);
    }
    if flush_on_ack_all {
        r.log.sync_to(appended.last_offset + 1).await?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        // Leadership first: a former leader's high watermark comes from the
        // new leader and may cover a different batch at these offsets.
        if !r.is_leader() || r.leader_epoch() != epoch {
            return Err(code(ResponseError::NotLeaderOrFollower));
        }
        if r.log.high_watermark() > appended.last_offset {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReplicaError::Code(
                ResponseError::RequestTimedOut.code(),
                Some("the ISR did not replicate the batch in time".into()),
            ));
        }
        let wake = r.log.on_append();
        let nap = (deadline - now).min(Duration::from_millis(100));
        futures::future::select(wake, Box::pin(io::sleep(nap))).await;
    }
    if r.isr_len() < min_isr {
        return Err(ReplicaError::Code(
            ResponseError::NotEnoughReplicasAfterAppend.code(),
            Some(format!(
                "written, but the ISR {:?} shrank below min.insync.replicas {min_isr}",
                r.isr()
            )),
        ));
    }
    Ok(appended)
}

/// A follower's fetch reached the leader: validate it and note progress.
/// Returns the log to read from (up to its log end offset).
pub fn follower_fetch(
    tp: &TopicPartition,
    replica_id: i32,
    fetch_offset: i64,
    current_leader_epoch: i32,
) -> Result<Rc<PartitionLog>, ReplicaError> {
    let m = manager();
    let r = m
        .replica(tp)
        .ok_or(code(ResponseError::NotLeaderOrFollower))?;
    r.check_leader(current_leader_epoch)?;
    // A fetch offset outside this log is no progress report: the follower
    // must truncate first (and never counts as caught up); the read answers
    // it with OFFSET_OUT_OF_RANGE and this log's start.
    if fetch_offset > r.log.log_end_offset() || fetch_offset < r.log.log_start_offset() {
        return Ok(r.log.clone());
    }
    if let Some(change) = r.on_follower_fetch(replica_id, fetch_offset) {
        m.propose_isr(r.clone(), change);
    }
    Ok(r.log.clone())
}

/// OffsetsForLeaderEpoch on the leader: the end offset of `epoch` here.
pub fn epoch_end_offset(
    tp: &TopicPartition,
    epoch: i32,
    current_leader_epoch: i32,
) -> Result<(i32, i64), ReplicaError> {
    let log = leader_log(tp, current_leader_epoch)?;
    Ok(log.end_offset_for_epoch(epoch))
}

/// Stops every fetcher of this shard (shutdown).
pub fn stop_fetchers() {
    if let Some(m) = MANAGER.with(|m| m.borrow().clone()) {
        m.fetchers.borrow_mut().clear();
    }
}
