//! Which shards an AnalysisJob runs, and the one map between the Job's numbering and the
//! fleet's.
//!
//! `spec.shardIndexes` (`"3,7,12-15"`) selects shards of a fleet by their original index,
//! so a resubmission runs exactly the shards that failed under their old numbers: output
//! file names, input lists and logs stay those of the first run. The Indexed Job that runs
//! them numbers its completions densely, `0..n`; [`ShardNumbering`] turns a completion
//! index into the shard's original index and back. The operator uses it for the pods
//! (`HEPBATCH_SHARD_INDEX`, the input list) and the status, the kubectl plugin for status,
//! logs and report, so every reader sees the original numbers.

use std::fmt;
use std::str::FromStr;

use crate::analysis_job::MAX_SHARDS;

/// Longest `spec.shardIndexes` the API accepts, in characters: as long as the index
/// ranges the status carries, so a resubmission of the failed shards of any fleet fits.
pub const MAX_SHARD_INDEXES_LEN: usize = 16 * 1024;

/// Why a shard selection is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardIndexesError {
    /// Nothing selected.
    #[error("spec.shardIndexes selects no shard; list indexes and ranges such as 3,7,12-15")]
    Empty,
    /// A part that is neither an index nor a range.
    #[error(
        "spec.shardIndexes: {part:?} is not a shard index or a range such as 12-15 \
         (indexes 0 to {})",
        MAX_SHARDS - 1
    )]
    Malformed {
        /// The part as written.
        part: String,
    },
    /// A range that ends before it starts.
    #[error("spec.shardIndexes: range {part} ends before it starts; write it as low-high")]
    Reversed {
        /// The range as written.
        part: String,
    },
    /// Parts out of order, or overlapping: each shard may run once.
    #[error(
        "spec.shardIndexes: {part} comes after {previous}; list indexes and ranges in \
         ascending order without overlaps, so each shard runs once"
    )]
    NotAscending {
        /// The part out of order.
        part: String,
        /// The highest index before it.
        previous: i32,
    },
    /// An index the fleet does not have.
    #[error(
        "spec.shardIndexes names shard {index}, but the fleet has {shards} shards \
         (indexes 0 to {})",
        shards - 1
    )]
    Beyond {
        /// The highest index selected.
        index: i32,
        /// Shards of the fleet.
        shards: i32,
    },
}

/// A consecutive run of selected shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// First original index.
    first: i32,
    /// Last original index.
    last: i32,
    /// Completion index of `first`: how many shards the earlier spans select.
    before: i32,
}

impl Span {
    fn len(self) -> i32 {
        self.last - self.first + 1
    }
}

/// A valid selection: ascending, disjoint runs of original shard indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIndexes {
    spans: Vec<Span>,
}

impl ShardIndexes {
    /// How many shards are selected: the Job's completions.
    pub fn len(&self) -> i32 {
        self.spans.last().map_or(0, |s| s.before + s.len())
    }

    /// Whether nothing is selected (never, for a parsed selection).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The highest original index selected.
    pub fn last(&self) -> i32 {
        self.spans.last().map_or(0, |s| s.last)
    }

    /// Whether original shard `index` is selected.
    pub fn contains(&self, index: i32) -> bool {
        self.completion(index).is_some()
    }

    /// The original index of completion index `completion`.
    pub fn original(&self, completion: i32) -> Option<i32> {
        let span = self.span_of_completion(completion)?;
        Some(span.first + (completion - span.before))
    }

    /// The completion index of original shard `index`, if it is selected.
    pub fn completion(&self, index: i32) -> Option<i32> {
        let at = self
            .spans
            .partition_point(|s| s.first <= index)
            .checked_sub(1)?;
        let span = self.spans[at];
        (index <= span.last).then(|| span.before + (index - span.first))
    }

    /// Checks that every selected shard exists in a fleet of `shards`.
    pub fn within(&self, shards: i32) -> Result<(), ShardIndexesError> {
        if self.last() < shards {
            Ok(())
        } else {
            Err(ShardIndexesError::Beyond {
                index: self.last(),
                shards,
            })
        }
    }

