//! Idempotent-producer state of one partition: per producer id, its epoch
//! and the sequence ranges and offsets of its last five batches, so a retried
//! batch is acknowledged with its first offsets instead of being appended
//! twice, and a gap or a stale epoch is refused. Rebuilt from batch headers
//! on startup, from a snapshot when one is current.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka keeps five, matching
/// `max.in.flight.requests.per.connection` <= 5 for idempotence).
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;

pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SeqCheck {
    Append,
    Duplicate { base_offset: i64, last_offset: i64 },
    Refuse(i16),
}

/// The sequence after `seq`, wrapping at i32::MAX as Kafka does.
pub fn next_seq(seq: i32, by: i32) -> i32 {
    ((i64::from(seq) + i64::from(by)) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Clone, Debug, Default)]
pub struct ProducerStates {
    map: HashMap<i64, Entry>,
}

impl ProducerStates {
    pub fn check(&self, pid: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SeqCheck {
        let Some(e) = self.map.get(&pid) else {
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        };
        if epoch < e.epoch {
            return SeqCheck::Refuse(INVALID_PRODUCER_EPOCH);
        }
        if epoch > e.epoch {
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SeqCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            };
        }
        match e.batches.back() {
            Some(last) if next_seq(last.last_seq, 1) == first_seq => SeqCheck::Append,
            None if first_seq == 0 => SeqCheck::Append,
            _ => SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER),
        }
    }

    pub fn record(&mut self, pid: i64, epoch: i16, b: BatchSeq) {
        let e = self.map.entry(pid).or_default();
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back(b);
        while e.batches.len() > BATCHES_PER_PRODUCER_MAX {
            e.batches.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Text snapshot: first line the offset it covers up to, then one line
    /// per remembered batch: `pid epoch first_seq last_seq base last`.
    pub fn to_text(&self, covers_to: i64) -> String {
        let mut out = format!("{covers_to}\n");
        let mut pids: Vec<_> = self.map.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.map[&pid];
            for b in &e.batches {
                out.push_str(&format!(
                    "{pid} {} {} {} {} {}\n",
                    e.epoch, b.first_seq, b.last_seq, b.base_offset, b.last_offset
                ));
            }
        }
        out
    }

    pub fn from_text(text: &str) -> Option<(i64, Self)> {
        let mut lines = text.lines();
        let covers_to = lines.next()?.trim().parse().ok()?;
        let mut s = Self::default();
        for line in lines {
            let f: Vec<i64> = line
                .split(' ')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            if f.len() != 6 {
                return None;
            }
            s.record(
                f[0],
                f[1] as i16,
                BatchSeq {
                    first_seq: f[2] as i32,
                    last_seq: f[3] as i32,
                    base_offset: f[4],
                    last_offset: f[5],
                },
            );
        }
        Some((covers_to, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, base: i64) -> BatchSeq {
        BatchSeq {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + i64::from(last - first),
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), SeqCheck::Append);
        s.record(7, 0, b(0, 4, 100));
        assert_eq!(s.check(7, 0, 5, 9), SeqCheck::Append);
        s.record(7, 0, b(5, 9, 105));
        assert_eq!(
            s.check(7, 0, 0, 4),
            SeqCheck::Duplicate {
                base_offset: 100,
                last_offset: 104
            }
        );
        assert_eq!(
            s.check(7, 0, 12, 14),
            SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    #[test]
    fn epochs_fence_and_reset_sequences() {
        let mut s = ProducerStates::default();
        s.record(7, 3, b(0, 0, 1));
        assert_eq!(
            s.check(7, 2, 1, 1),
            SeqCheck::Refuse(INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(s.check(7, 4, 0, 0), SeqCheck::Append);
        assert_eq!(
            s.check(7, 4, 5, 5),
            SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            s.check(8, 0, 3, 3),
            SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    #[test]
    fn only_five_batches_are_remembered_and_snapshots_round_trip() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(1, 0, b(i, i, i64::from(i)));
        }
        assert_eq!(
            s.check(1, 0, 0, 0),
            SeqCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            s.check(1, 0, 6, 6),
            SeqCheck::Duplicate {
                base_offset: 6,
                last_offset: 6
            }
        );
        let (to, back) = ProducerStates::from_text(&s.to_text(42)).unwrap();
        assert_eq!(to, 42);
        assert_eq!(back.check(1, 0, 7, 7), SeqCheck::Append);
        assert_eq!(next_seq(i32::MAX, 1), 0);
    }
}
