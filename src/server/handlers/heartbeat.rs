//! Heartbeat: keeps a member's session alive and tells it about rebalances.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::reply;
use crate::group::coordinator;
use crate::protocol::RequestFrame;
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: HeartbeatRequest) -> anyhow::Result<Response> {
    let group = req.group_id.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id;
    let owner = ctx().group_owner(&group);
    let code = run_on(owner, move || async move {
        coordinator().heartbeat(&group, &member, instance.as_deref(), generation)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    reply(frame, &HeartbeatResponse::default().with_error_code(code))
}
