//! Bounded quoting of user input in messages and logs.
//!
//! Error messages go back to the kubelet (and from there into pod events) and into the
//! plugin's log; both must stay small whatever a volume context carries. [`quote`] keeps
//! at most [`QUOTE_LIMIT`] characters of a value and says how long the whole was.

use std::fmt;

/// Characters of a user-supplied value that a message quotes at most.
pub const QUOTE_LIMIT: usize = 64;

/// `value` in Rust string syntax, cut to [`QUOTE_LIMIT`] characters with its full length
/// appended when it is longer: `"aaaa…" (1000000 characters)`.
pub fn quote(value: &str) -> String {
    Bounded(value).to_string()
}

/// Displays a user-supplied string the way [`quote`] does, without allocating first
/// (for `tracing` fields: `target = %Bounded(&request.target_path)`).
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a>(pub &'a str);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let length = self.0.chars().count();
        if length <= QUOTE_LIMIT {
            return write!(f, "{:?}", self.0);
        }
        let cut: String = self.0.chars().take(QUOTE_LIMIT).collect();
        let shown = format!("{cut:?}");
        // `shown` ends with the closing quote: put the ellipsis inside it.
        write!(f, "{}…\" ({length} characters)", &shown[..shown.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quote("cms.cern.ch"), "\"cms.cern.ch\"");
    }

    #[test]
    fn long_values_are_cut_and_their_length_told() {
        let long = "a".repeat(1_000_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.ends_with("…\" (1000000 characters)"), "{quoted}");
        assert!(quoted.starts_with(&format!("\"{}", "a".repeat(QUOTE_LIMIT))));
    }

    #[test]
    fn multi_byte_characters_are_cut_on_character_boundaries() {
        let long = "é".repeat(100);
        assert!(quote(&long).contains("(100 characters)"));
    }
}
