//! Hostile and broken clients against the real broker binary. Every test
//! ends the same way: the process is alive, a second, well-behaved client
//! gets ApiVersions and a produce/fetch round trip, and SIGTERM exits 0.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsResponse, FetchRequest, ResponseHeader};
use kafka_protocol::protocol::Decodable;

use common::*;

/// Bytes of a request header (v1, or v2 when `flexible`) with any api key and version.
fn raw_header(api_key: i16, version: i16, correlation_id: i32, flexible: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(correlation_id);
    b.put_i16(5);
    b.put_slice(b"tests");
    if flexible {
        b.put_u8(0); // no tagged fields
    }
    b
}

fn with_size_prefix(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Deterministic bytes from a seed (xorshift64*), so a failure replays.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Sends `bytes`, half-closes, and asserts the broker closes without answering.
fn assert_refused(broker: &Broker, bytes: &[u8], what: &str) {
    let mut s = broker.raw();
    write_best_effort(&mut s, bytes);
    let _ = s.shutdown(Shutdown::Write);
    assert!(
        closed_by_peer(&mut s),
        "{what}: broker should close the connection without a response"
    );
}

fn finish(mut broker: Broker) {
    broker.assert_serves_a_well_behaved_client();
    broker.stop_cleanly();
}

#[test]
fn garbage_bytes_close_the_connection_and_the_broker_keeps_serving() {
    let broker = Broker::start(&[]);
    // An HTTP request: "GET " read as a size prefix is 1.2 GB.
    assert_refused(
        &broker,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "HTTP request",
    );
    for seed in 0..20 {
        assert_refused(&broker, &noise(seed, 512), &format!("noise seed {seed}"));
    }
    // A plausible size prefix in front of noise: the header decodes to nonsense.
    for seed in 100..110 {
        let body = noise(seed, 60);
        assert_refused(
            &broker,
            &with_size_prefix(&body),
            &format!("framed noise seed {seed}"),
        );
    }
    // Frames shorter than a request header.
    assert_refused(&broker, &with_size_prefix(&[]), "empty frame");
    assert_refused(&broker, &with_size_prefix(&[0, 18, 0]), "3-byte frame");
    finish(broker);
}

#[test]
fn negative_size_prefix_closes_the_connection() {
    let broker = Broker::start(&[]);
    for size in [-1i32, i32::MIN, -100] {
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 32]);
        assert_refused(&broker, &bytes, &format!("size prefix {size}"));
    }
    finish(broker);
}

#[test]
fn two_gigabyte_size_prefix_is_refused_without_allocating_it() {
    let broker = Broker::start(&[]);
    let hwm_before = broker.status_kib("VmHWM");
    for _ in 0..8 {
        let mut s = broker.raw();
        write_best_effort(&mut s, &i32::MAX.to_be_bytes());
        write_best_effort(&mut s, &[0u8; 1024]);
        assert!(
            closed_by_peer(&mut s),
            "a 2 GiB frame must be refused at once"
        );
    }
    let hwm_after = broker.status_kib("VmHWM");
    assert!(
        hwm_after < hwm_before + 64 * 1024,
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB: the claimed size was allocated"
    );
    finish(broker);
}

#[test]
fn frame_above_socket_request_max_bytes_is_refused() {
    let broker = Broker::start(&["socket.request.max.bytes=4096"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("big", 1, 1, &[]), code::NONE);
    // A real, well-formed produce request of ~8 KiB: too large for this broker.
    let req = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(topic_name("big"))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch_of_values(&values("big", 8, 1000), now_ms()))),
                ]),
        ]);
    let frame = Client::frame(PRODUCE_V, 1, &req);
    assert!(frame.len() > 4096 + 4);
    assert_refused(&broker, &frame, "frame above socket.request.max.bytes");
    // The size prefix alone is enough to refuse: no body needs to arrive.
    let mut s = broker.raw();
    write_best_effort(&mut s, &4097i32.to_be_bytes());
    assert!(closed_by_peer(&mut s), "prefix of 4097 with max 4096");
    assert_eq!(
        c.latest("big", 0),
        0,
        "nothing from the refused frame was stored"
    );
    finish(broker);
}

