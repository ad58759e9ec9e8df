//! A small blocking Kafka client for the command-line tools: one connection,
//! one request at a time, versions chosen from the broker's ApiVersions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Responses above this are refused (the tools never need more).
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

pub struct Client {
    stream: TcpStream,
    correlation: i32,
    versions: Vec<(i16, i16, i16)>,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Self {
            stream,
            correlation: 0,
            versions: Vec::new(),
        };
        let r: ApiVersionsResponse = c.call_at(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("corelog-tools"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
        )?;
        if r.error_code != 0 {
            bail!("ApiVersions failed with error {}", r.error_code);
        }
        c.versions = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(c)
    }

    /// The highest version both sides speak, capped at `ours`.
    pub fn version(&self, key: ApiKey, ours: i16) -> Result<i16> {
        let (_, lo, hi) = self
            .versions
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .with_context(|| format!("broker does not support {key:?}"))?;
        let v = ours.min(*hi);
        if v < *lo {
            bail!("no common version for {key:?}");
        }
        Ok(v)
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        ours: i16,
        req: &Req,
    ) -> Result<Resp> {
        let v = self.version(key, ours)?;
        self.call_at(key, v, req)
    }

    fn call_at<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("corelog-tools")))
            .encode(&mut buf, key.request_header_version(version))?;
        req.encode(&mut buf, version)?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf)?;
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let size = i32::from_be_bytes(prefix);
        if size < 0 || size as usize > RESPONSE_BYTES_MAX {
            bail!("response size {size} out of range");
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!("correlation id mismatch");
        }
        let resp = Resp::decode(&mut body, version)?;
        if body.has_remaining() {
            tracing::debug!(bytes = body.remaining(), "trailing bytes in response");
        }
        Ok(resp)
    }
}
