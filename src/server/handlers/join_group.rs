//! JoinGroup: forwarded to the group's coordinator shard, which answers when
//! the rebalance completes (or at once with MEMBER_ID_REQUIRED, v4+).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{admin, reply};
use crate::group::coordinator;
use crate::group::coordinator::JoinRequest;
use crate::group::state::JoinResult;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(
    frame: &RequestFrame,
    req: JoinGroupRequest,
    peer: &str,
) -> anyhow::Result<Response> {
    let v = frame.api_version;
    admin::ensure_offsets_topic().await;
    let join = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        client_id: frame.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h)),
        require_known_member_id: v >= 4,
        supports_skip_assignment: v >= 9,
    };
    let owner = ctx().group_owner(&join.group_id);
    let r: JoinResult = run_on(owner, move || async move { coordinator().join(join).await })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut body = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_leader(StrBytes::from_string(r.leader))
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_protocol_name(Some(StrBytes::from_string(r.protocol.unwrap_or_default())))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, inst, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(if v >= 5 {
                            inst.map(StrBytes::from_string)
                        } else {
                            None
                        })
                        .with_metadata(meta)
                })
                .collect(),
        );
    if v >= 7 {
        body = body.with_protocol_type(r.protocol_type.map(StrBytes::from_string));
    }
    if v >= 9 {
        body = body.with_skip_assignment(r.skip_assignment);
    }
    reply(frame, &body)
}
