//! `corelog groups list` and `corelog groups describe GROUP`: members,
//! assignments, committed offsets, log end offsets and lag per partition, as
//! `kafka-consumer-groups.sh --describe` prints them.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use bytes::Buf;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::Client;

/// Every broker of the cluster (id -> host:port) and the leader of every
/// partition, from one Metadata request.
struct ClusterView {
    brokers: BTreeMap<i32, String>,
    leaders: BTreeMap<(String, i32), i32>,
}

fn cluster_view(c: &mut Client) -> Result<ClusterView> {
    let m: MetadataResponse = c.call(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(None),
    )?;
    Ok(ClusterView {
        brokers: m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect(),
        leaders: m
            .topics
            .iter()
            .flat_map(|t| {
                let name = t.name.as_ref().map_or(String::new(), |n| n.0.to_string());
                t.partitions
                    .iter()
                    .map(move |p| ((name.clone(), p.partition_index), p.leader_id.0))
            })
            .collect(),
    })
}

/// Groups of every broker (each broker lists the groups it coordinates).
pub fn list(bootstrap: &str) -> Result<String> {
    let mut c = Client::connect(bootstrap)?;
    let view = cluster_view(&mut c)?;
    let mut groups = Vec::new();
    for addr in view.brokers.values() {
        let mut b = Client::connect(addr)?;
        let r: ListGroupsResponse = b.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?;
        if r.error_code != 0 {
            bail!("ListGroups on {addr} failed with error {}", r.error_code);
        }
        groups.extend(r.groups);
    }
    let mut out = format!("{:<40} {:<20} {}\n", "GROUP", "STATE", "PROTOCOL-TYPE");
    groups.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    for g in &groups {
        out.push_str(&format!(
            "{:<40} {:<20} {}\n",
            g.group_id.0.as_str(),
            g.group_state.as_str(),
            g.protocol_type.as_str()
        ));
    }
    Ok(out)
}

/// One row of the describe table.
struct Row {
    current: Option<i64>,
    end: Option<i64>,
    member: Option<(String, String, String)>,
}

pub fn describe(bootstrap: &str, group: &str) -> Result<String> {
    let mut boot = Client::connect(bootstrap)?;
    let view = cluster_view(&mut boot)?;
    let fc: FindCoordinatorResponse = boot.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())),
    )?;
    if fc.error_code != 0 {
        bail!("FindCoordinator failed with error {}", fc.error_code);
    }
    let mut c = Client::connect(&format!("{}:{}", fc.host.as_str(), fc.port))?;
    let gid = GroupId(StrBytes::from_string(group.to_string()));
    let d: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![gid.clone()]),
    )?;
    let Some(desc) = d.groups.first() else {
        bail!("empty DescribeGroups response")
    };
    if desc.error_code != 0 {
        bail!("DescribeGroups failed with error {}", desc.error_code);
    }
    let mut rows: BTreeMap<(String, i32), Row> = BTreeMap::new();
    for m in &desc.members {
        let mut a = m.member_assignment.clone();
        if a.remaining() < 2 {
            continue;
        }
        let version = a.get_i16().clamp(0, 3);
        let Ok(asg) = ConsumerProtocolAssignment::decode(&mut a, version) else {
            continue;
        };
        for tp in asg.assigned_partitions {
            for p in tp.partitions {
                rows.entry((tp.topic.0.to_string(), p))
                    .or_insert(Row {
                        current: None,
                        end: None,
                        member: None,
                    })
                    .member = Some((
                    m.member_id.to_string(),
                    m.client_host.to_string(),
                    m.client_id.to_string(),
                ));
            }
        }
    }
    let f: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(gid)
            .with_topics(None),
    )?;
    if f.error_code != 0 {
        bail!("OffsetFetch failed with error {}", f.error_code);
    }
    for t in &f.topics {
        for p in &t.partitions {
            if p.committed_offset >= 0 {
                rows.entry((t.name.0.to_string(), p.partition_index))
                    .or_insert(Row {
                        current: None,
                        end: None,
                        member: None,
                    })
                    .current = Some(p.committed_offset);
            }
        }
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in rows.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    // Log end offsets come from each partition's leader.
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (t, ps) in &by_topic {
        for p in ps {
            let leader = view.leaders.get(&(t.clone(), *p)).copied().unwrap_or(-1);
            by_leader
                .entry(leader)
                .or_default()
                .entry(t.clone())
                .or_default()
                .push(*p);
        }
    }
    for (leader, by_topic) in by_leader {
        let Some(addr) = view.brokers.get(&leader) else {
            continue;
        };
        let mut c = Client::connect(addr)?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(
                by_topic
                    .iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let lo: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &req)?;
        for t in lo.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    if let Some(r) = rows.get_mut(&(t.name.0.to_string(), p.partition_index)) {
                        r.end = Some(p.offset);
                    }
                }
            }
        }
    }
    let mut out = format!(
        "GROUP {group} STATE {} PROTOCOL {} MEMBERS {}\n\n",
        desc.group_state.as_str(),
        desc.protocol_data.as_str(),
        desc.members.len()
    );
    out.push_str(&format!(
        "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10}  {:<40} {:<16} {}\n",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID"
    ));
    let dash = |v: Option<i64>| v.map_or("-".to_string(), |x| x.to_string());
    for ((t, p), r) in &rows {
        let lag = match (r.current, r.end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let (member, host, client) =
            r.member
                .clone()
                .unwrap_or(("-".into(), "-".into(), "-".into()));
        out.push_str(&format!(
            "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10}  {:<40} {:<16} {}\n",
            group,
            t,
            p,
            dash(r.current),
            dash(r.end),
            dash(lag),
            member,
            host,
            client
        ));
    }
    Ok(out)
}
