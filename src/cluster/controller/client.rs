//! The blocking client brokers use to reach the controller quorum.
//!
//! Called from blocking threads only (it sleeps and blocks on sockets).
//! Every request goes to the active controller (metadata reads too: a
//! voter cut off from the quorum would serve a stale image). Finds it by
//! following "not leader, leader is N" hints, keeps idle connections for
//! reuse, and gives up after a per-call deadline.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::metadata::{MetadataImage, PartitionState};

use super::wire::{self, Request, Response, KIND_REQUEST, KIND_RESPONSE};
use super::{AdminReply, AlterPartition, BrokerHeartbeat, CreateTopic, HeartbeatReply};

/// Deadline of a call that needs the leader.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time a long poll gets beyond its wait.
const FETCH_SLACK: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for one voter's answer before trying the next.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause when no voter knows a leader (an election is running).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Idle connections kept per client.
const IDLE_MAX: usize = 8;

#[derive(Clone)]
pub struct ControllerClient {
    inner: Arc<Inner>,
}

struct Inner {
    voters: Vec<(i32, SocketAddr)>,
    /// Idle connections by voter index.
    idle: Mutex<Vec<(usize, TcpStream)>>,
    /// Index of the voter that last answered (the active controller).
    leader: Mutex<usize>,
}

impl ControllerClient {
    pub fn new(voters: Vec<(i32, SocketAddr)>) -> Self {
        assert!(!voters.is_empty(), "a controller quorum has voters");
        ControllerClient {
            inner: Arc::new(Inner {
                voters,
                idle: Mutex::new(Vec::new()),
                leader: Mutex::new(0),
            }),
        }
    }

    /// Registration and liveness; returns once any needed registration
    /// record is committed.
    pub fn heartbeat(&self, hb: &BrokerHeartbeat) -> anyhow::Result<HeartbeatReply> {
        match self.call(Request::Heartbeat(hb.clone()), CALL_TIMEOUT)? {
            Response::Heartbeat(r) => Ok(r),
            other => anyhow::bail!("unexpected controller reply {other:?}"),
        }
    }

    /// Long poll: `Some(image)` once the committed version exceeds
    /// `known_version`, `None` after `wait`.
    pub fn fetch_metadata(
        &self,
        known_version: u64,
        wait: Duration,
    ) -> anyhow::Result<Option<MetadataImage>> {
        let req = Request::FetchMetadata {
            known_version,
            wait_ms: wait.as_millis() as u64,
        };
        match self.call_with(req, wait + FETCH_SLACK, wait + ATTEMPT_TIMEOUT / 2)? {
            Response::Metadata(m) => Ok(m),
            other => anyhow::bail!("unexpected controller reply {other:?}"),
        }
    }

    /// `Ok(Ok(state))` once committed, `Ok(Err(kafka_error_code))` if refused.
    pub fn alter_partition(
        &self,
        req: &AlterPartition,
    ) -> anyhow::Result<Result<PartitionState, i16>> {
        match self.call(Request::AlterPartition(req.clone()), CALL_TIMEOUT)? {
            Response::Alter(r) => Ok(r),
            other => anyhow::bail!("unexpected controller reply {other:?}"),
        }
    }

    pub fn create_topics(
        &self,
        topics: Vec<CreateTopic>,
        validate_only: bool,
    ) -> anyhow::Result<AdminReply> {
        self.admin(Request::CreateTopics {
            topics,
            validate_only,
        })
    }

    pub fn delete_topics(&self, names: Vec<String>) -> anyhow::Result<AdminReply> {
        self.admin(Request::DeleteTopics(names))
    }

    /// Changes topic config overrides (IncrementalAlterConfigs, AlterConfigs).
    pub fn alter_topic_configs(
        &self,
        changes: Vec<super::TopicConfigChange>,
    ) -> anyhow::Result<AdminReply> {
        self.admin(Request::AlterTopicConfigs(changes))
    }

    /// `(topic, new total partition count)` per item.
    pub fn create_partitions(
        &self,
        reqs: Vec<(String, i32)>,
        validate_only: bool,
    ) -> anyhow::Result<AdminReply> {
        self.admin(Request::CreatePartitions {
            reqs,
            validate_only,
        })
    }

