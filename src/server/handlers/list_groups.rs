//! ListGroups: every shard's groups, optionally filtered by state (v4+).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::reply;
use crate::group::coordinator;
use crate::model::ShardId;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: ListGroupsRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let shards = ctx().shards;
    let lists = futures::future::join_all(
        (0..shards).map(|s| run_on(ShardId(s), || async { coordinator().list() })),
    )
    .await;
    let filter: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut groups = Vec::new();
    for (id, protocol_type, state) in lists.into_iter().flatten().flatten() {
        if !filter.is_empty() && !filter.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.contains(&"classic".to_string()) {
            continue;
        }
        let mut g = ListedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(id)))
            .with_protocol_type(StrBytes::from_string(protocol_type));
        if v >= 4 {
            g = g.with_group_state(StrBytes::from_static_str(state));
        }
        if v >= 5 {
            g = g.with_group_type(StrBytes::from_static_str("classic"));
        }
        groups.push(g);
    }
    reply(frame, &ListGroupsResponse::default().with_groups(groups))
}