#[test]
fn truncated_request_is_dropped_when_the_client_closes() {
    let broker = Broker::start(&[]);
    for _ in 0..5 {
        let mut s = broker.raw();
        let mut bytes = 100i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&raw_header(18, 3, 1, true)[..10]);
        write_best_effort(&mut s, &bytes);
        drop(s);
    }
    // Same, but the client half-closes and waits: the broker must not answer.
    let mut s = broker.raw();
    let mut bytes = 100i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    write_best_effort(&mut s, &bytes);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(
        closed_by_peer(&mut s),
        "truncated request: broker closes, no answer"
    );
    finish(broker);
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let broker = Broker::start(&[]);
    let mut frame = raw_header(9999, 0, 7, false);
    frame.put_slice(&[0u8; 16]);
    assert_refused(&broker, &with_size_prefix(&frame), "api key 9999");
    let mut frame = raw_header(-1, 0, 7, false);
    frame.put_slice(&[0u8; 16]);
    assert_refused(&broker, &with_size_prefix(&frame), "api key -1");
    // A real Kafka API with a body that does not decode (OffsetCommit v8).
    let mut frame = raw_header(8, 8, 7, true);
    frame.put_slice(&[0u8; 16]);
    assert_refused(&broker, &with_size_prefix(&frame), "OffsetCommit");
    finish(broker);
}

#[test]
fn unsupported_produce_version_closes_the_connection() {
    let broker = Broker::start(&[]);
    for version in [0i16, 2, 10, 99, -1] {
        let mut frame = raw_header(0, version, 3, false);
        frame.put_i16(-1); // transactional_id: null
        frame.put_i16(1); // acks
        frame.put_i32(1000); // timeout
        frame.put_i32(0); // no topics
        assert_refused(
            &broker,
            &with_size_prefix(&frame),
            &format!("Produce v{version}"),
        );
    }
    finish(broker);
}

#[test]
fn unsupported_api_versions_version_gets_unsupported_version_in_a_v0_answer_with_the_table() {
    let broker = Broker::start(&[]);
    let mut s = broker.raw();
    let mut frame = raw_header(18, 99, 4242, true);
    frame.put_u8(1); // client_software_name: compact ""
    frame.put_u8(1); // client_software_version: compact ""
    frame.put_u8(0); // tagged fields
    s.write_all(&with_size_prefix(&frame)).unwrap();
    let mut c = Client::from_stream(s);
    let mut resp = c.read_frame().expect("an answer, not a close");
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    assert_eq!(header.correlation_id, 4242);
    let body = ApiVersionsResponse::decode(&mut resp, 0).expect("decodes as v0");
    assert_eq!(body.error_code, code::UNSUPPORTED_VERSION);
    let produce = body
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("table lists Produce");
    assert!(produce.min_version <= PRODUCE_V && PRODUCE_V <= produce.max_version);
    assert!(body
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version >= 3));
    // The connection stays usable: the client retries with a version we speak.
    let av = c.api_versions(3);
    assert_eq!(av.error_code, code::NONE);
    finish(broker);
}