    fn admin(&self, req: Request) -> anyhow::Result<AdminReply> {
        match self.call(req, CALL_TIMEOUT)? {
            Response::Admin(r) => Ok(r),
            other => anyhow::bail!("unexpected controller reply {other:?}"),
        }
    }

    /// Sends `req` to the right voter, following leader hints and moving
    /// on from unreachable voters, until `timeout` passes.
    fn call(&self, req: Request, timeout: Duration) -> anyhow::Result<Response> {
        self.call_with(req, timeout, ATTEMPT_TIMEOUT)
    }

    /// `call`, with each attempt on one voter bounded by `attempt`: a voter
    /// whose process is stopped still accepts connections (the kernel does)
    /// but never answers, and must not eat the whole deadline.
    fn call_with(
        &self,
        req: Request,
        timeout: Duration,
        attempt: Duration,
    ) -> anyhow::Result<Response> {
        let deadline = Instant::now() + timeout;
        let n = self.inner.voters.len();
        let mut target = *self.inner.leader.lock().expect("client lock");
        let payload = wire::encode(&req);
        let mut last_error = String::from("no attempt made");
        let mut misses = 0usize;
        while Instant::now() < deadline {
            let attempt_deadline = deadline.min(Instant::now() + attempt);
            match self.exchange(target, &payload, attempt_deadline) {
                Ok(Response::NotLeader { leader }) => {
                    last_error = format!("voter {} is not the leader", self.inner.voters[target].0);
                    match self.inner.voters.iter().position(|(id, _)| *id == leader) {
                        Some(i) if i != target => target = i,
                        _ => {
                            target = (target + 1) % n;
                            std::thread::sleep(RETRY_PAUSE);
                        }
                    }
                }
                Ok(Response::Failed(why)) => {
                    last_error = why;
                    std::thread::sleep(RETRY_PAUSE);
                }
                Ok(resp) => {
                    let slot = &self.inner.leader;
                    *slot.lock().expect("client lock") = target;
                    return Ok(resp);
                }
                Err(e) => {
                    last_error = format!("voter {}: {e:#}", self.inner.voters[target].0);
                    target = (target + 1) % n;
                    // The next call starts from a voter that may answer.
                    let slot = &self.inner.leader;
                    *slot.lock().expect("client lock") = target;
                    misses += 1;
                    if misses.is_multiple_of(n) {
                        std::thread::sleep(RETRY_PAUSE);
                    }
                }
            }
        }
        anyhow::bail!("no controller leader reachable: {last_error}")
    }

    /// One request/response on a pooled or new connection to voter `i`.
    fn exchange(&self, i: usize, payload: &[u8], deadline: Instant) -> anyhow::Result<Response> {
        let pooled = {
            let mut idle = self.inner.idle.lock().expect("client lock");
            idle.iter()
                .position(|(v, _)| *v == i)
                .map(|p| idle.swap_remove(p).1)
        };
        if let Some(conn) = pooled {
            // A pooled connection may have died with its voter: on failure
            // retry once on a fresh one.
            if let Ok(r) = self.exchange_on(i, conn, payload, deadline) {
                return Ok(r);
            }
        }
        let conn = TcpStream::connect_timeout(&self.inner.voters[i].1, CONNECT_TIMEOUT)?;
        conn.set_nodelay(true)?;
        self.exchange_on(i, conn, payload, deadline)
    }

    fn exchange_on(
        &self,
        i: usize,
        mut conn: TcpStream,
        payload: &[u8],
        deadline: Instant,
    ) -> anyhow::Result<Response> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        wire::write_frame(&mut conn, KIND_REQUEST, payload)?;
        let (kind, body) = wire::read_frame(&mut conn)?
            .ok_or_else(|| anyhow::anyhow!("controller closed the connection"))?;
        anyhow::ensure!(kind == KIND_RESPONSE, "unexpected frame kind {kind}");
        let resp: Response = wire::decode(&body)?;
        let mut idle = self.inner.idle.lock().expect("client lock");
        if idle.len() < IDLE_MAX {
            idle.push((i, conn));
        }
        Ok(resp)
    }
}
