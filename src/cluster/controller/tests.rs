//! Controller quorum tests on real sockets and temp dirs (std threads only).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use super::*;
use crate::cluster::metadata::MetadataImage;

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn config(
    node_id: i32,
    listen: SocketAddr,
    voters: &[(i32, SocketAddr)],
    dir: &std::path::Path,
    props: &BTreeMap<String, String>,
) -> ControllerConfig {
    ControllerConfig {
        node_id,
        listen,
        voters: voters.to_vec(),
        dir: dir.join("__cluster_metadata-0"),
        props: props.clone(),
    }
}

fn heartbeat(client: &ControllerClient, id: i32, incarnation: u64) -> HeartbeatReply {
    let hb = BrokerHeartbeat {
        broker_id: id,
        host: format!("broker{id}"),
        port: 9092,
        incarnation,
    };
    client.heartbeat(&hb).expect("heartbeat")
}

fn topic(name: &str, partitions: i32, rf: i16) -> CreateTopic {
    CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        assignments: None,
        configs: BTreeMap::new(),
        id: None,
    }
}

/// Polls until the image reaches `version` and `ok` holds for it.
fn fetch_until(
    client: &ControllerClient,
    version: u64,
    ok: impl Fn(&MetadataImage) -> bool,
) -> MetadataImage {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut known = version.saturating_sub(1);
    loop {
        assert!(
            Instant::now() < deadline,
            "metadata never reached {version}"
        );
        if let Ok(Some(img)) = client.fetch_metadata(known, Duration::from_millis(500)) {
            if img.version >= version && ok(&img) {
                return img;
            }
            known = img.version;
        }
    }
}

#[test]
fn quorum_survives_leader_loss_and_restarted_voter_catches_up() {
    let voters: Vec<(i32, SocketAddr)> = (0..3).map(|i| (i, free_addr())).collect();
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut props = BTreeMap::new();
    props.insert("broker.session.timeout.ms".to_string(), "60000".to_string());
    props.insert(
        "corelog.metadata.snapshot.entries".to_string(),
        "3".to_string(),
    );
    let start_voter = |i: usize| {
        start(config(
            i as i32,
            voters[i].1,
            &voters,
            tmp[i].path(),
            &props,
        ))
        .expect("start")
    };
    let mut handles: Vec<Option<ControllerHandle>> = (0..3).map(|i| Some(start_voter(i))).collect();
    let client = ControllerClient::new(voters.clone());
    for b in 0..3 {
        assert!(!heartbeat(&client, b, 1).fenced);
    }
    let reply = client
        .create_topics(vec![topic("t", 3, 3)], false)
        .expect("create");
    assert_eq!(reply.results, vec![Ok(())]);
    let img = fetch_until(&client, reply.version, |i| i.controller_id >= 0);
    assert_eq!(img.topics["t"].partitions.len(), 3);
    assert_eq!(img.live_brokers().count(), 3);

    let old_leader = img.controller_id as usize;
    handles[old_leader].take().expect("running").shutdown();

    // The survivors elect a new leader and keep committing.
    let reply = client
        .create_topics(vec![topic("u", 1, 2)], false)
        .expect("create after failover");
    assert_eq!(reply.results, vec![Ok(())]);
    let img = fetch_until(&client, reply.version, |i| {
        i.controller_id >= 0 && i.controller_id as usize != old_leader
    });
    let p = img.partition("t", 0).expect("t-0").clone();
    let shrunk: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|&r| r != p.leader)
        .take(1)
        .chain([p.leader])
        .collect();
    let req = AlterPartition {
        broker_id: p.leader,
        topic: "t".into(),
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: shrunk.clone(),
        added_incarnations: Vec::new(),
    };
    let state = client
        .alter_partition(&req)
        .expect("alter")
        .expect("accepted");
    assert_eq!(state.isr, shrunk);
    assert_eq!(state.partition_epoch, p.partition_epoch + 1);
    assert_eq!(
        client.alter_partition(&req).expect("alter again"),
        Err(INVALID_UPDATE_VERSION)
    );
    // Enough entries that the survivors snapshot and compact past the
    // stopped voter's log: it must catch up from a raft snapshot.
    let mut latest = 0;
    for i in 0..4 {
        let r = client
            .create_topics(vec![topic(&format!("v{i}"), 1, 1)], false)
            .expect("create");
        assert_eq!(r.results, vec![Ok(())]);
        latest = r.version;
    }

    // The stopped voter restarts from its dir and catches up: with another
    // voter stopped, nothing commits unless it holds the whole log.
    handles[old_leader] = Some(start_voter(old_leader));
    let other = (0..3)
        .find(|&i| i != old_leader && handles[i].is_some())
        .expect("a survivor");
    handles[other].take().expect("running").shutdown();
    let r = client
        .create_topics(vec![topic("after-restart", 1, 1)], false)
        .expect("create with the restarted voter in the quorum");
    assert_eq!(r.results, vec![Ok(())]);
    let img = fetch_until(&client, r.version, |i| i.controller_id >= 0);
    assert_eq!(img.partition("t", 0), Some(&state));
    assert!(img.topics.contains_key("u") && img.topics.contains_key("v3"));
    assert!(r.version > latest);
}

#[test]
fn single_voter_restarts_from_snapshot_and_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut props = BTreeMap::new();
    props.insert(
        "corelog.metadata.snapshot.entries".to_string(),
        "4".to_string(),
    );
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cfg = config(0, listen, &[(0, listen)], tmp.path(), &props);

    let h = start(cfg.clone()).expect("start");
    let client = ControllerClient::new(vec![(0, h.local_addr())]);
    heartbeat(&client, 0, 7);
    let mut version = 0;
    for i in 0..10 {
        let r = client
            .create_topics(vec![topic(&format!("t{i}"), 2, 1)], false)
            .expect("create");
        assert_eq!(r.results, vec![Ok(())]);
        version = r.version;
    }
    let r = client.delete_topics(vec!["t3".into()]).expect("delete");
    version = version.max(r.version);
    let r = client
        .create_partitions(vec![("t4".into(), 5)], false)
        .expect("partitions");
    assert_eq!(r.results, vec![Ok(())]);
    version = version.max(r.version);
    let before = fetch_until(&client, version, |_| true);
    h.shutdown();
    assert!(cfg.dir.join("raft.snapshot").exists(), "snapshot written");

    let h = start(cfg.clone()).expect("restart");
    let client = ControllerClient::new(vec![(0, h.local_addr())]);
    let after = fetch_until(&client, version, |i| i.controller_id == 0);
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.brokers, before.brokers);
    // Validation answers without committing; a real change commits after the restart.
    let r = client
        .create_topics(vec![topic("t0", 1, 1)], true)
        .expect("validate");
    assert_eq!(r.results[0].as_ref().unwrap_err().0, TOPIC_ALREADY_EXISTS);
    let r = client
        .create_topics(vec![topic("new", 1, 1)], false)
        .expect("create after restart");
    assert_eq!(r.results, vec![Ok(())]);
    assert!(r.version > version);
    h.shutdown();
}
