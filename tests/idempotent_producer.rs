//! The idempotent producer on one broker: InitProducerId hands out ids, a
//! retried batch is acknowledged with its first offset and not stored twice
//! (also after a restart and after kill -9), a sequence gap gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER and a stale epoch INVALID_PRODUCER_EPOCH.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

fn idempotent_batch(pid: i64, epoch: i16, first_seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: now_ms(),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{first_seq}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn init_producer(c: &mut Client) -> (i64, i16) {
    let r = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(r.error_code, code::NONE);
    assert!(r.producer_id.0 >= 0);
    (r.producer_id.0, r.producer_epoch)
}

#[test]
fn init_producer_id_hands_out_distinct_ids_across_restarts() {
    let mut b = Broker::start(&[]);
    let (a, _) = init_producer(&mut b.client());
    let (c, _) = init_producer(&mut b.client());
    assert_ne!(a, c);
    b.kill9();
    b.restart();
    let (d, _) = init_producer(&mut b.client());
    assert!(
        d > a && d > c,
        "ids after a crash must not repeat: {a} {c} {d}"
    );
}

#[test]
fn a_retried_batch_is_acknowledged_once_and_stored_once_even_across_restarts() {
    let mut b = Broker::start(&[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("idem", 1, 1, &[]), code::NONE);
    let (pid, epoch) = init_producer(&mut c);
    let first = idempotent_batch(pid, epoch, 0, 5);
    assert_eq!(c.produce_ok("idem", 0, first.clone()), 0);
    assert_eq!(
        c.produce_ok("idem", 0, first.clone()),
        0,
        "duplicate gets the original offset"
    );
    assert_eq!(c.latest("idem", 0), 5, "duplicate not stored");
    let second = idempotent_batch(pid, epoch, 5, 3);
    assert_eq!(c.produce_ok("idem", 0, second.clone()), 5);
    for restart in ["clean", "kill9"] {
        if restart == "clean" {
            b.stop_cleanly();
            b.restart();
        } else {
            b.kill9();
            b.restart();
        }
        let mut c = b.client();
        assert_eq!(
            c.produce_ok("idem", 0, second.clone()),
            5,
            "after {restart} restart"
        );
        assert_eq!(c.latest("idem", 0), 8, "after {restart} restart");
    }
}

#[test]
fn a_sequence_gap_and_a_stale_epoch_are_refused() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("gap", 1, 1, &[]), code::NONE);
    let (pid, epoch) = init_producer(&mut c);
    c.produce_ok("gap", 0, idempotent_batch(pid, epoch, 0, 2));
    let gap = c.produce("gap", 0, -1, idempotent_batch(pid, epoch, 7, 1));
    assert_eq!(gap.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // A bumped epoch restarts sequences at 0; the old epoch is then fenced.
    c.produce_ok("gap", 0, idempotent_batch(pid, epoch + 1, 0, 1));
    let stale = c.produce("gap", 0, -1, idempotent_batch(pid, epoch, 2, 1));
    assert_eq!(stale.error_code, INVALID_PRODUCER_EPOCH);
    assert_eq!(c.latest("gap", 0), 3, "refused batches are not stored");
}
