//! Storage through the broker binary: crash recovery of damaged segment
//! files (torn tail, flipped byte, cut mid-batch), rolling, retention by
//! size and by time, timestamp lookup, and long-poll fetches woken by appends.
//! Damage is done to the files while the broker is SIGKILLed, as a crash would
//! leave them.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const TOPIC: &str = "events";
const BATCHES: usize = 10;
const PER_BATCH: usize = 5;

/// Creates TOPIC (1 partition) and produces BATCHES batches with acks=-1;
/// returns every value in offset order.
fn produce_acked(c: &mut Client, configs: &[(&str, &str)]) -> Vec<Vec<u8>> {
    assert_eq!(c.create_topic(TOPIC, 1, 1, configs), code::NONE);
    let mut all = Vec::new();
    for b in 0..BATCHES {
        let vals = values(&format!("b{b}"), PER_BATCH, 40);
        let base = c.produce_ok(TOPIC, 0, batch_of_values(&vals, now_ms()));
        assert_eq!(base, all.len() as i64, "acked at the next offset");
        all.extend(vals);
    }
    all
}

fn value_strings(records: &[kafka_protocol::records::Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| r.value.clone().expect("value").to_vec())
        .collect()
}

fn active_log(broker: &Broker) -> PathBuf {
    broker.log_files(TOPIC, 0).pop().expect("a .log file")
}

/// After recovery: the log holds exactly `expect`, its end is right, and a new
/// produce lands at the next offset and reads back.
fn assert_log_is(broker: &Broker, expect: &[Vec<u8>]) {
    let mut c = broker.client();
    assert_eq!(
        c.latest(TOPIC, 0),
        expect.len() as i64,
        "log end offset after recovery"
    );
    let got = c.fetch_all(TOPIC, 0, 0, expect.len());
    assert_eq!(value_strings(&got), expect, "recovered records");
    let f = c.fetch(TOPIC, 0, expect.len() as i64, 1 << 20);
    assert_eq!(
        (f.error_code, f.records.len()),
        (code::NONE, 0),
        "nothing past the recovered end"
    );
    let next = values("after-recovery", 3, 40);
    let base = c.produce_ok(TOPIC, 0, batch_of_values(&next, now_ms()));
    assert_eq!(
        base,
        expect.len() as i64,
        "new produces continue at the recovered end"
    );
    let got = c.fetch_all(TOPIC, 0, base, 3);
    assert_eq!(value_strings(&got), next);
}

fn append_to(path: &PathBuf, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn acked_records_survive_sigkill_and_a_torn_tail_is_cut_to_the_valid_length() {
    let mut broker = Broker::start(&[]);
    let all = produce_acked(&mut broker.client(), &[]);
    broker.kill9();
    let log = active_log(&broker);
    let valid_len = fs::metadata(&log).unwrap().len();
    let batches = batches_in_file(&log);
    assert_eq!(batches.len(), BATCHES);
    assert_eq!(
        batches.last().map(|b| b.0 + b.1),
        Some(valid_len),
        "file is exactly the acked batches"
    );
    // A torn write: the start of a header (right magic, absurd length) and garbage.
    let mut tail = vec![0u8; 8];
    tail.extend_from_slice(&10_000i32.to_be_bytes());
    tail.extend_from_slice(&[0, 0, 0, 0, 2]);
    tail.extend(std::iter::repeat_n(0xAB, 300));
    append_to(&log, &tail);
    broker.restart();
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        valid_len,
        "garbage cut: file length is the valid length"
    );
    assert_log_is(&broker, &all);
    broker.stop_cleanly();
}