#[test]
fn produce_with_a_flipped_bit_is_corrupt_message_and_stores_nothing() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("crc", 1, 1, &[]), code::NONE);
    c.produce_ok("crc", 0, batch_of_values(&values("good", 3, 50), now_ms()));
    assert_eq!(c.latest("crc", 0), 3);
    let good = batch_of_values(&values("bad", 5, 50), now_ms());
    for at in [good.len() / 2, good.len() - 1, 70] {
        let mut bad = good.to_vec();
        bad[at] ^= 0x10;
        let p = c.produce("crc", 0, -1, Bytes::from(bad));
        assert_eq!(
            p.error_code,
            code::CORRUPT_MESSAGE,
            "bit flipped at byte {at}"
        );
        assert_eq!(
            c.latest("crc", 0),
            3,
            "nothing stored after the corrupt batch at {at}"
        );
    }
    // Truncated and wrong-magic batches are corrupt too.
    let p = c.produce("crc", 0, -1, good.slice(..good.len() - 7));
    assert_eq!(p.error_code, code::CORRUPT_MESSAGE, "truncated batch");
    let mut magic = good.to_vec();
    magic[16] = 1;
    assert_eq!(
        c.produce("crc", 0, -1, Bytes::from(magic)).error_code,
        code::CORRUPT_MESSAGE,
        "magic 1"
    );
    assert_eq!(c.latest("crc", 0), 3);
    // A good batch after all that lands at the next offset and reads back.
    assert_eq!(c.produce_ok("crc", 0, good.clone()), 3);
    let got = c.fetch_all("crc", 0, 0, 8);
    assert_eq!(got[3].value.as_deref(), Some(&values("bad", 5, 50)[0][..]));
    finish(broker);
}

#[test]
fn batch_above_max_message_bytes_is_message_too_large() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(
        c.create_topic("small", 1, 1, &[("max.message.bytes", "1000")]),
        code::NONE
    );
    let big = batch_of_values(&values("big", 4, 400), now_ms());
    assert!(big.len() > 1000);
    let p = c.produce("small", 0, -1, big);
    assert_eq!(p.error_code, code::MESSAGE_TOO_LARGE);
    assert_eq!(c.latest("small", 0), 0, "nothing stored");
    let fits = batch_of_values(&values("fits", 2, 100), now_ms());
    assert!(fits.len() <= 1000);
    assert_eq!(c.produce_ok("small", 0, fits), 0);
    finish(broker);
}

#[test]
fn broker_message_max_bytes_applies_to_topics_without_an_override() {
    let broker = Broker::start(&["message.max.bytes=2000"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("dflt", 1, 1, &[]), code::NONE);
    let p = c.produce(
        "dflt",
        0,
        -1,
        batch_of_values(&values("big", 5, 500), now_ms()),
    );
    assert_eq!(p.error_code, code::MESSAGE_TOO_LARGE);
    assert_eq!(c.latest("dflt", 0), 0);
    finish(broker);
}

#[test]
fn produce_to_an_unknown_topic_without_auto_create_is_unknown_topic_or_partition() {
    let broker = Broker::start(&["auto.create.topics.enable=false"]);
    let mut c = broker.client();
    let p = c.produce(
        "nope",
        0,
        -1,
        batch_of_values(&values("x", 1, 10), now_ms()),
    );
    assert_eq!(p.error_code, code::UNKNOWN_TOPIC_OR_PARTITION);
    let md = c.metadata(&["nope"], true);
    assert_eq!(
        md.topics[0].error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION,
        "metadata does not create it"
    );
    let p = c.produce("nope", 0, 1, batch_of_values(&values("x", 1, 10), now_ms()));
    assert_eq!(
        p.error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION,
        "still unknown with acks=1"
    );
    // A partition past the topic's count is unknown too.
    assert_eq!(c.create_topic("one", 1, 1, &[]), code::NONE);
    let p = c.produce("one", 1, -1, batch_of_values(&values("x", 1, 10), now_ms()));
    assert_eq!(
        p.error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION,
        "partition 1 of a 1-partition topic"
    );
    assert!(
        !broker.partition_dir("nope", 0).exists(),
        "no directory for the unknown topic"
    );
    finish(broker);
}

#[test]
fn fetch_past_the_end_is_offset_out_of_range_without_waiting() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("ends", 1, 1, &[]), code::NONE);
    c.produce_ok("ends", 0, batch_of_values(&values("e", 3, 20), now_ms()));
    let f = c.fetch("ends", 0, 3, 1 << 20);
    assert_eq!(
        (f.error_code, f.records.len()),
        (code::NONE, 0),
        "at the end: empty, no error"
    );
    for offset in [4, 100, i64::MAX, -5] {
        let started = Instant::now();
        let f = c.fetch_with("ends", 0, offset, 2000, 1, 1 << 20);
        assert_eq!(f.error_code, code::OFFSET_OUT_OF_RANGE, "offset {offset}");
        assert!(f.records.is_empty());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "an out-of-range fetch is answered at once"
        );
    }
    finish(broker);
}

