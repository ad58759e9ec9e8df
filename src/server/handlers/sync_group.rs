//! SyncGroup: the leader's assignments are stored and handed to every member.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::reply;
use crate::group::coordinator;
use crate::group::coordinator::SyncRequest;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: SyncGroupRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let sync = SyncRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let owner = ctx().group_owner(&sync.group_id);
    let (protocol_type, protocol_name) = (sync.protocol_type.clone(), sync.protocol_name.clone());
    let r = run_on(owner, move || async move { coordinator().sync(sync).await })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut body = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    if v >= 5 {
        body = body
            .with_protocol_type(protocol_type.map(StrBytes::from_string))
            .with_protocol_name(protocol_name.map(StrBytes::from_string));
    }
    reply(frame, &body)
}
