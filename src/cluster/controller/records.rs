//! Metadata records and the deterministic state machine that applies them
//! to a `MetadataImage`.
//!
//! Runs on the controller's raft thread (and in tests). Every voter applies
//! the same committed records in the same order, so `apply` must decide
//! everything from the image and the record alone: no clocks, no
//! randomness (the proposer puts random choices such as replica placement
//! and topic ids into the record).

use std::collections::BTreeMap;

use crate::cluster::metadata::{BrokerInfo, MetadataImage, PartitionState, TopicImage, NO_LEADER};

use super::{AlterPartition, CreateTopic};

pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const INELIGIBLE_REPLICA: i16 = 107;
pub const INVALID_UPDATE_VERSION: i16 = 108;

/// Kafka's per-topic and per-broker switch for unclean leader election.
pub const UNCLEAN_ELECTION_PROP: &str = "unclean.leader.election.enable";

/// A topic to create, with every random choice already made by the proposer.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub id: u128,
    pub configs: BTreeMap<String, String>,
    /// Replica list per partition (explicit or placed by the proposer).
    pub assignment: Vec<Vec<i32>>,
    /// True when the client named the replicas (fenced brokers allowed).
    pub explicit: bool,
}

/// New partitions for an existing topic.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionsSpec {
    pub topic: String,
    /// The topic's partition count the proposer planned from.
    pub from_count: i32,
    /// Replica lists of the new partitions, in partition order.
    pub assignment: Vec<Vec<i32>>,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// One entry of the metadata log.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Record {
    RegisterBroker {
        id: i32,
        host: String,
        port: u16,
        incarnation: u64,
    },
    FenceBroker {
        id: i32,
    },
    AlterPartition(AlterPartition),
    CreateTopics(Vec<TopicSpec>),
    DeleteTopics(Vec<String>),
    CreatePartitions(Vec<PartitionsSpec>),
    ElectPreferred(Vec<TopicPartition>),
    AlterTopicConfigs(Vec<super::TopicConfigChange>),
}

/// What applying a record answers to the proposer.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done,
    Alter(Result<PartitionState, i16>),
    Admin(Vec<Result<(), (i16, String)>>),
}

/// Static rules every voter applies identically (from broker properties).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Broker-wide `unclean.leader.election.enable`.
    pub unclean: bool,
}

impl Rules {
    fn unclean_for(&self, topic: &TopicImage) -> bool {
        match topic.configs.get(UNCLEAN_ELECTION_PROP) {
            Some(v) => v.eq_ignore_ascii_case("true"),
            None => self.unclean,
        }
    }
}

/// Applies one committed record at raft index `index`.
pub fn apply(image: &mut MetadataImage, rules: &Rules, index: u64, record: &Record) -> Outcome {
    assert!(index > image.version, "records apply in log order");
    image.version = index;
    match record {
        Record::RegisterBroker {
            id,
            host,
            port,
            incarnation,
        } => {
            register_broker(image, rules, *id, host, *port, *incarnation);
            Outcome::Done
        }
        Record::FenceBroker { id } => {
            fence_broker(image, rules, *id);
            Outcome::Done
        }
        Record::AlterPartition(req) => Outcome::Alter(alter_partition(image, req)),
        Record::CreateTopics(specs) => {
            Outcome::Admin(specs.iter().map(|s| create_topic(image, s)).collect())
        }
        Record::DeleteTopics(names) => Outcome::Admin(
            names
                .iter()
                .map(|n| match image.topics.remove(n) {
                    Some(_) => {
                        tracing::info!(topic = %n, "topic deleted");
                        Ok(())
                    }
                    None => Err(unknown_topic(n)),
                })
                .collect(),
        ),
        Record::CreatePartitions(specs) => {
            Outcome::Admin(specs.iter().map(|s| create_partitions(image, s)).collect())
        }
        Record::ElectPreferred(tps) => {
            for tp in tps {
                elect_preferred(image, tp);
            }
            Outcome::Done
        }
        Record::AlterTopicConfigs(changes) => Outcome::Admin(
            changes
                .iter()
                .map(|ch| {
                    let topic = image
                        .topics
                        .get_mut(&ch.topic)
                        .ok_or_else(|| unknown_topic(&ch.topic))?;
                    if ch.replace_all {
                        topic.configs = ch.set.clone();
                    } else {
                        topic.configs.extend(ch.set.clone());
                        for k in &ch.remove {
                            topic.configs.remove(k);
                        }
                    }
                    tracing::info!(topic = %ch.topic, configs = ?topic.configs, "topic configs changed");
                    Ok(())
                })
                .collect(),
        ),
    }
}