#[test]
fn create_topics_refusals_carry_kafkas_error_codes() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("exists", 1, 1, &[]), code::NONE);
    let codes = c.create_topics(vec![
        creatable("exists", 1, 1, &[]),
        creatable("bad name!", 1, 1, &[]),
        creatable("zero-partitions", 0, 1, &[]),
        creatable("rf-three", 1, 3, &[]),
        creatable("fine", 2, 1, &[]),
    ]);
    assert_eq!(
        codes,
        vec![
            code::TOPIC_ALREADY_EXISTS,
            code::INVALID_TOPIC_EXCEPTION,
            code::INVALID_PARTITIONS,
            code::INVALID_REPLICATION_FACTOR,
            code::NONE
        ]
    );
    for name in [
        String::new(),
        ".".into(),
        "..".into(),
        "x".repeat(250),
        "a/b".into(),
    ] {
        assert_eq!(
            c.create_topic(&name, 1, 1, &[]),
            code::INVALID_TOPIC_EXCEPTION,
            "name {name:?}"
        );
    }
    assert_eq!(
        c.create_topic("neg-partitions", -5, 1, &[]),
        code::INVALID_PARTITIONS
    );
    let md = c.metadata(&["zero-partitions", "rf-three", "fine"], false);
    let errs: Vec<i16> = md.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        errs,
        vec![
            code::UNKNOWN_TOPIC_OR_PARTITION,
            code::UNKNOWN_TOPIC_OR_PARTITION,
            code::NONE
        ]
    );
    assert_eq!(md.topics[2].partitions.len(), 2);
    finish(broker);
}

/// A uvarint as in flexible versions' compact lengths.
fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

#[test]
fn arrays_claiming_two_billion_elements_do_not_crash_the_broker() {
    let broker = Broker::start(&[]);
    let hwm_before = broker.status_kib("VmHWM");
    // Metadata v1: topics is an INT32-counted array.
    let mut f = raw_header(3, 1, 1, false);
    f.put_i32(i32::MAX);
    assert_refused(
        &broker,
        &with_size_prefix(&f),
        "Metadata v1 with 2^31-1 topics",
    );
    // Metadata v12: a compact array; uvarint u32::MAX means u32::MAX - 1 elements.
    let mut f = raw_header(3, 12, 2, true);
    put_uvarint(&mut f, u32::MAX);
    assert_refused(
        &broker,
        &with_size_prefix(&f),
        "Metadata v12 with 2^32-2 topics",
    );
    // Produce v9: topic_data the same way.
    let mut f = raw_header(0, 9, 3, true);
    f.put_u8(0); // transactional_id: null
    f.put_i16(1);
    f.put_i32(1000);
    put_uvarint(&mut f, u32::MAX);
    assert_refused(
        &broker,
        &with_size_prefix(&f),
        "Produce v9 with 2^32-2 topics",
    );
    // Produce v7: INT32 array of topics, one topic claiming 2^31-1 partitions.
    let mut f = raw_header(0, 7, 4, false);
    f.put_i16(-1);
    f.put_i16(1);
    f.put_i32(1000);
    f.put_i32(1);
    f.put_i16(1);
    f.put_slice(b"t");
    f.put_i32(i32::MAX);
    assert_refused(
        &broker,
        &with_size_prefix(&f),
        "Produce v7 with 2^31-1 partitions",
    );
    let hwm_after = broker.status_kib("VmHWM");
    assert!(
        hwm_after < hwm_before + 64 * 1024,
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB decoding a bogus array length"
    );
    finish(broker);
}