    /// The Job API's ranges of completion indexes (`"0-3,7"`) in original indexes, merged
    /// where they touch; malformed parts and indexes beyond the selection are skipped.
    pub fn renumber_ranges(&self, ranges: &str) -> String {
        let mut out = Ranges::default();
        for (first, last) in range_parts(ranges) {
            let mut completion = first.max(0);
            while completion <= last {
                let Some(span) = self.span_of_completion(completion) else {
                    break;
                };
                let end = (last - span.before).min(span.len() - 1);
                out.push(span.first + (completion - span.before), span.first + end);
                completion = span.before + end + 1;
            }
        }
        out.finish()
    }

    fn span_of_completion(&self, completion: i32) -> Option<Span> {
        let at = self
            .spans
            .partition_point(|s| s.before <= completion)
            .checked_sub(1)?;
        let span = self.spans[at];
        (completion >= 0 && completion - span.before < span.len()).then_some(span)
    }
}

impl FromStr for ShardIndexes {
    type Err = ShardIndexesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(ShardIndexesError::Empty);
        }
        let mut spans: Vec<Span> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let malformed = || ShardIndexesError::Malformed {
                part: part.to_owned(),
            };
            let index = |s: &str| {
                s.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|i| (0..MAX_SHARDS).contains(i))
                    .ok_or_else(malformed)
            };
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (index(a)?, index(b)?),
                None => (index(part)?, index(part)?),
            };
            if last < first {
                return Err(ShardIndexesError::Reversed {
                    part: part.to_owned(),
                });
            }
            match spans.last_mut() {
                Some(previous) if first <= previous.last => {
                    return Err(ShardIndexesError::NotAscending {
                        part: part.to_owned(),
                        previous: previous.last,
                    });
                }
                Some(previous) if first == previous.last + 1 => previous.last = last,
                previous => {
                    let before = previous.map_or(0, |s| s.before + s.len());
                    spans.push(Span {
                        first,
                        last,
                        before,
                    });
                }
            }
        }
        Ok(ShardIndexes { spans })
    }
}

impl fmt::Display for ShardIndexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Ranges::default();
        for span in &self.spans {
            out.push(span.first, span.last);
        }
        f.write_str(&out.finish())
    }
}

/// How an AnalysisJob's shards are numbered: every shard of the fleet, or a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardNumbering {
    /// Completion index = shard index.
    Every,
    /// `spec.shardIndexes`: completion index `k` runs the `k`-th selected shard.
    Selected(ShardIndexes),
}

impl ShardNumbering {
    /// The original index of completion index `completion`.
    pub fn original(&self, completion: i32) -> Option<i32> {
        match self {
            ShardNumbering::Every => Some(completion),
            ShardNumbering::Selected(selection) => selection.original(completion),
        }
    }

    /// The completion index that runs original shard `index`.
    pub fn completion(&self, index: i32) -> Option<i32> {
        match self {
            ShardNumbering::Every => Some(index),
            ShardNumbering::Selected(selection) => selection.completion(index),
        }
    }

    /// The Job API's completion ranges in original indexes.
    pub fn renumber_ranges(&self, ranges: String) -> String {
        match self {
            ShardNumbering::Every => ranges,
            ShardNumbering::Selected(selection) => selection.renumber_ranges(&ranges),
        }
    }

    /// The selection, if there is one.
    pub fn selection(&self) -> Option<&ShardIndexes> {
        match self {
            ShardNumbering::Every => None,
            ShardNumbering::Selected(selection) => Some(selection),
        }
    }
}

/// The `(first, last)` runs of the Job API's index-range text (`"0-3,7"`, also the
/// status's ranges); malformed runs (and the `…` of a cut status) are skipped.
pub fn range_parts(text: &str) -> impl Iterator<Item = (i32, i32)> + '_ {
    text.split(',').filter_map(|part| {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (first, last) = (a.trim().parse::<i32>().ok()?, b.trim().parse::<i32>().ok()?);
        (first <= last).then_some((first, last))
    })
}

/// Index-range text under construction, merging runs that touch.
#[derive(Default)]
struct Ranges {
    text: String,
    open: Option<(i32, i32)>,
}

impl Ranges {
    fn push(&mut self, first: i32, last: i32) {
        match &mut self.open {
            Some((_, end)) if first == *end + 1 => *end = last,
            _ => {
                self.close();
                self.open = Some((first, last));
            }
        }
    }

