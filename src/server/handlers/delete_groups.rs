//! DeleteGroups: only empty groups; their offsets and metadata get tombstones.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::reply;
use crate::group::coordinator;
use crate::protocol::RequestFrame;
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: DeleteGroupsRequest) -> anyhow::Result<Response> {
    let mut out = Vec::with_capacity(req.groups_names.len());
    for gid in &req.groups_names {
        let group = gid.to_string();
        let owner = ctx().group_owner(&group);
        let code = run_on(owner, move || async move {
            coordinator().delete_group(&group).await
        })
        .await
        .unwrap_or(crate::group::coordinator::COORDINATOR_NOT_AVAILABLE);
        out.push(
            DeletableGroupResult::default()
                .with_group_id(gid.clone())
                .with_error_code(code),
        );
    }
    reply(frame, &DeleteGroupsResponse::default().with_results(out))
}
