//! LeaveGroup: one member (v0-2) or a batch of members (v3+).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::reply;
use crate::group::coordinator;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: LeaveGroupRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let group = req.group_id.to_string();
    let owner = ctx().group_owner(&group);
    let ms = members.clone();
    let result = run_on(
        owner,
        move || async move { coordinator().leave(&group, &ms) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = match result {
        Err(code) => LeaveGroupResponse::default().with_error_code(code),
        Ok(codes) if v >= 3 => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(codes)
                .map(|((id, inst), code)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(inst.map(StrBytes::from_string))
                        .with_error_code(code)
                })
                .collect(),
        ),
        Ok(codes) => LeaveGroupResponse::default().with_error_code(codes[0]),
    };
    reply(frame, &body)
}
