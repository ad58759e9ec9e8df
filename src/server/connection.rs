//! One client connection, on the shard that accepted it. The reader decodes
//! frames and starts a handler per request (up to
//! `connection_inflight_requests_max` in flight); the writer sends the
//! responses strictly in request order, fetch records by sendfile.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use crate::io::net::{raw_fd, send_file_region, SendStats};
use crate::model::limits;
use crate::protocol::fetch::Piece;
use crate::protocol::frame::{check_size, FrameSize};
use crate::protocol::{self, api, FrameError};
use crate::storage::ReadSlice;

use super::context::ctx;
use super::handlers;

/// What a handler produced for the writer.
pub enum Response {
    /// acks=0 produce: nothing goes back.
    None,
    Bytes(Bytes),
    /// A fetch response: encoded pieces plus the file regions they name.
    Fetch {
        pieces: Vec<Piece>,
        slices: Vec<Option<ReadSlice>>,
    },
    /// The request cannot be answered in its own format: close, say why.
    Close(String),
}

pub async fn serve(stream: TcpStream, peer: String) {
    let _ = stream.set_nodelay(true);
    // Kafka's connections.max.idle.ms: a connection that sends nothing for
    // this long is closed.
    let idle_ms: u64 = ctx()
        .config
        .prop("connections.max.idle.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000);
    let idle = std::time::Duration::from_millis(idle_ms.max(1));
    let fd = raw_fd(&stream);
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<glommio::task::JoinHandle<Response>>(
        limits::connection_inflight_requests_max,
    );
    let peer_w = peer.clone();
    let writer_task =
        glommio::spawn_local(async move { write_loop(writer, fd, rx, &peer_w).await });
    let request_bytes_max = ctx().config.socket_request_bytes_max;
    loop {
        let mut prefix = [0u8; 4];
        let next = Box::pin(reader.read_exact(&mut prefix));
        match futures::future::select(next, Box::pin(crate::io::sleep(idle))).await {
            futures::future::Either::Left((Ok(()), _)) => {}
            futures::future::Either::Left((Err(e), _)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "read failed");
                }
                break;
            }
            futures::future::Either::Right(_) => {
                tracing::info!(%peer, idle_ms, "closing idle connection (connections.max.idle.ms)");
                break;
            }
        }
        let len = match check_size(prefix, request_bytes_max) {
            FrameSize::Ok(n) => n,
            FrameSize::Negative(n) => {
                tracing::warn!(%peer, size = n, "closing connection: negative frame size");
                break;
            }
            FrameSize::TooLarge { claimed, max } => {
                tracing::warn!(%peer, claimed, max, "closing connection: frame exceeds socket.request.max.bytes");
                break;
            }
        };
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = reader.read_exact(&mut body).await {
            tracing::warn!(%peer, error = %e, "closing connection: truncated request");
            break;
        }
        let frame = match protocol::decode_request(body.freeze()) {
            Ok(f) => f,
            Err(FrameError::UnsupportedVersion {
                api: api::API_VERSIONS,
                correlation_id,
                version,
                ..
            }) => {
                // Kafka answers an unknown ApiVersions version in v0 with
                // UNSUPPORTED_VERSION and its table, so the client can retry.
                tracing::debug!(%peer, version, "ApiVersions version unsupported; answering v0");
                let r = handlers::api_versions::unsupported(correlation_id);
                let h = glommio::spawn_local(async move { r }).detach();
                if tx.send(h).await.is_err() {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: cannot answer request");
                break;
            }
        };
        let req = match handlers::decode_request(&frame) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, api = frame.api_key, version = frame.api_version, error = %e,
                    "closing connection: cannot decode request");
                break;
            }
        };
        let peer_h = peer.clone();
        let h = glommio::spawn_local(async move { handlers::dispatch(frame, req, &peer_h).await })
            .detach();
        if tx.send(h).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}

async fn write_loop(
    mut writer: futures::io::WriteHalf<TcpStream>,
    fd: std::os::fd::RawFd,
    rx: local_channel::LocalReceiver<glommio::task::JoinHandle<Response>>,
    peer: &str,
) {
    let rx = Rc::new(rx);
    while let Some(h) = rx.recv().await {
        let Some(resp) = h.await else { break };
        let result = match resp {
            Response::None => Ok(()),
            Response::Bytes(b) => writer.write_all(&b).await,
            Response::Fetch { pieces, slices } => {
                write_fetch(&mut writer, fd, pieces, &slices).await
            }
            Response::Close(why) => {
                tracing::warn!(%peer, reason = %why, "closing connection");
                break;
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "write failed; closing");
            break;
        }
    }
    let _ = writer.close().await;
    // Dropping the receiver makes the reader's next send fail, ending it.
    drop(rx);
}

async fn write_fetch(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    fd: std::os::fd::RawFd,
    pieces: Vec<Piece>,
    slices: &[Option<ReadSlice>],
) -> std::io::Result<()> {
    let mut stats = SendStats::default();
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => writer.write_all(&b).await?,
            Piece::Records {
                partition_index,
                len,
            } => {
                let s = slices[partition_index]
                    .as_ref()
                    .expect("records piece has a slice");
                assert_eq!(s.len, len, "fetch piece and slice disagree");
                writer.flush().await?;
                send_file_region(writer, fd, &s.file, s.pos, s.len as usize, &mut stats).await?;
            }
        }
    }
    let c = ctx();
    c.sendfile_bytes
        .set(c.sendfile_bytes.get() + stats.sendfile_bytes);
    c.copied_bytes
        .set(c.copied_bytes.get() + stats.copied_bytes);
    Ok(())
}