#[test]
fn clients_that_connect_and_send_nothing_or_half_a_prefix_then_vanish_are_harmless() {
    let mut broker = Broker::start(&[]);
    for _ in 0..20 {
        drop(broker.raw());
    }
    for _ in 0..5 {
        let mut s = broker.raw();
        write_best_effort(&mut s, &[0, 0]);
        drop(s);
    }
    // A crowd of idle connections held open while a real client works.
    let idle: Vec<_> = (0..100).map(|_| broker.raw()).collect();
    broker.assert_serves_a_well_behaved_client();
    drop(idle);
    finish(broker);
}

/// Fills a partition with roughly `mib` MiB in batches of 64 records of 1000 bytes.
fn fill(c: &mut Client, topic: &str, mib: usize) -> i64 {
    let batches = mib * 16;
    for i in 0..batches {
        c.produce_ok(
            topic,
            0,
            batch_of_values(&values(&format!("fill{i}"), 64, 1000), now_ms()),
        );
    }
    c.latest(topic, 0)
}

#[test]
fn a_slow_client_pipelining_fetches_it_never_reads_does_not_stall_other_clients() {
    let mut broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("wide", 1, 1, &[]), code::NONE);
    let end = fill(&mut c, "wide", 1);
    let hwm_before = broker.status_kib("VmHWM");

    // 50 fetches of up to 1 MiB each, about 50 MiB of answers, never read (yet).
    let mut slow = broker.client();
    let req: FetchRequest = Client::fetch_request("wide", 0, 0, 0, 0, 1 << 20);
    let ids: Vec<i32> = (0..50).map(|_| slow.send(FETCH_V, &req)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    broker.assert_serves_a_well_behaved_client();
    let base = c.produce_ok(
        "wide",
        0,
        batch_of_values(&values("after", 3, 10), now_ms()),
    );
    assert_eq!(base, end);
    let f = c.fetch("wide", 0, base, 1 << 20);
    assert_eq!(decode_records(f.records).len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "other clients were stalled: {:?}",
        started.elapsed()
    );
    let hwm_mid = broker.status_kib("VmHWM");
    assert!(
        hwm_mid < hwm_before + 64 * 1024,
        "peak RSS grew from {hwm_before} KiB to {hwm_mid} KiB: responses to a non-reading client are buffered"
    );

    // The slow client finally reads: every answer arrives whole, in order.
    for id in ids {
        let resp = slow.recv::<FetchRequest>(FETCH_V, id);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, code::NONE);
        let records = decode_records(p.records.clone().unwrap_or_default());
        assert!(!records.is_empty(), "fetch {id} returned records");
        assert_eq!(records[0].offset, 0);
    }
    // And its connection still reads requests after all that sendfile back-pressure.
    assert_eq!(slow.api_versions(3).error_code, code::NONE);
    finish(broker);
}

#[test]
fn shutdown_is_not_held_hostage_by_a_client_that_never_reads() {
    let mut broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("wide", 1, 1, &[]), code::NONE);
    fill(&mut c, "wide", 1);
    let mut slow = broker.client();
    let req = Client::fetch_request("wide", 0, 0, 0, 0, 1 << 20);
    for _ in 0..50 {
        slow.send(FETCH_V, &req);
    }
    std::thread::sleep(Duration::from_millis(300));
    broker.assert_serves_a_well_behaved_client();
    broker.stop_cleanly();
    drop(slow);
}

