//! `corelog groups list` and `corelog groups describe GROUP`: members,
//! assignments, committed offsets, log end offsets and lag per partition, as
//! `kafka-consumer-groups.sh --describe` prints them.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use bytes::Buf;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::Client;

pub fn list(bootstrap: &str) -> Result<String> {
    let mut c = Client::connect(bootstrap)?;
    let r: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?;
    if r.error_code != 0 {
        bail!("ListGroups failed with error {}", r.error_code);
    }
    let mut out = format!("{:<40} {:<20} {}\n", "GROUP", "STATE", "PROTOCOL-TYPE");
    let mut groups: Vec<_> = r.groups.iter().collect();
    groups.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    for g in groups {
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
    let mut c = Client::connect(bootstrap)?;
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
    if !by_topic.is_empty() {
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
