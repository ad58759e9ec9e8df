//! The raft thread of one controller voter: owns the `RawNode`, the durable
//! log, the applied `MetadataImage` and, while leader, the in-memory broker
//! liveness. Everything else talks to it through its inbox channel and
//! reads the published image from `Shared`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::cluster::metadata::MetadataImage;

use super::log_store::{LogStore, RaftStorage};
use super::records::{self, Outcome, Record, Rules};
use super::transport::Peers;
use super::wire::{self, Request, Response};
use super::{
    node_of, prop_bool, prop_i64, raft_id, AdminReply, ControllerConfig, CreateTopic,
    HeartbeatReply,
};

const TICK: Duration = Duration::from_millis(100);
/// Bounds the inbox; senders block when the raft thread falls behind.
pub const INBOX_MAX: usize = 4096;
/// A fence proposal that did not commit is retried after this long.
const FENCE_RETRY: Duration = Duration::from_secs(2);
/// A preferred-leader check runs this long after a broker (re)registers.
const REBALANCE_AFTER_REGISTER: Duration = Duration::from_secs(1);

pub enum Inbox {
    Raft(Box<Message>),
    Client {
        req: Request,
        reply: SyncSender<Response>,
    },
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
}

/// The applied state as connections see it.
pub struct View {
    pub image: Arc<MetadataImage>,
}

/// Shared between the raft thread (writer) and connection threads (readers).
pub struct Shared {
    pub view: Mutex<View>,
    pub changed: Condvar,
    /// This voter's node id.
    pub node_id: i32,
}

/// The record plus who proposed it, so the proposer can answer its client.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Envelope {
    proposer: u64,
    req_id: u64,
    record: Record,
}

enum Waiter {
    Heartbeat(i32),
    Alter,
    /// Results of the items rejected before proposing (`Some`), the others
    /// filled from the apply outcome in order.
    Admin(Vec<Option<(i16, String)>>),
}

struct Settings {
    session_timeout: Duration,
    default_rf: i16,
    auto_rebalance: bool,
    rebalance_interval: Duration,
}

pub struct Node {
    node_id: i32,
    raw: RawNode<RaftStorage>,
    store: LogStore,
    image: MetadataImage,
    rules: Rules,
    settings: Settings,
    shared: Arc<Shared>,
    inbox: Receiver<Inbox>,
    stop: Arc<AtomicBool>,
    pending: HashMap<u64, (SyncSender<Response>, Waiter)>,
    next_req_id: u64,
    leader: Leadership,
}

/// Leader-only, in-memory state; reset whenever this voter becomes leader.
struct Leadership {
    is_leader: bool,
    since: Instant,
    last_seen: HashMap<i32, Instant>,
    fence_proposed: HashMap<i32, Instant>,
    next_rebalance: Instant,
}