#[test]
fn a_flipped_byte_in_the_last_batch_truncates_from_that_batch_and_keeps_earlier_ones() {
    let mut broker = Broker::start(&[]);
    let all = produce_acked(&mut broker.client(), &[]);
    broker.kill9();
    let log = active_log(&broker);
    let (pos, len, base, _) = *batches_in_file(&log).last().unwrap();
    assert_eq!(base, ((BATCHES - 1) * PER_BATCH) as i64);
    let mut bytes = fs::read(&log).unwrap();
    bytes[(pos + len / 2) as usize] ^= 0x01;
    fs::write(&log, &bytes).unwrap();
    broker.restart();
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        pos,
        "cut at the start of the corrupt batch"
    );
    assert_log_is(&broker, &all[..base as usize]);
    broker.stop_cleanly();
}

#[test]
fn a_flipped_byte_in_a_middle_batch_drops_it_and_everything_after() {
    let mut broker = Broker::start(&[]);
    let all = produce_acked(&mut broker.client(), &[]);
    broker.kill9();
    let log = active_log(&broker);
    let (pos, len, base, _) = batches_in_file(&log)[4];
    let mut bytes = fs::read(&log).unwrap();
    bytes[(pos + len - 3) as usize] ^= 0x80;
    fs::write(&log, &bytes).unwrap();
    broker.restart();
    assert_eq!(fs::metadata(&log).unwrap().len(), pos);
    assert_log_is(&broker, &all[..base as usize]);
}

#[test]
fn a_log_cut_mid_batch_recovers_to_the_last_whole_batch() {
    let mut broker = Broker::start(&[]);
    let mut all = produce_acked(&mut broker.client(), &[]);
    broker.kill9();
    // Cut inside the last batch's records.
    let log = active_log(&broker);
    let (pos, len, base, _) = *batches_in_file(&log).last().unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(pos + len / 2)
        .unwrap();
    broker.restart();
    assert_eq!(fs::metadata(&log).unwrap().len(), pos);
    all.truncate(base as usize);
    assert_log_is(&broker, &all);
    all.extend(values("after-recovery", 3, 40));

    // Again, cut inside the next last batch's 61-byte header.
    broker.kill9();
    let (pos, _, base, _) = *batches_in_file(&log).last().unwrap();
    assert_eq!(base, (all.len() - 3) as i64);
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(pos + 30)
        .unwrap();
    broker.restart();
    assert_eq!(fs::metadata(&log).unwrap().len(), pos);
    all.truncate(base as usize);
    assert_log_is(&broker, &all);
    broker.stop_cleanly();
}

#[test]
fn recovery_after_a_clean_restart_then_a_crash_still_cuts_a_torn_tail() {
    // The clean stop moves the recovery point to the end; the crash after
    // more appends must still have the active segment's tail checked.
    let mut broker = Broker::start(&[]);
    let mut all = produce_acked(&mut broker.client(), &[]);
    broker.stop_cleanly();
    broker.restart();
    let more = values("second-life", 4, 40);
    broker
        .client()
        .produce_ok(TOPIC, 0, batch_of_values(&more, now_ms()));
    all.extend(more);
    broker.kill9();
    let log = active_log(&broker);
    let valid_len = fs::metadata(&log).unwrap().len();
    append_to(&log, &[0x5A; 200]);
    broker.restart();
    assert_eq!(fs::metadata(&log).unwrap().len(), valid_len);
    assert_log_is(&broker, &all);
    broker.stop_cleanly();
}

/// Produces `batches` batches of `per_batch` records of ~100 bytes; returns all values.
fn produce_many(
    c: &mut Client,
    topic: &str,
    batches: usize,
    per_batch: usize,
    ts: impl Fn(usize) -> i64,
) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for b in 0..batches {
        let vals = values(&format!("{topic}-b{b}"), per_batch, 100);
        c.produce_ok(topic, 0, batch_of_values(&vals, ts(b)));
        all.extend(vals);
    }
    all
}

