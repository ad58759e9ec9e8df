//! A connection from this broker to another broker's Kafka listener, for
//! follower fetches: one request at a time, each bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::io;
use crate::protocol;

/// Responses above this close the connection (a fetch is bounded by
/// `replica.fetch.response.max.bytes` plus headers).
const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;

pub struct PeerConn {
    stream: glommio::net::TcpStream,
    correlation: i32,
    client_id: String,
}

/// Runs `fut`, or fails after `limit`.
pub async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let fut = Box::pin(fut);
    let timer = Box::pin(io::sleep(limit));
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right(_) => Err(anyhow!("timed out after {limit:?}")),
    }
}

impl PeerConn {
    pub async fn connect(addr: SocketAddr, node_id: i32) -> Result<Self> {
        let stream = within(Duration::from_secs(3), async {
            glommio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| anyhow!("connecting to {addr}: {e}"))
        })
        .await?;
        stream.set_nodelay(true).ok();
        Ok(Self {
            stream,
            correlation: 0,
            client_id: format!("corelog-replica-{node_id}"),
        })
    }

    /// Sends one request and reads its response within `limit`.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: i16,
        version: i16,
        req: &Req,
        limit: Duration,
    ) -> Result<Resp> {
        self.correlation = self.correlation.wrapping_add(1);
        let corr = self.correlation;
        let frame = protocol::encode_request(api_key, version, corr, &self.client_id, req)?;
        let stream = &mut self.stream;
        let body = within(limit, async move {
            stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let n = i32::from_be_bytes(len);
            if n < 4 || n as usize > RESPONSE_BYTES_MAX {
                bail!("bad response size {n}");
            }
            let mut buf = vec![0u8; n as usize];
            stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        })
        .await?;
        let (got, resp) = protocol::decode_response(api_key, version, body)?;
        if got != corr {
            bail!("correlation id {got}, expected {corr}");
        }
        Ok(resp)
    }
}