fn unknown_topic(name: &str) -> (i16, String) {
    (
        UNKNOWN_TOPIC_OR_PARTITION,
        format!("topic '{name}' does not exist"),
    )
}

fn is_live(brokers: &BTreeMap<i32, BrokerInfo>, id: i32) -> bool {
    brokers.get(&id).is_some_and(|b| !b.fenced)
}

fn change_leader(topic: &str, p: usize, part: &mut PartitionState, leader: i32, why: &str) {
    tracing::info!(
        "partition {topic}-{p}: leader {} -> {leader} (epoch {}) {why}",
        part.leader,
        part.leader_epoch + 1
    );
    part.leader = leader;
    part.leader_epoch += 1;
}

fn change_isr(topic: &str, p: usize, part: &mut PartitionState, isr: Vec<i32>) {
    if part.isr != isr {
        tracing::info!("partition {topic}-{p}: isr {:?} -> {:?}", part.isr, isr);
        part.isr = isr;
    }
}

fn register_broker(
    image: &mut MetadataImage,
    rules: &Rules,
    id: i32,
    host: &str,
    port: u16,
    incarnation: u64,
) {
    let restarted = image
        .brokers
        .get(&id)
        .is_some_and(|b| b.incarnation != incarnation);
    if restarted {
        // The restarted broker may have lost unflushed data: it leaves every
        // ISR it can leave, and re-joins by catching up.
        let brokers = image.brokers.clone();
        for topic in image.topics.values_mut() {
            for (p, part) in topic.partitions.iter_mut().enumerate() {
                if !part.isr.contains(&id) {
                    continue;
                }
                let others = part.isr.iter().any(|&r| r != id && is_live(&brokers, r));
                if others {
                    let isr: Vec<i32> = part.isr.iter().copied().filter(|&r| r != id).collect();
                    if part.leader == id {
                        let next = part
                            .replicas
                            .iter()
                            .copied()
                            .find(|&r| isr.contains(&r) && is_live(&brokers, r))
                            .unwrap_or(NO_LEADER);
                        change_leader(&topic.name, p, part, next, "(broker restarted)");
                    }
                    change_isr(&topic.name, p, part, isr);
                    part.partition_epoch += 1;
                } else if part.leader == id {
                    part.leader_epoch += 1;
                    part.partition_epoch += 1;
                }
            }
        }
    }
    let known = image.brokers.contains_key(&id);
    let info = image.brokers.entry(id).or_insert_with(|| BrokerInfo {
        id,
        host: String::new(),
        port: 0,
        incarnation,
        fenced: true,
    });
    if !known || info.fenced || restarted {
        tracing::info!(broker = id, host, port, incarnation, "broker registered");
    }
    info.host = host.to_string();
    info.port = port;
    info.incarnation = incarnation;
    info.fenced = false;
    elect_leaderless(image, rules);
}

