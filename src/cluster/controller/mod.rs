//! The controller quorum (KRaft-like): cluster metadata replicated as a
//! Raft log (tikv `raft`, synchronous `RawNode`) among controller voters.
//!
//! Runs on plain std threads, never on a glommio shard: one raft thread
//! owns the `RawNode`, the durable log and the `MetadataImage`; one thread
//! accepts connections and one serves each connection; one sender thread
//! per peer voter. Brokers talk to it with the blocking `ControllerClient`
//! from a blocking pool; it must never be called from async code.
//!
//! Layout: `records` (the state machine), `node` (the raft loop),
//! `log_store` (durable raft log and snapshots), `transport` (listener and
//! peer senders), `wire` (frames), `client`.

mod client;
mod log_store;
mod node;
mod records;
mod transport;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use client::ControllerClient;
pub use records::{
    FENCED_LEADER_EPOCH, INELIGIBLE_REPLICA, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
    INVALID_REPLICA_ASSIGNMENT, INVALID_REQUEST, INVALID_UPDATE_VERSION, NOT_CONTROLLER,
    TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION,
};

use crate::cluster::metadata::PartitionState;

/// How one controller voter runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Kafka node id (may be 0; the raft id is `node_id + 1`).
    pub node_id: i32,
    /// Controller listener; port 0 is allowed in single-node mode.
    pub listen: SocketAddr,
    /// All voters including this one.
    pub voters: Vec<(i32, SocketAddr)>,
    /// Holds the raft log, hard state and snapshot (created if missing).
    pub dir: PathBuf,
    /// Kafka broker properties.
    pub props: BTreeMap<String, String>,
}

/// A broker's periodic registration and liveness signal.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerHeartbeat {
    pub broker_id: i32,
    pub host: String,
    pub port: u16,
    pub incarnation: u64,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The metadata version at which the broker's registration holds.
    pub version: u64,
}

/// An ISR change proposed by a partition leader.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
    /// For each member being added: the incarnation (process) of that
    /// broker whose fetches showed it caught up. A broker that restarted
    /// since (and may have lost its unflushed tail) is refused (KIP-903).
    pub added_incarnations: Vec<(i32, u64)>,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica lists per partition.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
    pub id: Option<u128>,
}

/// A change of one topic's config overrides: `set` and `remove` applied to
/// the current overrides, or `set` replacing them all (`replace_all`, the
/// legacy AlterConfigs).
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicConfigChange {
    pub topic: String,
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
    pub replace_all: bool,
}

/// One result per requested item, in order, plus the metadata version at
/// which the change is committed.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AdminReply {
    pub results: Vec<Result<(), (i16, String)>>,
    pub version: u64,
}

/// Result of `ControllerClient::alter_partition`.
pub type AlterResult = Result<PartitionState, i16>;

/// A running controller voter. Dropping it stops it.
pub struct ControllerHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ControllerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops every controller thread and waits for them (the durable state
    /// stays in `dir`, so `start` on the same dir resumes).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, which blocks in accept().
        let _ = std::net::TcpStream::connect_timeout(
            &self.local_addr,
            std::time::Duration::from_millis(200),
        );
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the controller threads; returns once the listener is bound.
pub fn start(cfg: ControllerConfig) -> anyhow::Result<ControllerHandle> {
    anyhow::ensure!(
        cfg.voters.iter().any(|(id, _)| *id == cfg.node_id),
        "controller {} is not among the voters {:?}",
        cfg.node_id,
        cfg.voters
    );
    std::fs::create_dir_all(&cfg.dir)?;
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    let local_addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (node, shared, inbox) = node::Node::open(&cfg, stop.clone())?;
    let mut threads = Vec::new();
    let peers = transport::start_peers(&cfg, &stop, &inbox, &mut threads)?;
    threads.push(
        std::thread::Builder::new()
            .name(format!("ctrl-raft-{}", cfg.node_id))
            .spawn(move || node.run(peers))?,
    );
    let accept = transport::Acceptor {
        listener,
        inbox,
        shared,
        stop: stop.clone(),
    };
    threads.push(
        std::thread::Builder::new()
            .name(format!("ctrl-accept-{}", cfg.node_id))
            .spawn(move || accept.run())?,
    );
    tracing::info!(node = cfg.node_id, %local_addr, "controller started");
    Ok(ControllerHandle {
        local_addr,
        stop,
        threads,
    })
}

/// The raft id of a Kafka node id (raft ids must be positive).
fn raft_id(node_id: i32) -> u64 {
    assert!(node_id >= 0, "node ids are not negative");
    node_id as u64 + 1
}

fn node_of(raft_id: u64) -> i32 {
    if raft_id == 0 {
        -1
    } else {
        (raft_id - 1) as i32
    }
}

fn prop_i64(props: &BTreeMap<String, String>, key: &str, default: i64) -> i64 {
    props
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn prop_bool(props: &BTreeMap<String, String>, key: &str, default: bool) -> bool {
    props
        .get(key)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(default)
}