    fn close(&mut self) {
        if let Some((first, last)) = self.open.take() {
            if !self.text.is_empty() {
                self.text.push(',');
            }
            self.text.push_str(&piece(first, last));
        }
    }

    fn finish(mut self) -> String {
        self.close();
        self.text
    }
}

fn piece(first: i32, last: i32) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(text: &str) -> ShardIndexes {
        text.parse().expect("a valid selection")
    }

    #[test]
    fn completions_run_the_selected_shards_in_order() {
        let s = selection("3,7,12-15");
        assert_eq!(s.len(), 6);
        assert_eq!(s.last(), 15);
        let originals: Vec<_> = (0..7).map(|k| s.original(k)).collect();
        assert_eq!(
            originals,
            [
                Some(3),
                Some(7),
                Some(12),
                Some(13),
                Some(14),
                Some(15),
                None
            ]
        );
        for k in 0..6 {
            let original = s.original(k).expect("selected");
            assert_eq!(s.completion(original), Some(k));
        }
        assert_eq!(s.completion(4), None);
        assert_eq!(s.completion(16), None);
        assert_eq!(s.original(-1), None);
    }

    #[test]
    fn selections_are_written_merged() {
        assert_eq!(selection("3, 4,5-9,11").to_string(), "3-9,11");
        assert_eq!(selection("0").to_string(), "0");
        assert_eq!(selection("99999").len(), 1);
    }

    #[test]
    fn bad_selections_say_what_is_wrong() {
        let error = |text: &str| text.parse::<ShardIndexes>().expect_err(text);
        assert_eq!(error(" "), ShardIndexesError::Empty);
        assert!(matches!(error("3,,4"), ShardIndexesError::Malformed { part } if part.is_empty()));
        assert!(matches!(error("3,x"), ShardIndexesError::Malformed { part } if part == "x"));
        assert!(matches!(
            error("100000"),
            ShardIndexesError::Malformed { .. }
        ));
        assert!(matches!(error("-1"), ShardIndexesError::Malformed { .. }));
        assert!(matches!(error("3,…"), ShardIndexesError::Malformed { .. }));
        assert!(matches!(error("15-12"), ShardIndexesError::Reversed { .. }));
        assert_eq!(
            error("3,7,5"),
            ShardIndexesError::NotAscending {
                part: "5".to_owned(),
                previous: 7
            }
        );
        assert!(matches!(
            error("1-5,4-6"),
            ShardIndexesError::NotAscending { .. }
        ));
        assert!(error("3,3").to_string().contains("each shard runs once"));
        let beyond = selection("3,12").within(10).expect_err("12 of 10");
        assert_eq!(
            beyond.to_string(),
            "spec.shardIndexes names shard 12, but the fleet has 10 shards (indexes 0 to 9)"
        );
        assert_eq!(selection("3,9").within(10), Ok(()));
    }

    #[test]
    fn job_ranges_read_in_original_indexes() {
        let s = selection("3,7,12-15,20");
        assert_eq!(s.renumber_ranges("0-1"), "3,7");
        assert_eq!(s.renumber_ranges("0-6"), "3,7,12-15,20");
        assert_eq!(s.renumber_ranges("2-3,5"), "12-13,15");
        assert_eq!(s.renumber_ranges("1-2"), "7,12");
        assert_eq!(s.renumber_ranges("4-5,6"), "14-15,20");
        assert_eq!(s.renumber_ranges("6,9-12"), "20");
        assert_eq!(s.renumber_ranges("x,0,…"), "3");
        assert_eq!(s.renumber_ranges(""), "");
        let every = ShardNumbering::Every;
        assert_eq!(every.renumber_ranges("0-3".to_owned()), "0-3");
        assert_eq!(every.original(5), Some(5));
    }

    #[test]
    fn a_large_selection_maps_without_listing_it() {
        let text: Vec<String> = (0..20_000).map(|i| (i * 5).to_string()).collect();
        let s = selection(&text.join(","));
        assert_eq!(s.len(), 20_000);
        assert_eq!(s.original(19_999), Some(99_995));
        assert_eq!(s.completion(50_000), Some(10_000));
        assert_eq!(s.renumber_ranges("0-19999").matches(',').count(), 19_999);
    }
}