/// Gives every leaderless partition a leader if one of its ISR (or, with
/// unclean election, any replica) is live.
fn elect_leaderless(image: &mut MetadataImage, rules: &Rules) {
    let brokers = &image.brokers;
    for topic in image.topics.values_mut() {
        let unclean = rules.unclean_for(topic);
        for (p, part) in topic.partitions.iter_mut().enumerate() {
            if part.leader != NO_LEADER {
                continue;
            }
            let clean = part
                .replicas
                .iter()
                .copied()
                .find(|&r| part.isr.contains(&r) && is_live(brokers, r));
            if let Some(l) = clean {
                change_leader(&topic.name, p, part, l, "(leaderless, isr member back)");
                part.partition_epoch += 1;
            } else if unclean {
                if let Some(l) = part.replicas.iter().copied().find(|&r| is_live(brokers, r)) {
                    change_leader(&topic.name, p, part, l, "(UNCLEAN election)");
                    change_isr(&topic.name, p, part, vec![l]);
                    part.partition_epoch += 1;
                }
            }
        }
    }
}

fn fence_broker(image: &mut MetadataImage, rules: &Rules, id: i32) {
    match image.brokers.get_mut(&id) {
        Some(b) if !b.fenced => b.fenced = true,
        _ => return,
    }
    tracing::info!(broker = id, "broker fenced");
    let brokers = &image.brokers;
    for topic in image.topics.values_mut() {
        let unclean = rules.unclean_for(topic);
        for (p, part) in topic.partitions.iter_mut().enumerate() {
            if part.leader == id {
                let next = part
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| r != id && part.isr.contains(&r) && is_live(brokers, r));
                if let Some(n) = next {
                    change_leader(&topic.name, p, part, n, "(leader fenced)");
                    let isr = part.isr.iter().copied().filter(|&r| r != id).collect();
                    change_isr(&topic.name, p, part, isr);
                } else if let Some(n) = part
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| unclean && is_live(brokers, r))
                {
                    change_leader(&topic.name, p, part, n, "(leader fenced, UNCLEAN)");
                    change_isr(&topic.name, p, part, vec![n]);
                } else {
                    // Kafka keeps the last ISR member so it can lead again.
                    change_leader(&topic.name, p, part, NO_LEADER, "(leader fenced, offline)");
                }
                part.partition_epoch += 1;
            } else if part.isr.contains(&id) && part.isr.len() > 1 {
                let isr = part.isr.iter().copied().filter(|&r| r != id).collect();
                change_isr(&topic.name, p, part, isr);
                part.partition_epoch += 1;
            }
        }
    }
}

fn alter_partition(image: &mut MetadataImage, req: &AlterPartition) -> Result<PartitionState, i16> {
    let brokers = &image.brokers;
    let topic = image
        .topics
        .get_mut(&req.topic)
        .ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
    let p = usize::try_from(req.partition).map_err(|_| UNKNOWN_TOPIC_OR_PARTITION)?;
    let part = topic
        .partitions
        .get_mut(p)
        .ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
    if req.leader_epoch != part.leader_epoch {
        return Err(FENCED_LEADER_EPOCH);
    }
    if req.broker_id != part.leader {
        return Err(INVALID_REQUEST);
    }
    if req.partition_epoch != part.partition_epoch {
        return Err(INVALID_UPDATE_VERSION);
    }
    let mut sorted = req.new_isr.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let valid = sorted.len() == req.new_isr.len()
        && req.new_isr.contains(&part.leader)
        && req.new_isr.iter().all(|r| part.replicas.contains(r));
    if !valid {
        return Err(INVALID_REQUEST);
    }
    let ineligible = req.new_isr.iter().any(|&r| {
        let added = !part.isr.contains(&r);
        let same_process = || {
            req.added_incarnations
                .iter()
                .any(|&(id, inc)| id == r && brokers.get(&r).is_some_and(|b| b.incarnation == inc))
        };
        added && (!is_live(brokers, r) || !same_process())
    });
    if ineligible {
        return Err(INELIGIBLE_REPLICA);
    }
    change_isr(&topic.name, p, part, req.new_isr.clone());
    part.partition_epoch += 1;
    Ok(part.clone())
}

