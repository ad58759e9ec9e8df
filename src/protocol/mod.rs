//! Layer 1: the Kafka wire codec. Pure: no I/O, no async, imports only
//! `model`. Request and response types come from the `kafka-protocol` crate;
//! this module adds framing, the table of what corelog implements, batch
//! validation, and the hand-written Fetch response whose record bytes are
//! left as file regions for sendfile.

pub mod api;
pub mod batch;
pub mod fetch;
pub mod frame;

use anyhow::{anyhow, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::StrBytes;
pub use kafka_protocol::ResponseError;

/// A decoded request header and the undecoded body that follows it.
pub struct RequestFrame {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// Why a frame could not be turned into a request we answer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than a request header ({0} bytes)")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("api {api} version {version} is not supported")]
    UnsupportedVersion {
        api: i16,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed request header: {0}")]
    BadHeader(String),
}

/// Splits a frame (without its size prefix) into header and body. An
/// unsupported version still yields its correlation id, so ApiVersions can
/// answer it with UNSUPPORTED_VERSION as Kafka does.
pub fn decode_request(mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApi(api_key))?;
    if !api::supports(api_key, api_version) {
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version: api_version,
            correlation_id,
        });
    }
    let header_version = key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok(RequestFrame {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        body: frame,
    })
}

/// Decodes a request body of a known type at the given version.
pub fn decode_body<T: Decodable>(body: &Bytes, version: i16) -> Result<T> {
    let mut buf = body.clone();
    let value = T::decode(&mut buf, version)?;
    Ok(value)
}

/// Encodes a whole response frame: size prefix, header, body.
pub fn encode_response<T: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes> {
    let key = ApiKey::try_from(api_key).map_err(|_| anyhow!("unknown api key {api_key}"))?;
    let header_version = key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Encodes a whole request frame: size prefix, header, body (for the
/// broker's own requests to other brokers).
pub fn encode_request<T: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &T,
) -> Result<Bytes> {
    let key = ApiKey::try_from(api_key).map_err(|_| anyhow!("unknown api key {api_key}"))?;
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())))
        .encode(&mut buf, key.request_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Splits a response frame (without its size prefix) into correlation id
/// and decoded body.
pub fn decode_response<T: Decodable>(
    api_key: i16,
    version: i16,
    mut frame: Bytes,
) -> Result<(i32, T)> {
    let key = ApiKey::try_from(api_key).map_err(|_| anyhow!("unknown api key {api_key}"))?;
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
    let body = T::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

/// Writes a response header (without size prefix) for hand-encoded bodies.
pub fn put_response_header(buf: &mut BytesMut, api_key: i16, version: i16, correlation_id: i32) {
    buf.put_i32(correlation_id);
    let flexible = ApiKey::try_from(api_key)
        .map(|k| k.response_header_version(version) >= 1)
        .unwrap_or(false);
    if flexible {
        buf.put_u8(0); // no tagged fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    fn frame_of(api_key: i16, version: i16, corr: i32, body: &impl Encodable) -> Bytes {
        let key = ApiKey::try_from(api_key).unwrap();
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("t")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_api_versions_v3_header() {
        let f = frame_of(18, 3, 7, &ApiVersionsRequest::default());
        let r = decode_request(f).unwrap();
        assert_eq!((r.api_key, r.api_version, r.correlation_id), (18, 3, 7));
        assert_eq!(r.client_id.as_deref(), Some("t"));
    }

    #[test]
    fn unknown_api_and_version_are_typed_errors() {
        let mut f = BytesMut::new();
        f.put_i16(9999);
        f.put_i16(0);
        f.put_i32(1);
        assert!(matches!(
            decode_request(f.freeze()),
            Err(FrameError::UnknownApi(9999))
        ));
        let mut f = BytesMut::new();
        f.put_i16(18);
        f.put_i16(99);
        f.put_i32(5);
        assert!(matches!(
            decode_request(f.freeze()),
            Err(FrameError::UnsupportedVersion {
                correlation_id: 5,
                ..
            })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 1])),
            Err(FrameError::TooShort(2))
        ));
    }
}
