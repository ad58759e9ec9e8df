//! Every API version the broker advertises answers a request in that
//! version's own format, success paths included: a response field that does
//! not exist in an older version must never be set (the codec refuses it and
//! the connection would close). Each request is sent on a fresh connection
//! and its response decoded at the same version with no bytes left over.

mod common;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};

fn advertised(c: &mut Client) -> Vec<(i16, i16, i16)> {
    c.api_versions(3)
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

fn versions_of(table: &[(i16, i16, i16)], key: i16) -> std::ops::RangeInclusive<i16> {
    let (_, lo, hi) = table
        .iter()
        .find(|(k, _, _)| *k == key)
        .unwrap_or_else(|| panic!("api {key} not advertised"));
    *lo..=*hi
}

fn roundtrip<R: Request>(b: &Broker, table: &[(i16, i16, i16)], req: impl Fn(i16) -> R) -> usize {
    let mut n = 0;
    for v in versions_of(table, R::KEY) {
        let mut c = b.client();
        if let Err(e) = c.try_call(v, &req(v)) {
            panic!("api {} v{v}: {e}\n{}", R::KEY, b.log_tail(20));
        }
        n += 1;
    }
    n
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

#[test]
fn every_advertised_version_answers_in_its_own_format() {
    let b = Broker::start(&["group.initial.rebalance.delay.ms=0"]);
    let mut c = b.client();
    let table = advertised(&mut c);
    assert_eq!(
        c.create_topic("every", 2, 1, &[("retention.ms", "100000")]),
        code::NONE
    );
    c.produce_ok("every", 0, batch_of_values(&values("x", 3, 10), now_ms()));
    let mut covered = 0;
    covered += roundtrip(&b, &table, |_| {
        MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("every"))),
        ]))
    });
    covered += roundtrip(&b, &table, |_| {
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic_name("every"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(batch_of_values(&values("y", 2, 10), now_ms()))),
                ])])
    });
    covered += roundtrip(&b, &table, |v| {
        FetchRequest::default()
            .with_max_wait_ms(10)
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(if v < 13 {
                    topic_name("every")
                } else {
                    Default::default()
                })
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])])
    });
    covered += roundtrip(&b, &table, |_| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name("every"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ])])
    });
    covered += roundtrip(&b, &table, |_| ApiVersionsRequest::default());
    covered += roundtrip(&b, &table, |_| {
        CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![creatable(
                &format!("every-new-{}", unique()),
                1,
                1,
                &[("cleanup.policy", "delete")],
            )])
    });
    covered += roundtrip(&b, &table, |v| {
        let name = format!("every-del-{}", unique());
        assert_eq!(b.client().create_topic(&name, 1, 1, &[]), code::NONE);
        if v >= 6 {
            DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic_name(&name)))])
        } else {
            DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topic_names(vec![topic_name(&name)])
        }
    });
    covered += roundtrip(&b, &table, |_| {
        DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("every")),
        ])
    });
    covered += roundtrip(&b, &table, |_| {
        let name = format!("every-grow-{}", unique());
        assert_eq!(b.client().create_topic(&name, 1, 1, &[]), code::NONE);
        CreatePartitionsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic_name(&name))
                    .with_count(2),
            ])
    });
    covered += roundtrip(&b, &table, |v| {
        if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g-every")])
        } else {
            FindCoordinatorRequest::default().with_key(s("g-every"))
        }
    });
    // A full group round per JoinGroup version: join (two-step from v4),
    // sync as leader, heartbeat, commit, fetch, describe, leave.
    for v in versions_of(&table, JoinGroupRequest::KEY) {
        let group = format!("g-{v}-{}", unique());
        let mut c = b.client();
        let join = |member: &str| {
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(member))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]))])
        };
        let mut r = c
            .try_call(v, &join(""))
            .unwrap_or_else(|e| panic!("JoinGroup v{v}: {e}"));
        if r.error_code == 79 {
            let id = r.member_id.to_string();
            r = c
                .try_call(v, &join(&id))
                .unwrap_or_else(|e| panic!("JoinGroup v{v} second step: {e}"));
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        assert_eq!(r.leader, r.member_id, "a lone member leads");
        let member = r.member_id.clone();
        let generation = r.generation_id;
        let sv = v.min(*versions_of(&table, SyncGroupRequest::KEY).end());
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(member.clone())
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(bytes::Bytes::from_static(b"asg")),
            ]);
        if sv >= 5 {
            sync = sync
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")));
        }
        let sr = c
            .try_call(sv, &sync)
            .unwrap_or_else(|e| panic!("SyncGroup v{sv}: {e}"));
        assert_eq!(sr.error_code, 0);
        assert_eq!(sr.assignment.as_ref(), b"asg");
        covered += 2;
        for hv in versions_of(&table, HeartbeatRequest::KEY) {
            let hb = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(generation)
                .with_member_id(member.clone());
            assert_eq!(
                c.try_call(hv, &hb).expect("Heartbeat").error_code,
                0,
                "Heartbeat v{hv}"
            );
        }
        // v0-1 have no schema in kafka-protocol (corelog decodes them by
        // hand); tests/clients/test_groups_protocol.py sends them raw.
        for cv in versions_of(&table, OffsetCommitRequest::KEY).filter(|v| *v >= 2) {
            let commit = OffsetCommitRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(member.clone())
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name("every"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(2),
                        ]),
                ]);
            let r = c
                .try_call(cv, &commit)
                .unwrap_or_else(|e| panic!("OffsetCommit v{cv}: {e}"));
            assert_eq!(
                r.topics[0].partitions[0].error_code, 0,
                "OffsetCommit v{cv}"
            );
        }
        for fv in versions_of(&table, OffsetFetchRequest::KEY) {
            let req = if fv >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s(&group)))
                        .with_topics(None),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic_name("every"))
                            .with_partition_indexes(vec![0]),
                    ]))
            };
            let r = c
                .try_call(fv, &req)
                .unwrap_or_else(|e| panic!("OffsetFetch v{fv}: {e}"));
            let committed = if fv >= 8 {
                r.groups[0].topics[0].partitions[0].committed_offset
            } else {
                r.topics[0].partitions[0].committed_offset
            };
            assert_eq!(committed, 2, "OffsetFetch v{fv}");
        }
        for dv in versions_of(&table, DescribeGroupsRequest::KEY) {
            let r = c
                .try_call(
                    dv,
                    &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]),
                )
                .unwrap_or_else(|e| panic!("DescribeGroups v{dv}: {e}"));
            assert_eq!(r.groups[0].group_state.as_str(), "Stable");
            assert_eq!(r.groups[0].members.len(), 1);
        }
        for lv in versions_of(&table, ListGroupsRequest::KEY) {
            c.try_call(lv, &ListGroupsRequest::default())
                .unwrap_or_else(|e| panic!("ListGroups v{lv}: {e}"));
        }
        let lv = v.min(*versions_of(&table, LeaveGroupRequest::KEY).end());
        let leave = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(member.clone())
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(member.clone())
        };
        let r = c
            .try_call(lv, &leave)
            .unwrap_or_else(|e| panic!("LeaveGroup v{lv}: {e}"));
        assert_eq!(r.error_code, 0, "LeaveGroup v{lv}");
        covered += 1;
    }
    covered += roundtrip(&b, &table, |_| {
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("no-such-group"))])
    });
    covered += roundtrip(&b, &table, |_| {
        OffsetDeleteRequest::default().with_group_id(GroupId(s("no-such-group")))
    });
    covered += roundtrip(&b, &table, |_| {
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    });
    covered += roundtrip(&b, &table, |v| {
        OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic_name("every"))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(if v >= 2 { 0 } else { -1 })
                        .with_leader_epoch(0),
                ]),
        ])
    });
    covered += roundtrip(&b, &table, |v| {
        DescribeClusterRequest::default().with_include_fenced_brokers(v >= 2)
    });
    covered += roundtrip(&b, &table, |_| {
        AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("every"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("200000")))]),
        ])
    });
    covered += roundtrip(&b, &table, |_| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("every"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("300000"))),
                ]),
        ])
    });
    assert!(covered > 60, "covered only {covered} api versions");
}

/// kafka-python asks for "all configs" with an empty key list, others with
/// null: both must return every topic config.
#[test]
fn describe_configs_with_an_empty_key_list_returns_every_config() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    assert_eq!(
        c.create_topic("cfg", 1, 1, &[("retention.ms", "1234")]),
        code::NONE
    );
    for keys in [None, Some(vec![])] {
        let r = c.call(
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("cfg"))
                    .with_configuration_keys(keys.clone()),
            ]),
        );
        let configs = &r.results[0].configs;
        assert!(
            configs.len() > 5,
            "keys {keys:?}: {} configs",
            configs.len()
        );
        let retention = configs
            .iter()
            .find(|e| e.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(
            retention.value.as_ref().map(|v| v.to_string()).as_deref(),
            Some("1234")
        );
    }
}