/// Checks a replica assignment against the registered brokers.
fn check_assignment(image: &MetadataImage, assignment: &[Vec<i32>]) -> Result<(), (i16, String)> {
    for (p, replicas) in assignment.iter().enumerate() {
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if replicas.is_empty() || sorted.len() != replicas.len() {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!("partition {p}: replica list {replicas:?} is empty or has duplicates"),
            ));
        }
        if let Some(r) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!("partition {p}: broker {r} is not registered"),
            ));
        }
    }
    Ok(())
}

fn check_replication_factor(image: &MetadataImage, rf: i16) -> Result<(), (i16, String)> {
    let live = image.live_brokers().count();
    if rf < 1 || rf as usize > live {
        return Err((
            INVALID_REPLICATION_FACTOR,
            format!("replication factor {rf} is invalid: {live} brokers are alive"),
        ));
    }
    Ok(())
}

/// Builds partitions from replica lists: the ISR is the live replicas and
/// the leader the first of them.
fn new_partitions(
    image: &MetadataImage,
    assignment: &[Vec<i32>],
) -> Result<Vec<PartitionState>, (i16, String)> {
    assignment
        .iter()
        .enumerate()
        .map(|(p, replicas)| {
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|&r| is_live(&image.brokers, r))
                .collect();
            let leader = *isr.first().ok_or_else(|| {
                (
                    INVALID_REPLICA_ASSIGNMENT,
                    format!("partition {p}: every assigned broker is fenced"),
                )
            })?;
            Ok(PartitionState {
                replicas: replicas.clone(),
                isr,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            })
        })
        .collect()
}

/// The proposer's half of CreateTopics: validates and makes the random
/// choices. `random` seeds placement; `id_random` is used if no id is given.
pub fn plan_create(
    image: &MetadataImage,
    default_rf: i16,
    ct: &CreateTopic,
    random: u64,
    id_random: u128,
) -> Result<TopicSpec, (i16, String)> {
    if image.topics.contains_key(&ct.name) {
        return Err((
            TOPIC_ALREADY_EXISTS,
            format!("topic '{}' already exists", ct.name),
        ));
    }
    let assignment = match &ct.assignments {
        Some(a) => {
            if a.is_empty() {
                return Err((INVALID_PARTITIONS, "no partitions assigned".into()));
            }
            check_assignment(image, a)?;
            a.clone()
        }
        None => {
            if ct.partitions < 1 {
                return Err((
                    INVALID_PARTITIONS,
                    format!("partition count {} must be at least 1", ct.partitions),
                ));
            }
            let rf = if ct.replication_factor == -1 {
                default_rf
            } else {
                ct.replication_factor
            };
            check_replication_factor(image, rf)?;
            place(image, 0, ct.partitions, rf as usize, random)
        }
    };
    new_partitions(image, &assignment)?;
    Ok(TopicSpec {
        name: ct.name.clone(),
        id: ct.id.unwrap_or(id_random),
        configs: ct.configs.clone(),
        assignment,
        explicit: ct.assignments.is_some(),
    })
}

/// Kafka's rack-unaware placement over the live brokers sorted by id:
/// leaders round-robin from a random start, followers shifted so that
/// replica sets spread too.
pub fn place(
    image: &MetadataImage,
    from: i32,
    count: i32,
    rf: usize,
    random: u64,
) -> Vec<Vec<i32>> {
    let brokers: Vec<i32> = image.live_brokers().map(|b| b.id).collect();
    let n = brokers.len();
    assert!(
        rf >= 1 && rf <= n,
        "replication factor checked before placement"
    );
    let start = (random % n as u64) as usize;
    let mut shift = ((random >> 32) % n as u64) as usize;
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in from.max(0) as usize..(from + count).max(0) as usize {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = vec![brokers[first]];
        for j in 0..rf - 1 {
            let s = 1 + (shift + j) % (n - 1);
            replicas.push(brokers[(first + s) % n]);
        }
        out.push(replicas);
    }
    out
}