impl Node {
    pub fn open(
        cfg: &ControllerConfig,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<(Node, Arc<Shared>, SyncSender<Inbox>)> {
        let id = raft_id(cfg.node_id);
        let voters: Vec<u64> = cfg.voters.iter().map(|(n, _)| raft_id(*n)).collect();
        let snapshot_entries = prop_i64(&cfg.props, "corelog.metadata.snapshot.entries", 1000);
        anyhow::ensure!(
            snapshot_entries > 0,
            "corelog.metadata.snapshot.entries must be > 0"
        );
        let rec = LogStore::open(&cfg.dir, voters, snapshot_entries as u64)?;
        let election_ms = prop_i64(&cfg.props, "controller.quorum.election.timeout.ms", 1000);
        let raft_cfg = raft::Config {
            id,
            election_tick: (election_ms / TICK.as_millis() as i64).max(3) as usize,
            heartbeat_tick: 2,
            applied: rec.image.version,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => id));
        let raw = RawNode::new(&raft_cfg, rec.store.storage(), &logger)?;
        let shared = Arc::new(Shared {
            view: Mutex::new(View {
                image: Arc::new(rec.image.clone()),
            }),
            changed: Condvar::new(),
            node_id: cfg.node_id,
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(INBOX_MAX);
        let interval_ms = match cfg.props.get("leader.imbalance.check.interval.ms") {
            Some(_) => prop_i64(&cfg.props, "leader.imbalance.check.interval.ms", 300_000),
            None => prop_i64(&cfg.props, "leader.imbalance.check.interval.seconds", 300) * 1000,
        };
        let settings = Settings {
            session_timeout: Duration::from_millis(
                prop_i64(&cfg.props, "broker.session.timeout.ms", 9000).max(1) as u64,
            ),
            default_rf: prop_i64(&cfg.props, "default.replication.factor", 1) as i16,
            auto_rebalance: prop_bool(&cfg.props, "auto.leader.rebalance.enable", true),
            rebalance_interval: Duration::from_millis(interval_ms.max(1) as u64),
        };
        let node = Node {
            node_id: cfg.node_id,
            raw,
            store: rec.store,
            image: rec.image,
            rules: Rules {
                unclean: prop_bool(&cfg.props, records::UNCLEAN_ELECTION_PROP, false),
            },
            settings,
            shared: shared.clone(),
            inbox: rx,
            stop,
            pending: HashMap::new(),
            // Distinct from request ids of earlier runs still in the log.
            next_req_id: (uuid::Uuid::new_v4().as_u128() as u64) >> 1,
            leader: Leadership {
                is_leader: false,
                since: Instant::now(),
                last_seen: HashMap::new(),
                fence_proposed: HashMap::new(),
                next_rebalance: Instant::now(),
            },
        };
        Ok((node, shared, tx))
    }

    pub fn run(mut self, peers: Peers) {
        if self.raw.raft.prs().conf().voters().ids().len() == 1 {
            // A single voter need not wait an election timeout.
            let _ = self.raw.campaign();
        }
        let mut next_tick = Instant::now() + TICK;
        while !self.stop.load(Ordering::SeqCst) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                self.raw.tick();
                self.leader_duties();
            }
            if let Err(e) = self.on_ready(&peers) {
                // The durable log failed: this voter must stop taking part.
                tracing::error!(node = self.node_id, "controller raft storage failed: {e:#}");
                break;
            }
        }
        self.fail_pending("controller stopped");
        tracing::info!(node = self.node_id, "controller raft thread stopped");
    }

    fn handle(&mut self, msg: Inbox) {
        match msg {
            Inbox::Raft(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!("raft step: {e}");
                }
            }
            Inbox::Client { req, reply } => self.handle_client(req, reply),
            Inbox::Unreachable(id) => self.raw.report_unreachable(id),
            Inbox::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    fn leader_node(&self) -> i32 {
        node_of(self.raw.raft.leader_id)
    }

    fn handle_client(&mut self, req: Request, reply: SyncSender<Response>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.try_send(Response::NotLeader {
                leader: self.leader_node(),
            });
            return;
        }
        match req {
            Request::FetchMetadata { .. } => unreachable!("served by connection threads"),
            Request::Heartbeat(hb) => {
                self.leader.last_seen.insert(hb.broker_id, Instant::now());
                let current = self.image.brokers.get(&hb.broker_id).is_some_and(|b| {
                    !b.fenced
                        && b.incarnation == hb.incarnation
                        && b.host == hb.host
                        && b.port == hb.port
                });
                if current {
                    let _ = reply.try_send(Response::Heartbeat(HeartbeatReply {
                        fenced: false,
                        version: self.image.version,
                    }));
                    return;
                }
                let broker_id = hb.broker_id;
                let rec = Record::RegisterBroker {
                    id: hb.broker_id,
                    host: hb.host,
                    port: hb.port,
                    incarnation: hb.incarnation,
                };
                self.propose(rec, Some((reply, Waiter::Heartbeat(broker_id))));
            }
            Request::AlterPartition(a) => {
                self.propose(Record::AlterPartition(a), Some((reply, Waiter::Alter)))
            }
            Request::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(topics, validate_only, reply),
            Request::AlterTopicConfigs(changes) => {
                let pre = vec![None; changes.len()];
                self.propose(
                    Record::AlterTopicConfigs(changes),
                    Some((reply, Waiter::Admin(pre))),
                );
            }
            Request::DeleteTopics(names) => {
                let pre = vec![None; names.len()];
                self.propose(
                    Record::DeleteTopics(names),
                    Some((reply, Waiter::Admin(pre))),
                );
            }
            Request::CreatePartitions {
                reqs,
                validate_only,
            } => {
                let plans = reqs
                    .iter()
                    .map(|(topic, count)| {
                        records::plan_partitions(&self.image, topic, *count, random_u64())
                    })
                    .collect();
                self.propose_plans(plans, validate_only, reply, Record::CreatePartitions);
            }
        }
    }

