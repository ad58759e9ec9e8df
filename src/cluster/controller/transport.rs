//! The controller listener and the per-peer raft message senders.
//!
//! Plain std threads: one accept loop, one thread per connection (raft
//! messages from a peer, or requests from a `ControllerClient`), one sender
//! per peer voter. Senders drop messages while their peer is unreachable:
//! raft retransmits.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::node::{Inbox, Shared};
use super::wire::{self, Request, Response, KIND_RAFT, KIND_REQUEST, KIND_RESPONSE};
use super::{raft_id, ControllerConfig};

/// Raft messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 1024;
/// Concurrent inbound connections.
const CONNECTIONS_MAX: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(300);
/// How long a connection waits for the raft thread to commit a request.
const PROPOSAL_WAIT: Duration = Duration::from_millis(4500);
/// Bounds a long poll.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);

/// The raft thread's handle on the peer senders.
pub struct Peers {
    senders: HashMap<u64, SyncSender<Message>>,
}

impl Peers {
    pub fn send(&self, m: Message) {
        let Some(tx) = self.senders.get(&m.to) else {
            tracing::warn!(to = m.to, "raft message to an unknown voter dropped");
            return;
        };
        match tx.try_send(m) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Starts one sender thread per peer voter; the raft thread's inbox is
/// connected later (`Peers` reports unreachable peers through it).
pub fn start_peers(
    cfg: &ControllerConfig,
    stop: &Arc<AtomicBool>,
    inbox: &SyncSender<Inbox>,
    threads: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Peers> {
    let mut senders = HashMap::new();
    for &(node, addr) in cfg.voters.iter().filter(|(n, _)| *n != cfg.node_id) {
        let (tx, rx) = sync_channel::<Message>(PEER_QUEUE_MAX);
        senders.insert(raft_id(node), tx);
        let stop = stop.clone();
        let inbox = inbox.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("ctrl-peer-{node}"))
                .spawn(move || {
                    let mut sender = PeerSender {
                        node,
                        addr,
                        conn: None,
                        next_attempt: Instant::now(),
                        inbox,
                    };
                    while !stop.load(Ordering::SeqCst) {
                        match rx.recv_timeout(Duration::from_millis(200)) {
                            Ok(m) => sender.send(m),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                })?,
        );
    }
    Ok(Peers { senders })
}

struct PeerSender {
    node: i32,
    addr: SocketAddr,
    conn: Option<TcpStream>,
    next_attempt: Instant,
    inbox: SyncSender<Inbox>,
}

impl PeerSender {
    fn send(&mut self, m: Message) {
        let to = m.to;
        let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        let ok = self.try_send(&m);
        if snapshot {
            let _ = self.inbox.try_send(Inbox::SnapshotSent { to, ok });
        }
        if !ok {
            let _ = self.inbox.try_send(Inbox::Unreachable(to));
        }
    }

    fn try_send(&mut self, m: &Message) -> bool {
        if self.conn.is_none() {
            if Instant::now() < self.next_attempt {
                return false;
            }
            match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    tracing::debug!(peer = self.node, addr = %self.addr, "connected to controller peer");
                    self.conn = Some(s);
                }
                Err(e) => {
                    tracing::debug!(peer = self.node, "controller peer unreachable: {e}");
                    self.next_attempt = Instant::now() + RECONNECT_BACKOFF;
                    return false;
                }
            }
        }
        let bytes = match m.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("encoding raft message: {e}");
                return false;
            }
        };
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = wire::write_frame(conn, KIND_RAFT, &bytes) {
            tracing::debug!(peer = self.node, "controller peer write failed: {e}");
            self.conn = None;
            self.next_attempt = Instant::now() + RECONNECT_BACKOFF;
            return false;
        }
        true
    }
}

/// Accepts connections until stopped, then closes every open one.
pub struct Acceptor {
    pub listener: TcpListener,
    pub inbox: SyncSender<Inbox>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

type OpenConns = Arc<Mutex<HashMap<u64, TcpStream>>>;

impl Acceptor {
    pub fn run(self) {
        let open: OpenConns = Arc::new(Mutex::new(HashMap::new()));
        let next_id = AtomicU64::new(0);
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = conn else { continue };
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            {
                let mut open = open.lock().expect("conns lock");
                if open.len() >= CONNECTIONS_MAX {
                    tracing::warn!("controller connection limit reached; refusing");
                    continue;
                }
                open.insert(id, clone);
            }
            let conn = Connection {
                inbox: self.inbox.clone(),
                shared: self.shared.clone(),
                stop: self.stop.clone(),
            };
            let open2 = open.clone();
            let spawned = std::thread::Builder::new()
                .name("ctrl-conn".into())
                .spawn(move || {
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = conn.serve(stream) {
                        tracing::debug!("controller connection closed: {e:#}");
                    }
                    open2.lock().expect("conns lock").remove(&id);
                });
            if spawned.is_err() {
                open.lock().expect("conns lock").remove(&id);
            }
        }
        drop(self.listener);
        for (_, s) in open.lock().expect("conns lock").drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

struct Connection {
    inbox: SyncSender<Inbox>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Connection {
    fn serve(&self, stream: TcpStream) -> anyhow::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        while let Some((kind, payload)) = wire::read_frame(&mut reader)? {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match kind {
                KIND_RAFT => {
                    let m = Message::parse_from_bytes(&payload)?;
                    if self.inbox.send(Inbox::Raft(Box::new(m))).is_err() {
                        break;
                    }
                }
                KIND_REQUEST => {
                    let req: Request = wire::decode(&payload)?;
                    let resp = self.answer(req);
                    wire::write_frame(&mut writer, KIND_RESPONSE, &wire::encode(&resp))?;
                }
                other => anyhow::bail!("unknown frame kind {other}"),
            }
        }
        Ok(())
    }

    fn answer(&self, req: Request) -> Response {
        if let Request::FetchMetadata {
            known_version,
            wait_ms,
        } = req
        {
            return self.fetch(known_version, Duration::from_millis(wait_ms));
        }
        let (tx, rx) = sync_channel(1);
        if self.inbox.send(Inbox::Client { req, reply: tx }).is_err() {
            return Response::Failed("controller stopped".into());
        }
        match rx.recv_timeout(PROPOSAL_WAIT) {
            Ok(r) => r,
            Err(_) => Response::Failed("request not committed in time".into()),
        }
    }

    /// Long poll on the applied image of the active controller.
    fn fetch(&self, known_version: u64, wait: Duration) -> Response {
        let deadline = Instant::now() + wait.min(FETCH_WAIT_MAX);
        let mut view = self.shared.view.lock().expect("view lock");
        loop {
            // Only the active controller answers: a voter cut off from the
            // quorum must not keep a broker on its stale image.
            if view.image.controller_id != self.shared.node_id {
                return Response::NotLeader {
                    leader: view.image.controller_id,
                };
            }
            if view.image.version > known_version {
                return Response::Metadata(Some((*view.image).clone()));
            }
            let now = Instant::now();
            if now >= deadline || self.stop.load(Ordering::SeqCst) {
                return Response::Metadata(None);
            }
            let slice = (deadline - now).min(Duration::from_millis(200));
            view = self
                .shared
                .changed
                .wait_timeout(view, slice)
                .expect("view lock")
                .0;
        }
    }
}