#[test]
fn a_reader_that_stops_mid_response_and_vanishes_leaves_the_broker_healthy() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("wide", 1, 1, &[]), code::NONE);
    fill(&mut c, "wide", 1);
    for _ in 0..3 {
        let mut slow = broker.client();
        let req = Client::fetch_request("wide", 0, 0, 0, 0, 1 << 20);
        for _ in 0..20 {
            slow.send(FETCH_V, &req);
        }
        let mut buf = [0u8; 4096];
        slow.stream.read_exact(&mut buf).unwrap();
        drop(slow); // reset with unread data: the broker's sendfile hits EPIPE/ECONNRESET
    }
    std::thread::sleep(Duration::from_millis(200));
    finish(broker);
}

/// Rewrites a batch header field and fixes the CRC, so only the field is wrong.
fn patch_header_i32(batch: &Bytes, at: usize, value: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[at..at + 4].copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn a_batch_whose_last_offset_delta_disagrees_with_its_record_count_is_corrupt_message() {
    // Kafka's LogValidator refuses a v2 batch unless records_count ==
    // last_offset_delta + 1; otherwise the offsets assigned to the batch and
    // the offsets its records decode to disagree, and the next batch's
    // offsets overlap this one's records.
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("deltas", 1, 1, &[]), code::NONE);
    let good = batch_of_values(&values("d", 5, 20), now_ms());
    let last_offset_delta_at = 23;
    for delta in [0, 2, 3] {
        let bad = patch_header_i32(&good, last_offset_delta_at, delta);
        let p = c.produce("deltas", 0, -1, bad);
        assert_eq!(
            p.error_code,
            code::CORRUPT_MESSAGE,
            "5 records with last_offset_delta {delta}"
        );
        assert_eq!(
            c.latest("deltas", 0),
            0,
            "nothing stored for last_offset_delta {delta}"
        );
    }
    finish(broker);
}

#[test]
fn a_batch_claiming_two_billion_records_it_does_not_hold_is_refused_and_cannot_crash_the_broker() {
    // One record of 5000 bytes whose header claims i32::MAX records (with a
    // consistent last_offset_delta and a valid CRC). Kafka decodes the records
    // and answers CORRUPT_MESSAGE. Accepting it hands out 2^31-1 offsets per
    // batch, and a few of them push a segment's relative offsets past u32.
    let mut broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("liar", 1, 1, &[]), code::NONE);
    let honest = batch_of_values(&values("liar", 1, 5000), now_ms());
    let liar = patch_header_i32(&patch_header_i32(&honest, 57, i32::MAX), 23, i32::MAX - 1);
    let mut codes = Vec::new();
    for _ in 0..4 {
        match c.try_produce("liar", 0, -1, liar.clone()) {
            Ok(p) => codes.push(p.error_code),
            Err(e) => {
                broker.assert_alive();
                panic!("connection lost after {codes:?}: {e}");
            }
        }
    }
    broker.assert_alive();
    assert_eq!(
        codes,
        vec![code::CORRUPT_MESSAGE; 4],
        "batches claiming records they do not hold"
    );
    assert_eq!(c.latest("liar", 0), 0, "nothing stored");
    finish(broker);
}

#[test]
fn requests_pipelined_behind_a_malformed_one_are_not_executed() {
    // The broker closes the connection over the malformed request; a
    // produce the client pipelined behind it is never answered, so it must
    // not be applied either (the client will retry it: a duplicate).
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("behind", 1, 1, &[]), code::NONE);
    let mut malformed = raw_header(3, 1, 1, false);
    malformed.put_i32(5); // five topics, none present
    let produce = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(topic_name("behind"))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch_of_values(&values("behind", 2, 10), now_ms()))),
                ]),
        ]);
    let mut bytes = with_size_prefix(&malformed);
    bytes.extend(Client::frame(PRODUCE_V, 2, &produce));
    let mut s = broker.raw();
    s.write_all(&bytes).unwrap();
    assert!(
        closed_by_peer(&mut s),
        "malformed Metadata closes the connection without an answer"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.latest("behind", 0),
        0,
        "the unanswered produce behind the malformed request was applied"
    );
    finish(broker);
}
