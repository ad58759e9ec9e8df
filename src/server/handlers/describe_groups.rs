//! DescribeGroups: state, protocol and members (with assignments when
//! Stable) of each group; an unknown group is described as Dead.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::reply;
use crate::group::coordinator;
use crate::protocol::{RequestFrame, StrBytes};
use crate::runtime::run_on;
use crate::server::connection::Response;
use crate::server::context::ctx;

pub async fn handle(frame: &RequestFrame, req: DescribeGroupsRequest) -> anyhow::Result<Response> {
    let v = frame.api_version;
    let mut out = Vec::with_capacity(req.groups.len());
    for gid in &req.groups {
        let group = gid.to_string();
        let owner = ctx().group_owner(&group);
        let d = run_on(owner, move || async move { coordinator().describe(&group) })
            .await
            .unwrap_or(Err(crate::group::coordinator::COORDINATOR_NOT_AVAILABLE));
        let base = DescribedGroup::default().with_group_id(gid.clone());
        out.push(match d {
            Err(code) => base.with_error_code(code),
            Ok(d) => base
                .with_group_state(StrBytes::from_static_str(d.state))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|(id, inst, client_id, host, meta, asg)| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(id))
                                .with_group_instance_id(if v >= 4 {
                                    inst.map(StrBytes::from_string)
                                } else {
                                    None
                                })
                                .with_client_id(StrBytes::from_string(client_id))
                                .with_client_host(StrBytes::from_string(host))
                                .with_member_metadata(meta)
                                .with_member_assignment(asg)
                        })
                        .collect(),
                ),
        });
    }
    reply(frame, &DescribeGroupsResponse::default().with_groups(out))
}