    fn create_topics(
        &mut self,
        topics: Vec<CreateTopic>,
        validate_only: bool,
        reply: SyncSender<Response>,
    ) {
        let plans = topics
            .iter()
            .map(|ct| {
                let id = uuid::Uuid::new_v4().as_u128();
                records::plan_create(&self.image, self.settings.default_rf, ct, random_u64(), id)
            })
            .collect();
        self.propose_plans(plans, validate_only, reply, Record::CreateTopics);
    }

    /// Answers planned admin changes: refusals at once when nothing is left
    /// to commit (or only validating), else everything once committed.
    fn propose_plans<S>(
        &mut self,
        plans: Vec<Result<S, (i16, String)>>,
        validate_only: bool,
        reply: SyncSender<Response>,
        record: impl FnOnce(Vec<S>) -> Record,
    ) {
        let mut pre = Vec::new();
        let mut specs = Vec::new();
        for plan in plans {
            match plan {
                Ok(s) => {
                    specs.push(s);
                    pre.push(None);
                }
                Err(e) => pre.push(Some(e)),
            }
        }
        if validate_only || specs.is_empty() {
            self.reply_admin_now(pre, reply);
        } else {
            self.propose(record(specs), Some((reply, Waiter::Admin(pre))));
        }
    }

    fn reply_admin_now(&self, pre: Vec<Option<(i16, String)>>, reply: SyncSender<Response>) {
        let results = pre.into_iter().map(|p| p.map_or(Ok(()), Err)).collect();
        let _ = reply.try_send(Response::Admin(AdminReply {
            results,
            version: self.image.version,
        }));
    }

    fn propose(&mut self, record: Record, waiter: Option<(SyncSender<Response>, Waiter)>) {
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let req_id = self.next_req_id;
        let env = Envelope {
            proposer: self.raw.raft.id,
            req_id,
            record,
        };
        match self.raw.propose(Vec::new(), wire::encode(&env)) {
            Ok(()) => {
                if let Some(w) = waiter {
                    self.pending.insert(req_id, w);
                }
            }
            Err(e) => {
                if let Some((reply, _)) = waiter {
                    let _ = reply.try_send(Response::Failed(format!("proposal dropped: {e}")));
                }
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        for (_, (reply, _)) in self.pending.drain() {
            let _ = reply.try_send(Response::Failed(why.to_string()));
        }
    }

    /// Leader-only periodic work: fence silent brokers, rebalance leaders.
    fn leader_duties(&mut self) {
        if !self.leader.is_leader {
            return;
        }
        let now = Instant::now();
        let mut fence = Vec::new();
        for b in self.image.live_brokers() {
            let seen = self
                .leader
                .last_seen
                .get(&b.id)
                .copied()
                .unwrap_or(self.leader.since)
                .max(self.leader.since);
            let recently = self
                .leader
                .fence_proposed
                .get(&b.id)
                .is_some_and(|t| now.duration_since(*t) < FENCE_RETRY);
            if now.duration_since(seen) > self.settings.session_timeout && !recently {
                fence.push(b.id);
            }
        }
        for id in fence {
            tracing::info!(broker = id, "broker missed its session timeout; fencing");
            self.leader.fence_proposed.insert(id, now);
            self.propose(Record::FenceBroker { id }, None);
        }
        if self.settings.auto_rebalance && now >= self.leader.next_rebalance {
            self.leader.next_rebalance = now + self.settings.rebalance_interval;
            let tps = records::imbalanced(&self.image);
            if !tps.is_empty() {
                tracing::info!(partitions = tps.len(), "electing preferred leaders");
                self.propose(Record::ElectPreferred(tps), None);
            }
        }
    }

    fn on_ready(&mut self, peers: &Peers) -> anyhow::Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_role_change(ss.raft_state, node_of(ss.leader_id));
        }
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        self.store.append(rd.entries())?;
        self.store.sync()?;
        if let Some(hs) = rd.hs() {
            self.store.set_hardstate(hs.clone())?;
        }
        // Durable now: every message may go out.
        for m in rd.take_messages() {
            peers.send(m);
        }
        for m in rd.take_persisted_messages() {
            peers.send(m);
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed)?;
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        for m in light.take_messages() {
            peers.send(m);
        }
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.store.maybe_snapshot(&self.image)?;
        Ok(())
    }

