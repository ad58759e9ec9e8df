//! FindCoordinator: on one node every group's coordinator is this broker.
//! The first call creates `__consumer_offsets` (compacted,
//! `offsets.topic.num.partitions`). Transaction coordinators are not
//! implemented yet: key type 1 gets COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{admin, reply};
use crate::protocol::{RequestFrame, ResponseError, StrBytes};
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: FindCoordinatorRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let c = ctx();
    let ready = admin::ensure_offsets_topic().await;
    let node = c.config.node_id;
    let host = StrBytes::from_string(c.config.advertise.ip().to_string());
    let port = i32::from(c.config.advertise.port());
    let answer = |key_type: i8| -> (i16, Option<String>) {
        if key_type != 0 {
            (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("transactions are not supported yet".into()),
            )
        } else if !ready {
            (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("group metadata topic unavailable".into()),
            )
        } else {
            (0, None)
        }
    };
    let mut body = FindCoordinatorResponse::default();
    if v >= 4 {
        body.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(req.key_type);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(if code == 0 { node } else { -1 }))
                    .with_host(if code == 0 {
                        host.clone()
                    } else {
                        StrBytes::default()
                    })
                    .with_port(if code == 0 { port } else { -1 })
                    .with_error_code(code)
                    .with_error_message(msg.map(StrBytes::from_string))
            })
            .collect();
    } else {
        let (code, msg) = answer(req.key_type);
        body = body
            .with_error_code(code)
            .with_node_id(BrokerId(if code == 0 { node } else { -1 }))
            .with_host(if code == 0 { host } else { StrBytes::default() })
            .with_port(if code == 0 { port } else { -1 });
        if v >= 1 {
            body = body.with_error_message(msg.map(StrBytes::from_string));
        }
    }
    reply(frame, &body)
}