#[test]
fn segments_roll_by_size_and_fetch_crosses_their_boundaries_before_and_after_restarts() {
    let mut broker = Broker::start(&["log.segment.bytes=4096"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1, 1, &[]), code::NONE);
    let all = produce_many(&mut c, TOPIC, 30, 8, |_| now_ms());
    let files = broker.log_files(TOPIC, 0);
    assert!(
        files.len() >= 5,
        "expected several segments, got {}",
        files.len()
    );
    let mut next_base = 0;
    for f in &files {
        assert!(
            fs::metadata(f).unwrap().len() <= 4096,
            "{} exceeds segment.bytes",
            f.display()
        );
        let name = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            name.parse::<i64>().unwrap(),
            next_base,
            "segment named by its base offset"
        );
        let batches = batches_in_file(f);
        assert_eq!(batches[0].2, next_base);
        next_base = batches.last().unwrap().3 + 1;
    }
    assert_eq!(next_base, all.len() as i64);
    assert_eq!(value_strings(&c.fetch_all(TOPIC, 0, 0, all.len())), all);
    // One big fetch returns at most one segment, never bytes from past its end.
    let f = c.fetch(TOPIC, 0, 0, 1 << 20);
    let first = decode_records(f.records);
    assert!(!first.is_empty() && first.len() < all.len());

    // Clean restart: sealed segments reopen from their indexes.
    broker.stop_cleanly();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(value_strings(&c.fetch_all(TOPIC, 0, 0, all.len())), all);
    let mid = all.len() as i64 / 2;
    assert_eq!(
        c.fetch_all(TOPIC, 0, mid, 1)[0].offset,
        mid,
        "fetch from the middle of a segment"
    );

    // Crash: every segment is rescanned.
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(value_strings(&c.fetch_all(TOPIC, 0, 0, all.len())), all);
    assert_eq!(
        c.produce_ok(TOPIC, 0, batch_of_values(&values("x", 1, 10), now_ms())),
        all.len() as i64
    );
    broker.stop_cleanly();
}