fn create_topic(image: &mut MetadataImage, spec: &TopicSpec) -> Result<(), (i16, String)> {
    if image.topics.contains_key(&spec.name) {
        return Err((
            TOPIC_ALREADY_EXISTS,
            format!("topic '{}' already exists", spec.name),
        ));
    }
    check_assignment(image, &spec.assignment)?;
    if !spec.explicit {
        // Placed on live brokers; one fenced since means re-plan.
        let all_live = spec
            .assignment
            .iter()
            .flatten()
            .all(|&r| is_live(&image.brokers, r));
        if !all_live {
            return Err((
                INVALID_REPLICATION_FACTOR,
                "a broker chosen for placement was fenced meanwhile; retry".into(),
            ));
        }
    }
    let partitions = new_partitions(image, &spec.assignment)?;
    tracing::info!(topic = %spec.name, partitions = partitions.len(), "topic created");
    image.topics.insert(
        spec.name.clone(),
        TopicImage {
            name: spec.name.clone(),
            id: spec.id,
            configs: spec.configs.clone(),
            partitions,
        },
    );
    Ok(())
}

/// The proposer's half of CreatePartitions.
pub fn plan_partitions(
    image: &MetadataImage,
    topic: &str,
    count: i32,
    random: u64,
) -> Result<PartitionsSpec, (i16, String)> {
    let t = image
        .topics
        .get(topic)
        .ok_or_else(|| unknown_topic(topic))?;
    let current = t.partitions.len() as i32;
    if count <= current {
        return Err((
            INVALID_PARTITIONS,
            format!("topic '{topic}' has {current} partitions; {count} is not more"),
        ));
    }
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
    check_replication_factor(image, rf)?;
    Ok(PartitionsSpec {
        topic: topic.to_string(),
        from_count: current,
        assignment: place(image, current, count - current, rf as usize, random),
    })
}

fn create_partitions(
    image: &mut MetadataImage,
    spec: &PartitionsSpec,
) -> Result<(), (i16, String)> {
    let current = match image.topics.get(&spec.topic) {
        Some(t) => t.partitions.len() as i32,
        None => return Err(unknown_topic(&spec.topic)),
    };
    if current != spec.from_count {
        return Err((
            INVALID_PARTITIONS,
            format!(
                "topic '{}' changed to {current} partitions meanwhile",
                spec.topic
            ),
        ));
    }
    check_assignment(image, &spec.assignment)?;
    let new = new_partitions(image, &spec.assignment)?;
    let t = image.topics.get_mut(&spec.topic).expect("checked above");
    t.partitions.extend(new);
    tracing::info!(topic = %spec.topic, partitions = t.partitions.len(), "partitions added");
    Ok(())
}

/// The partitions whose preferred replica is live, in sync and not leading.
pub fn imbalanced(image: &MetadataImage) -> Vec<TopicPartition> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (p, part) in t.partitions.iter().enumerate() {
            if preferred_eligible(image, part) {
                out.push(TopicPartition {
                    topic: t.name.clone(),
                    partition: p as i32,
                });
            }
        }
    }
    out
}

fn preferred_eligible(image: &MetadataImage, part: &PartitionState) -> bool {
    match part.replicas.first() {
        Some(&pref) => {
            pref != part.leader && part.isr.contains(&pref) && is_live(&image.brokers, pref)
        }
        None => false,
    }
}

fn elect_preferred(image: &mut MetadataImage, tp: &TopicPartition) {
    let Some(p) = usize::try_from(tp.partition).ok() else {
        return;
    };
    let eligible = match image.partition(&tp.topic, tp.partition) {
        Some(part) => preferred_eligible(image, part),
        None => false,
    };
    if !eligible {
        return;
    }
    let t = image.topics.get_mut(&tp.topic).expect("checked above");
    let part = &mut t.partitions[p];
    let pref = part.replicas[0];
    change_leader(&t.name, p, part, pref, "(preferred replica)");
    part.partition_epoch += 1;
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
