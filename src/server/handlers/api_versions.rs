//! ApiVersions: what we implement, exactly (see `protocol::api`).

use crate::protocol::{self, api, RequestFrame, ResponseError};
use crate::server::connection::Response;

pub fn handle(frame: &RequestFrame) -> Response {
    let body = api::api_versions_response(0);
    match protocol::encode_response(
        api::API_VERSIONS,
        frame.api_version,
        frame.correlation_id,
        &body,
    ) {
        Ok(b) => Response::Bytes(b),
        Err(e) => Response::Close(format!("encoding ApiVersions: {e}")),
    }
}

/// The v0 answer to an ApiVersions version we do not speak.
pub fn unsupported(correlation_id: i32) -> Response {
    let body = api::api_versions_response(ResponseError::UnsupportedVersion.code());
    match protocol::encode_response(api::API_VERSIONS, 0, correlation_id, &body) {
        Ok(b) => Response::Bytes(b),
        Err(e) => Response::Close(format!("encoding ApiVersions: {e}")),
    }
}