#[test]
fn a_torn_tail_in_the_active_segment_keeps_every_sealed_segment() {
    let mut broker = Broker::start(&["log.segment.bytes=4096"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1, 1, &[]), code::NONE);
    let all = produce_many(&mut c, TOPIC, 20, 8, |_| now_ms());
    let before = broker.log_files(TOPIC, 0);
    assert!(before.len() >= 3);
    broker.kill9();
    let active = before.last().unwrap().clone();
    let valid_len = fs::metadata(&active).unwrap().len();
    append_to(&active, &[0xFF; 100]);
    broker.restart();
    assert_eq!(broker.log_files(TOPIC, 0), before, "no segment lost");
    assert_eq!(fs::metadata(&active).unwrap().len(), valid_len);
    assert_log_is(&broker, &all);
    broker.stop_cleanly();
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_and_moves_log_start() {
    let mut broker = Broker::start(&["log.retention.check.interval.ms=200"]);
    let mut c = broker.client();
    let configs = [("segment.bytes", "4096"), ("retention.bytes", "8192")];
    assert_eq!(c.create_topic(TOPIC, 1, 1, &configs), code::NONE);
    let all = produce_many(&mut c, TOPIC, 40, 8, |_| now_ms());
    let end = all.len() as i64;
    wait_until("retention by size", Duration::from_secs(10), || {
        let total: u64 = broker
            .log_files(TOPIC, 0)
            .iter()
            .map(|f| fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        total <= 8192 + 4096
    });
    let files = broker.log_files(TOPIC, 0);
    let first_base: i64 = files[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_base > 0, "the oldest segments are gone");
    let earliest = c.earliest(TOPIC, 0);
    assert_eq!(
        earliest, first_base,
        "ListOffsets earliest is the first remaining segment's base"
    );
    assert_eq!(c.latest(TOPIC, 0), end, "retention never touches the end");
    let f = c.fetch(TOPIC, 0, 0, 1 << 20);
    assert_eq!(
        f.error_code,
        code::OFFSET_OUT_OF_RANGE,
        "fetch below log start"
    );
    let f = c.fetch(TOPIC, 0, earliest - 1, 1 << 20);
    assert_eq!(
        f.error_code,
        code::OFFSET_OUT_OF_RANGE,
        "fetch just below log start"
    );
    let kept = c.fetch_all(TOPIC, 0, earliest, (end - earliest) as usize);
    assert_eq!(value_strings(&kept), all[earliest as usize..]);
    let f = c.fetch(TOPIC, 0, earliest, 1 << 20);
    assert_eq!(
        f.log_start_offset, earliest,
        "fetch reports the new log start"
    );
    // The new log start survives a crash.
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(c.earliest(TOPIC, 0), earliest, "log start after restart");
    assert_eq!(c.latest(TOPIC, 0), end);
    assert_eq!(
        c.fetch(TOPIC, 0, 0, 1 << 20).error_code,
        code::OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        value_strings(&c.fetch_all(TOPIC, 0, earliest, (end - earliest) as usize)),
        all[earliest as usize..]
    );
}

#[test]
fn retention_by_time_deletes_segments_whose_records_are_older_than_retention_ms() {
    let broker = Broker::start(&["log.retention.check.interval.ms=200"]);
    let mut c = broker.client();
    let configs = [("segment.bytes", "4096"), ("retention.ms", "60000")];
    assert_eq!(c.create_topic(TOPIC, 1, 1, &configs), code::NONE);
    // Batches sized so exactly two fit a segment: old batches fill whole
    // segments and the first recent one starts a new segment.
    let per = 14;
    let probe = batch_of_values(&values("probe", per, 100), 0);
    let b = probe.len() as u64;
    assert!(
        2 * b <= 4096 && 3 * b > 4096,
        "batch of {b} bytes does not pack two per segment"
    );
    let old_ts = now_ms() - 10 * 60 * 1000;
    let old = produce_many(&mut c, TOPIC, 6, per, |i| old_ts + i as i64);
    let first_recent = old.len() as i64;
    let recent_vals: Vec<Vec<u8>> = (0..5)
        .flat_map(|b| {
            let vals = values(&format!("recent{b}"), per, 100);
            c.produce_ok(TOPIC, 0, batch_of_values(&vals, now_ms()));
            vals
        })
        .collect();
    let end = first_recent + recent_vals.len() as i64;
    wait_until("retention by time", Duration::from_secs(10), || {
        c.earliest(TOPIC, 0) > 0
    });
    wait_until("all old segments deleted", Duration::from_secs(5), || {
        c.earliest(TOPIC, 0) == first_recent
    });
    let files = broker.log_files(TOPIC, 0);
    let first_base: i64 = files[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        first_base, first_recent,
        "only segments holding old records were deleted"
    );
    assert_eq!(
        c.fetch(TOPIC, 0, 0, 1 << 20).error_code,
        code::OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        c.fetch(TOPIC, 0, first_recent - 1, 1 << 20).error_code,
        code::OFFSET_OUT_OF_RANGE
    );
    let kept = c.fetch_all(TOPIC, 0, first_recent, recent_vals.len());
    assert_eq!(value_strings(&kept), recent_vals, "recent records are kept");
    assert_eq!(c.latest(TOPIC, 0), end);
}

#[test]
fn list_offsets_by_timestamp_returns_the_first_record_at_or_after_it() {
    let mut broker = Broker::start(&["log.segment.bytes=4096"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1, 1, &[]), code::NONE);
    // Batch i, record j is stamped T + 1000*i + 10*j; batches of 8 records of ~100 bytes
    // span several segments.
    let t = 1_700_000_000_000i64;
    let per = 8usize;
    for i in 0..12usize {
        let vals = values(&format!("ts{i}"), per, 100);
        c.produce_ok(
            TOPIC,
            0,
            batch_with(&vals, |j| t + 1000 * i as i64 + 10 * j as i64),
        );
    }
    assert!(broker.log_files(TOPIC, 0).len() >= 3);
    let at = |i: i64, j: i64| (i * per as i64 + j, t + 1000 * i + 10 * j);
    let cases = [
        (0, at(0, 0)),
        (t, at(0, 0)),
        (t + 1, at(0, 1)),
        (t + 15, at(0, 2)),
        (t + 2 * 1000 + 25, at(2, 3)),
        (t + 3000, at(3, 0)),
        (t + 3071, at(4, 0)),
        (t + 7 * 1000 + 70, at(7, 7)),
        (t + 11 * 1000 + 70, at(11, 7)),
    ];
    let check = |c: &mut Client, when: &str| {
        for (target, (offset, ts)) in cases {
            let l = c.list_offset(TOPIC, 0, target);
            assert_eq!(
                l,
                Listed {
                    error_code: code::NONE,
                    offset,
                    timestamp: ts
                },
                "target {target} {when}"
            );
        }
        let l = c.list_offset(TOPIC, 0, t + 11 * 1000 + 71);
        assert_eq!(
            (l.error_code, l.offset, l.timestamp),
            (code::NONE, -1, -1),
            "past the newest record {when}"
        );
    };
    check(&mut c, "while running");
    // Sealed segments' time indexes are reloaded from disk after a clean stop...
    broker.stop_cleanly();
    broker.restart();
    check(&mut broker.client(), "after a clean restart");
    // ...and rebuilt by the recovery scan after a crash.
    broker.kill9();
    broker.restart();
    check(&mut broker.client(), "after a crash");
}

#[test]
fn a_long_poll_fetch_on_an_empty_partition_returns_soon_after_another_connection_produces() {
    let broker = Broker::start_with(2, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 2, 1, &[]), code::NONE);
    for partition in 0..2 {
        let mut fetcher = broker.client();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            let f = fetcher.fetch_with(TOPIC, partition, 0, 2000, 1, 1 << 20);
            (f, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let vals = values("wake", 2, 10);
        let p = c.produce(TOPIC, partition, 1, batch_of_values(&vals, now_ms()));
        assert_eq!(p.error_code, code::NONE);
        let (f, elapsed) = waiter.join().unwrap();
        assert_eq!(f.error_code, code::NONE);
        assert_eq!(
            value_strings(&decode_records(f.records)),
            vals,
            "partition {partition}"
        );
        assert!(
            elapsed >= Duration::from_millis(250),
            "returned before anything was produced: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(1500),
            "long poll not woken by the append: {elapsed:?}"
        );
    }
    // With nothing produced, the same fetch waits out max_wait_ms and returns empty.
    let started = Instant::now();
    let f = c.fetch_with(TOPIC, 0, 2, 500, 1, 1 << 20);
    assert_eq!((f.error_code, f.records.len()), (code::NONE, 0));
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "max_wait_ms honoured: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_long_poll_waiting_for_more_bytes_than_exist_does_not_stall_other_clients_on_its_shard() {
    // One shard, so the fetch, its partition and the other client share it.
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1, 1, &[]), code::NONE);
    c.produce_ok(TOPIC, 0, batch_of_values(&values("some", 2, 50), now_ms()));
    let mut fetcher = broker.client();
    let started = Instant::now();
    // Data exists at offset 0, but fewer than min_bytes: the fetch must wait.
    let waiter = std::thread::spawn(move || {
        let f = fetcher.fetch_with(TOPIC, 0, 0, 3000, 1 << 20, 4 << 20);
        (f, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let av = broker.client().api_versions(API_VERSIONS_V);
    let answered_in = asked.elapsed();
    assert_eq!(av.error_code, code::NONE);
    let (f, fetch_took) = waiter.join().unwrap();
    assert_eq!(f.error_code, code::NONE);
    assert_eq!(
        decode_records(f.records).len(),
        2,
        "the waiting fetch returns what exists at max_wait_ms"
    );
    assert!(
        fetch_took >= Duration::from_millis(2500),
        "min_bytes not honoured: {fetch_took:?}"
    );
    assert!(
        answered_in < Duration::from_millis(1000),
        "ApiVersions on another connection took {answered_in:?} while a fetch waited for min_bytes"
    );
}