    fn on_role_change(&mut self, role: StateRole, leader: i32) {
        let was = self.leader.is_leader;
        self.leader.is_leader = role == StateRole::Leader;
        if self.leader.is_leader && !was {
            tracing::info!(
                node = self.node_id,
                term = self.raw.raft.term,
                "became the active controller"
            );
            let now = Instant::now();
            self.leader.since = now;
            self.leader.last_seen.clear();
            self.leader.fence_proposed.clear();
            self.leader.next_rebalance = now + self.settings.rebalance_interval;
        } else if was && !self.leader.is_leader {
            tracing::info!(node = self.node_id, "no longer the active controller");
            self.fail_pending("leadership lost");
        }
        tracing::debug!(node = self.node_id, leader, ?role, "controller raft role");
        self.publish();
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> anyhow::Result<()> {
        let image: MetadataImage = wire::decode(snap.get_data())?;
        anyhow::ensure!(
            image.version == snap.get_metadata().index,
            "snapshot version mismatch"
        );
        tracing::info!(
            index = image.version,
            "installing metadata snapshot from the leader"
        );
        self.store.install_snapshot(snap)?;
        self.image = image;
        self.publish();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            if e.index <= self.image.version {
                continue;
            }
            if e.get_entry_type() != EntryType::EntryNormal || e.get_data().is_empty() {
                // Leader no-ops (and conf changes, which we never propose).
                self.image.version = e.index;
                continue;
            }
            let env: Envelope = wire::decode(e.get_data())?;
            let outcome = records::apply(&mut self.image, &self.rules, e.index, &env.record);
            if matches!(env.record, Record::RegisterBroker { .. }) && self.leader.is_leader {
                let soon = Instant::now() + REBALANCE_AFTER_REGISTER;
                self.leader.next_rebalance = self.leader.next_rebalance.min(soon);
            }
            if env.proposer == self.raw.raft.id {
                if let Some((reply, waiter)) = self.pending.remove(&env.req_id) {
                    let _ = reply.try_send(self.answer(waiter, outcome, e.index));
                }
            }
        }
        self.publish();
        Ok(())
    }

    fn answer(&self, waiter: Waiter, outcome: Outcome, index: u64) -> Response {
        match (waiter, outcome) {
            (Waiter::Heartbeat(id), _) => Response::Heartbeat(HeartbeatReply {
                fenced: self.image.brokers.get(&id).is_none_or(|b| b.fenced),
                version: index,
            }),
            (Waiter::Alter, Outcome::Alter(r)) => Response::Alter(r),
            (Waiter::Admin(pre), Outcome::Admin(applied)) => {
                let mut applied = applied.into_iter();
                let results = pre
                    .into_iter()
                    .map(|p| match p {
                        Some(e) => Err(e),
                        None => applied.next().expect("one outcome per proposed item"),
                    })
                    .collect();
                Response::Admin(AdminReply {
                    results,
                    version: index,
                })
            }
            _ => unreachable!("waiter and record kinds match"),
        }
    }

    fn publish(&self) {
        let mut image = self.image.clone();
        image.controller_id = self.leader_node();
        let mut view = self.shared.view.lock().expect("view lock");
        view.image = Arc::new(image);
        drop(view);
        self.shared.changed.notify_all();
    }
}

fn random_u64() -> u64 {
    uuid::Uuid::new_v4().as_u128() as u64
}

/// Forwards raft-rs's slog output to `tracing` (raft's own INFO is chatty,
/// so it goes to DEBUG; we log role changes ourselves).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!("raft: {msg}{}", kv.0),
            slog::Level::Warning => tracing::warn!("raft: {msg}{}", kv.0),
            slog::Level::Info => tracing::debug!("raft: {msg}{}", kv.0),
            _ => tracing::trace!("raft: {msg}{}", kv.0),
        }
        Ok(())
    }
}

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
