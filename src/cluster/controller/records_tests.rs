use std::collections::BTreeMap;

use super::*;

struct Sm {
    image: MetadataImage,
    rules: Rules,
}

impl Sm {
    fn new(brokers: &[i32]) -> Sm {
        let mut sm = Sm {
            image: MetadataImage::default(),
            rules: Rules::default(),
        };
        for &b in brokers {
            sm.register(b, 1);
        }
        sm
    }

    fn apply(&mut self, r: Record) -> Outcome {
        let next = self.image.version + 1;
        apply(&mut self.image, &self.rules, next, &r)
    }

    fn register(&mut self, id: i32, incarnation: u64) {
        self.apply(Record::RegisterBroker {
            id,
            host: "h".into(),
            port: 9092,
            incarnation,
        });
    }

    fn fence(&mut self, id: i32) {
        self.apply(Record::FenceBroker { id });
    }

    fn create(&mut self, name: &str, assignment: Vec<Vec<i32>>) {
        let ct = topic(name, assignment.len() as i32, -1, Some(assignment));
        let spec = plan_create(&self.image, 1, &ct, 0, 7).expect("plan");
        assert_eq!(
            self.apply(Record::CreateTopics(vec![spec])),
            Outcome::Admin(vec![Ok(())])
        );
    }

    /// Every registered broker's current incarnation.
    fn incarnations(&self) -> Vec<(i32, u64)> {
        self.image
            .brokers
            .values()
            .map(|b| (b.id, b.incarnation))
            .collect()
    }

    fn part(&self, name: &str, p: i32) -> PartitionState {
        self.image.partition(name, p).expect("partition").clone()
    }

