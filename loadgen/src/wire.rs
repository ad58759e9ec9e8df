//! One Kafka connection over a blocking `std::net::TcpStream`: framing,
//! request headers, ApiVersions negotiation. A connection can be split into a
//! writer half and a reader half (`try_clone`), so requests are pipelined and
//! responses, which Kafka returns in request order per connection, are read
//! by another thread. Never shared between threads except by that split.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Responses larger than this are treated as a broken stream.
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// The versions a broker speaks, per api key: (min, max).
#[derive(Clone, Debug, Default)]
pub struct Versions(HashMap<i16, (i16, i16)>);

impl Versions {
    /// The highest version both sides speak, capped at `ours_max`.
    pub fn pick(&self, key: ApiKey, ours_max: i16) -> Result<i16> {
        let Some(&(lo, hi)) = self.0.get(&(key as i16)) else {
            bail!("broker does not support {key:?}");
        };
        let v = ours_max.min(hi);
        if v < lo {
            bail!("no common version for {key:?} (broker {lo}..={hi}, ours ..={ours_max})");
        }
        Ok(v)
    }
}

/// Encodes a whole request frame (size prefix, header, body) into `buf`.
pub fn encode_request<T: Encodable>(
    buf: &mut BytesMut,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    body: &T,
) -> Result<()> {
    let start = buf.len();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()))
        .encode(buf, key.request_header_version(version))?;
    body.encode(buf, version)?;
    let len = i32::try_from(buf.len() - start - 4)?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads one response frame (without its size prefix).
pub fn read_frame(stream: &mut impl Read) -> Result<Bytes> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let len = i32::from_be_bytes(prefix);
    if len < 4 || len as usize > RESPONSE_BYTES_MAX {
        bail!("bad response size {len}");
    }
    // read_to_end fills spare capacity without zeroing it first, which
    // matters for multi-megabyte Fetch responses.
    let mut body = Vec::with_capacity(len as usize);
    stream.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len as usize {
        bail!("connection closed inside a {len}-byte response");
    }
    Ok(Bytes::from(body))
}

/// Splits the response header off a frame and checks the correlation id.
pub fn decode_response<T: Decodable>(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<T> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
    if header.correlation_id != correlation_id {
        bail!(
            "{key:?}: correlation id {} where {correlation_id} was expected",
            header.correlation_id
        );
    }
    T::decode(&mut frame, version)
}

/// A connected, negotiated Kafka connection.
pub struct Conn {
    pub stream: TcpStream,
    pub versions: Versions,
    pub client_id: StrBytes,
    correlation: i32,
}

impl Conn {
    pub fn connect(addr: &str, client_id: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            versions: Versions::default(),
            client_id: StrBytes::from_string(client_id.to_string()),
            correlation: 0,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    /// ApiVersions v3, falling back to v0 when the broker answers
    /// UNSUPPORTED_VERSION (it then lists its range in a v0 body).
    fn negotiate(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("loadgen"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = self.call(ApiKey::ApiVersions, 3, &request)?;
        if response.error_code == UNSUPPORTED_VERSION {
            response = self.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        }
        if response.error_code != 0 {
            bail!("ApiVersions failed with error {}", response.error_code);
        }
        self.versions = Versions(
            response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        );
        Ok(())
    }

    pub fn next_correlation(&mut self) -> i32 {
        self.correlation = self.correlation.wrapping_add(1);
        self.correlation
    }

    /// One request, one response, nothing else in flight.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp> {
        let corr = self.next_correlation();
        let mut buf = BytesMut::with_capacity(256);
        encode_request(&mut buf, key, version, corr, &self.client_id, request)?;
        self.stream.write_all(&buf)?;
        let frame = read_frame(&mut self.stream)?;
        decode_response(frame, key, version, corr)
    }

    /// Same as `call`, at the highest version both sides speak up to `ours_max`.
    pub fn call_auto<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        ours_max: i16,
        request: &Req,
    ) -> Result<(i16, Resp)> {
        let v = self.versions.pick(key, ours_max)?;
        Ok((v, self.call(key, v, request)?))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }
}
