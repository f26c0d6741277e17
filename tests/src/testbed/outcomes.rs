//! Per-shard scripted outcomes for the pods of Indexed Jobs on kwok nodes: the rules of the
//! `testbed.hepbatch.io/failures` annotation, read by the `pod-exit` stage of
//! `kwok-stages.yaml` ("every 20th shard fails twice then succeeds", "shards 7 and 4242
//! fail with exit 42", "1 % fail on every attempt").
//!
//! [`Failures`] writes the annotation; [`Failures::exit_code`] says what the stage will do
//! for a shard and attempt, so tests and benchmarks know the outcome they must see (the
//! smoke suite checks the two agree on a real testbed).

use serde::Serialize;

/// One rule: the shards and attempts it matches, and the exit code they end with.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Only these completion indexes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<i32>>,
    /// Only indexes divisible by this (at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<i32>,
    /// Only this share of the indexes, in percent, spread evenly over them; a smaller
    /// share picks a subset of a larger one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Only the first this many attempts of a shard; `None`: every attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// The exit code.
    pub exit_code: i32,
}

impl Failure {
    /// Every shard, every attempt, exit code 1; narrow it with the other methods.
    pub fn all() -> Failure {
        Failure {
            exit_code: 1,
            ..Failure::default()
        }
    }

    /// Only these shards.
    pub fn shards(indexes: &[i32]) -> Failure {
        Failure {
            shards: Some(indexes.to_vec()),
            ..Failure::all()
        }
    }

    /// Only every `n`-th shard (indexes divisible by `n`).
    pub fn every(n: i32) -> Failure {
        Failure {
            every: Some(n),
            ..Failure::all()
        }
    }

    /// Only `percent` % of the shards.
    pub fn percent(percent: f64) -> Failure {
        Failure {
            percent: Some(percent),
            ..Failure::all()
        }
    }

    /// Only the first `attempts` attempts of each matching shard: it then succeeds.
    pub fn times(self, attempts: i32) -> Failure {
        Failure {
            attempts: Some(attempts),
            ..self
        }
    }

    /// With this exit code.
    pub fn code(self, exit_code: i32) -> Failure {
        Failure { exit_code, ..self }
    }

    fn matches(&self, shard: i32, attempt: i32) -> bool {
        let spread = (i64::from(shard) * 7919).rem_euclid(10_000) as f64;
        self.shards.as_ref().is_none_or(|s| s.contains(&shard))
            && self.every.is_none_or(|n| n > 0 && shard % n == 0)
            && self.percent.is_none_or(|p| spread < p * 100.0)
            && self.attempts.is_none_or(|a| attempt < a)
    }
}

/// The rules of one pod template, first match wins.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Failures(pub Vec<Failure>);

impl Failures {
    /// The annotation's value.
    pub fn annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The exit code the `pod-exit` stage gives attempt `attempt` (0 first) of `shard`
    /// (0 when no rule matches and no `exit-code` annotation is set).
    pub fn exit_code(&self, shard: i32, attempt: i32) -> i32 {
        self.0
            .iter()
            .find(|rule| rule.matches(shard, attempt))
            .map_or(0, |rule| rule.exit_code)
    }

    /// How many attempts `shard` fails before it succeeds, up to `limit` (a shard still
    /// failing at `limit` attempts fails for good when the Job allows no more).
    pub fn failed_attempts(&self, shard: i32, limit: i32) -> i32 {
        (0..limit)
            .take_while(|&attempt| self.exit_code(shard, attempt) != 0)
            .count() as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides() {
        let failures = Failures(vec![
            Failure::shards(&[7, 4242]).code(42),
            Failure::every(20).times(2),
        ]);
        assert_eq!(failures.exit_code(7, 0), 42);
        assert_eq!(failures.exit_code(7, 9), 42);
        assert_eq!(failures.exit_code(40, 1), 1);
        assert_eq!(failures.exit_code(40, 2), 0);
        assert_eq!(failures.exit_code(41, 0), 0);
        assert_eq!(failures.failed_attempts(20, 4), 2);
        assert_eq!(failures.failed_attempts(4242, 4), 4);
    }

    #[test]
    fn percent_picks_that_share_and_smaller_shares_are_subsets() {
        let share = |p: f64| {
            (0..10_000)
                .filter(|&i| Failure::percent(p).matches(i, 0))
                .count()
        };
        assert_eq!(share(1.0), 100);
        assert_eq!(share(0.5), 50);
        assert!(
            (0..10_000).all(
                |i| !Failure::percent(0.5).matches(i, 0) || Failure::percent(5.0).matches(i, 0)
            )
        );
    }

    #[test]
    fn the_annotation_is_the_json_the_stage_reads() {
        let failures = Failures(vec![
            Failure::percent(0.5).code(3),
            Failure::every(20).times(2),
        ]);
        assert_eq!(
            failures.annotation(),
            r#"[{"percent":0.5,"exitCode":3},{"every":20,"attempts":2,"exitCode":1}]"#
        );
    }
}