    fn alter(
        &mut self,
        broker: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<PartitionState, i16> {
        let req = AlterPartition {
            broker_id: broker,
            topic: "t".into(),
            partition: 0,
            leader_epoch,
            partition_epoch,
            added_incarnations: self.incarnations(),
            new_isr: isr,
        };
        match self.apply(Record::AlterPartition(req)) {
            Outcome::Alter(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn topic(name: &str, partitions: i32, rf: i16, assignments: Option<Vec<Vec<i32>>>) -> CreateTopic {
    CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        assignments,
        configs: BTreeMap::new(),
        id: None,
    }
}

#[test]
fn fenced_leader_hands_over_to_next_isr_replica_in_replica_order() {
    let mut sm = Sm::new(&[0, 1, 2]);
    sm.create("t", vec![vec![1, 2, 0]]);
    sm.fence(1);
    let p = sm.part("t", 0);
    assert_eq!(p.leader, 2);
    assert_eq!(p.isr, vec![2, 0]);
    assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    // A fenced follower just leaves the ISR.
    sm.fence(0);
    let p = sm.part("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
}

#[test]
fn fencing_the_last_isr_member_leaves_partition_offline_until_it_returns() {
    let mut sm = Sm::new(&[0, 1]);
    sm.create("t", vec![vec![0, 1]]);
    sm.fence(1);
    sm.fence(0);
    let p = sm.part("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![0]));
    // Broker 1 comes back: not in the ISR, so no leader (clean election).
    sm.register(1, 1);
    assert_eq!(sm.part("t", 0).leader, NO_LEADER);
    // Broker 0 comes back with the same incarnation: leads again.
    sm.register(0, 1);
    let p = sm.part("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (0, vec![0]));
    assert_eq!(p.leader_epoch, 2);
}

#[test]
fn unclean_election_takes_any_live_replica() {
    let mut sm = Sm::new(&[0, 1]);
    sm.rules.unclean = true;
    sm.create("t", vec![vec![0, 1]]);
    sm.alter(0, 0, 0, vec![0]).expect("shrink");
    sm.fence(0);
    let p = sm.part("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
}

#[test]
fn restarted_broker_leaves_isr_and_leadership_but_keeps_sole_partitions() {
    let mut sm = Sm::new(&[0, 1]);
    sm.create("t", vec![vec![0, 1]]);
    sm.create("solo", vec![vec![0]]);
    sm.register(0, 2);
    let p = sm.part("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    let s = sm.part("solo", 0);
    assert_eq!((s.leader, s.isr.clone()), (0, vec![0]));
    assert_eq!((s.leader_epoch, s.partition_epoch), (1, 1));
    assert_eq!(sm.image.brokers[&0].incarnation, 2);
}

#[test]
fn alter_partition_checks_epochs_leader_and_isr() {
    let mut sm = Sm::new(&[0, 1, 2]);
    sm.create("t", vec![vec![0, 1, 2]]);
    assert_eq!(sm.alter(0, 1, 0, vec![0, 1]), Err(FENCED_LEADER_EPOCH));
    assert_eq!(sm.alter(1, 0, 0, vec![0, 1]), Err(INVALID_REQUEST));
    assert_eq!(sm.alter(0, 0, 5, vec![0, 1]), Err(INVALID_UPDATE_VERSION));
    assert_eq!(sm.alter(0, 0, 0, vec![1, 2]), Err(INVALID_REQUEST));
    assert_eq!(sm.alter(0, 0, 0, vec![0, 3]), Err(INVALID_REQUEST));
    assert_eq!(sm.alter(0, 0, 0, vec![0, 0]), Err(INVALID_REQUEST));
    let p = sm.alter(0, 0, 0, vec![0, 1]).expect("shrink");
    assert_eq!((p.isr.clone(), p.partition_epoch), (vec![0, 1], 1));
    sm.fence(2);
    assert_eq!(sm.alter(0, 0, 1, vec![0, 1, 2]), Err(INELIGIBLE_REPLICA));
    sm.register(2, 1);
    // An addition seen in another process of broker 2 than the registered
    // one (it restarted since the leader saw it catch up) is refused.
    let stale = AlterPartition {
        broker_id: 0,
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        partition_epoch: 1,
        new_isr: vec![0, 1, 2],
        added_incarnations: vec![(2, 99)],
    };
    assert_eq!(
        sm.apply(Record::AlterPartition(stale)),
        Outcome::Alter(Err(INELIGIBLE_REPLICA))
    );
    let p = sm.alter(0, 0, 1, vec![0, 1, 2]).expect("expand");
    assert_eq!(p.partition_epoch, 2);
    let req = AlterPartition {
        broker_id: 0,
        topic: "nope".into(),
        partition: 0,
        leader_epoch: 0,
        partition_epoch: 0,
        new_isr: vec![0],
        added_incarnations: Vec::new(),
    };
    assert_eq!(
        sm.apply(Record::AlterPartition(req)),
        Outcome::Alter(Err(UNKNOWN_TOPIC_OR_PARTITION))
    );
}

#[test]
fn create_topic_validation_codes() {
    let mut sm = Sm::new(&[0, 1, 2]);
    sm.fence(2);
    let code = |r: Result<TopicSpec, (i16, String)>| r.err().map(|e| e.0);
    assert_eq!(
        code(plan_create(&sm.image, 1, &topic("a", 0, 1, None), 0, 1)),
        Some(INVALID_PARTITIONS)
    );
    let e = plan_create(&sm.image, 1, &topic("a", 1, 3, None), 0, 1).unwrap_err();
    assert_eq!(e.0, INVALID_REPLICATION_FACTOR);
    assert!(e.1.contains("2 brokers are alive"), "{}", e.1);
    assert_eq!(
        code(plan_create(&sm.image, 1, &topic("a", 1, 0, None), 0, 1)),
        Some(INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(
        code(plan_create(&sm.image, 3, &topic("a", 1, -1, None), 0, 1)),
        Some(INVALID_REPLICATION_FACTOR)
    );
    let spec = plan_create(&sm.image, 2, &topic("a", 2, -1, None), 0, 1).expect("default rf 2");
    assert!(spec.assignment.iter().all(|r| r.len() == 2));
    for bad in [vec![vec![]], vec![vec![0, 0]], vec![vec![0, 9]]] {
        let ct = topic("a", 1, -1, Some(bad));
        assert_eq!(
            code(plan_create(&sm.image, 1, &ct, 0, 1)),
            Some(INVALID_REPLICA_ASSIGNMENT)
        );
    }
    // Explicit assignment may name a fenced (registered) broker.
    let ct = topic("a", 1, -1, Some(vec![vec![2, 0]]));
    let spec = plan_create(&sm.image, 1, &ct, 0, 1).expect("explicit");
    sm.apply(Record::CreateTopics(vec![spec.clone()]));
    let p = sm.part("a", 0);
    assert_eq!((p.leader, p.isr.clone()), (0, vec![0]));
    assert_eq!(
        code(plan_create(&sm.image, 1, &topic("a", 1, 1, None), 0, 1)),
        Some(TOPIC_ALREADY_EXISTS)
    );
    assert_eq!(
        sm.apply(Record::CreateTopics(vec![spec])),
        Outcome::Admin(vec![Err((
            TOPIC_ALREADY_EXISTS,
            "topic 'a' already exists".into()
        ))])
    );
}

#[test]
fn placement_spreads_leaders_and_replicas_across_brokers() {
    let sm = Sm::new(&[0, 1, 2]);
    for random in [0u64, 1, 2, 0x1_0000_0001, u64::MAX] {
        let a = place(&sm.image, 0, 6, 3, random);
        assert_eq!(a.len(), 6);
        for r in &a {
            let mut s = r.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2], "{a:?}");
        }
        let mut leaders: Vec<i32> = a[..3].iter().map(|r| r[0]).collect();
        leaders.sort();
        assert_eq!(leaders, vec![0, 1, 2], "{a:?}");
    }
    let a = place(&sm.image, 0, 3, 1, 5);
    let mut leaders: Vec<i32> = a.iter().map(|r| r[0]).collect();
    leaders.sort();
    assert_eq!(leaders, vec![0, 1, 2]);
}

#[test]
fn create_partitions_and_delete_topics() {
    let mut sm = Sm::new(&[0, 1, 2]);
    sm.create("t", vec![vec![0, 1]]);
    assert_eq!(
        plan_partitions(&sm.image, "t", 1, 0).unwrap_err().0,
        INVALID_PARTITIONS
    );
    assert_eq!(
        plan_partitions(&sm.image, "x", 3, 0).unwrap_err().0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let spec = plan_partitions(&sm.image, "t", 3, 0).expect("plan");
    assert_eq!(
        sm.apply(Record::CreatePartitions(vec![spec])),
        Outcome::Admin(vec![Ok(())])
    );
    assert_eq!(sm.image.topics["t"].partitions.len(), 3);
    assert!(sm.image.topics["t"]
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 2));
    let out = sm.apply(Record::DeleteTopics(vec!["t".into(), "x".into()]));
    match out {
        Outcome::Admin(r) => {
            assert_eq!(r[0], Ok(()));
            assert_eq!(r[1].as_ref().unwrap_err().0, UNKNOWN_TOPIC_OR_PARTITION);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(sm.image.topics.is_empty());
}

#[test]
fn preferred_leader_election_moves_leadership_back() {
    let mut sm = Sm::new(&[0, 1]);
    sm.create("t", vec![vec![0, 1]]);
    sm.fence(0);
    assert_eq!(sm.part("t", 0).leader, 1);
    sm.register(0, 1);
    // Back, but not in the ISR: not eligible.
    assert!(imbalanced(&sm.image).is_empty());
    let p = sm.part("t", 0);
    sm.image.topics.get_mut("t").unwrap().partitions[0].isr = vec![1, 0];
    let tps = imbalanced(&sm.image);
    assert_eq!(tps.len(), 1);
    sm.apply(Record::ElectPreferred(tps));
    let q = sm.part("t", 0);
    assert_eq!(q.leader, 0);
    assert_eq!(q.leader_epoch, p.leader_epoch + 1);
    assert_eq!(q.partition_epoch, p.partition_epoch + 1);
}

#[test]
fn topic_config_changes_merge_or_replace_overrides() {
    let mut sm = Sm::new(&[0]);
    sm.create("t", vec![vec![0]]);
    let change = |set: &[(&str, &str)], remove: &[&str], replace_all| {
        Record::AlterTopicConfigs(vec![super::super::TopicConfigChange {
            topic: "t".into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            replace_all,
        }])
    };
    let configs = |sm: &Sm| sm.image.topics["t"].configs.clone();
    sm.apply(change(
        &[("retention.ms", "1"), ("segment.ms", "2")],
        &[],
        false,
    ));
    sm.apply(change(&[("retention.bytes", "3")], &["segment.ms"], false));
    assert_eq!(
        configs(&sm).into_iter().collect::<Vec<_>>(),
        vec![
            ("retention.bytes".to_string(), "3".to_string()),
            ("retention.ms".to_string(), "1".to_string())
        ]
    );
    sm.apply(change(&[("segment.ms", "9")], &[], true));
    assert_eq!(configs(&sm).len(), 1);
    let mut missing = change(&[], &[], false);
    if let Record::AlterTopicConfigs(chs) = &mut missing {
        chs[0].topic = "nope".into();
    }
    assert!(
        matches!(sm.apply(missing), Outcome::Admin(r) if r[0].as_ref().unwrap_err().0 == UNKNOWN_TOPIC_OR_PARTITION)
    );
}
