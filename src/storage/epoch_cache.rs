//! The leader epoch cache of one partition, Kafka's `leader-epoch-checkpoint`:
//! for every leader epoch that wrote to the log, the first offset it wrote.
//! A follower asks the leader where its last epoch ended (OffsetsForLeaderEpoch)
//! and truncates its log there, so divergent tails from an old leader go away.
//! Pure data: the owning `PartitionLog` decides when it is persisted.

/// Entries kept (a bound on a file read at startup; Kafka has no limit, but a
/// partition that changed leader this many times has bigger problems).
pub const EPOCH_ENTRIES_MAX: usize = 100_000;

/// (leader epoch, start offset), both strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// Parses the Kafka checkpoint text: "0\n<count>\n<epoch> <offset>\n...".
    /// `None` if the text is malformed or the entries are not increasing.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        if count > EPOCH_ENTRIES_MAX {
            return None;
        }
        let mut cache = Self::default();
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let start: i64 = parts.next()?.parse().ok()?;
            if let Some(&(e, s)) = cache.entries.last() {
                if epoch <= e || start < s {
                    return None;
                }
            }
            cache.entries.push((epoch, start));
        }
        Some(cache)
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            out.push_str(&format!("{epoch} {start}\n"));
        }
        out
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    pub fn entries(&self) -> Vec<(i32, i64)> {
        self.entries.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that `epoch` starts writing at `start`. Ignored (returns
    /// false) unless `epoch` is newer than every cached one. As in Kafka, an
    /// older entry starting at or after `start` wrote nothing and is dropped.
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        self.entries.retain(|&(_, s)| s < start);
        if self.entries.len() >= EPOCH_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((epoch, start));
        true
    }

    /// Drops entries starting at or after `end` (the log was truncated
    /// there). Returns whether anything was dropped.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        self.entries.len() != before
    }

    /// Drops entries starting after `end` (recovery cut the log shorter than
    /// the cache); an entry starting exactly at the end is an epoch that was
    /// assigned but has not written yet, and stays.
    pub fn truncate_past(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s <= end);
        self.entries.len() != before
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// OffsetsForLeaderEpoch: the largest cached epoch at or below `epoch`
    /// and where it ended (the next cached epoch's start, or `log_end` for
    /// the latest). (-1, -1) when no cached epoch is at or below `epoch`.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        (found, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_in_kafka_format() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(0, 0));
        assert!(c.assign(3, 100));
        assert_eq!(c.to_text(), "0\n2\n0 0\n3 100\n");
        assert_eq!(LeaderEpochCache::from_text(&c.to_text()), Some(c));
        assert_eq!(LeaderEpochCache::from_text("0\n2\n0 0\n"), None);
        assert_eq!(LeaderEpochCache::from_text("0\n2\n3 0\n1 5\n"), None);
        assert_eq!(LeaderEpochCache::from_text("1\n0\n"), None);
    }

    #[test]
    fn assign_ignores_old_epochs_and_replaces_entries_that_wrote_nothing() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(1, 10));
        assert!(!c.assign(1, 20));
        assert!(!c.assign(0, 20));
        assert!(c.assign(2, 10));
        assert_eq!(c.entries(), vec![(2, 10)]);
    }

    #[test]
    fn end_offset_is_the_next_epochs_start_or_the_log_end() {
        let mut c = LeaderEpochCache::default();
        assert_eq!(c.end_offset_for(0, 5), (-1, -1));
        c.assign(1, 0);
        c.assign(3, 10);
        c.assign(7, 25);
        assert_eq!(c.end_offset_for(0, 40), (-1, -1));
        assert_eq!(c.end_offset_for(1, 40), (1, 10));
        assert_eq!(c.end_offset_for(2, 40), (1, 10));
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(6, 40), (3, 25));
        assert_eq!(c.end_offset_for(7, 40), (7, 40));
        assert_eq!(c.end_offset_for(9, 40), (7, 40));
    }

    #[test]
    fn truncation_drops_entries_at_or_past_the_new_end() {
        let mut c = LeaderEpochCache::default();
        c.assign(1, 0);
        c.assign(2, 10);
        assert!(!c.truncate_past(10));
        assert!(c.truncate_from_end(10));
        assert_eq!(c.entries(), vec![(1, 0)]);
    }
}
