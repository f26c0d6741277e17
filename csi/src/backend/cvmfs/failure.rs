//! Why a `cvmfs2` mount failed, in words a user can act on.
//!
//! The client exits with the loader's failure code and prints one line on stderr (e.g.
//! `Failed to initialize root file catalog (16 - file catalog failure)`); the real cause
//! is in its log (`failed to download repository manifest (7 - host connection problem)`,
//! `whitelist verification failed`, `no such tag: v9`). [`Failure::classify`] reads both
//! and names the cause, so that a pod event says "repository cms.cern.ch: its server
//! cannot be reached (host connection problem)" instead of "Transport endpoint is not
//! connected".

use std::fmt;

/// The loader's failure codes that need no log to explain them (`cvmfs/loader.h`).
const FAIL_SIGNATURE: i32 = 15;
const FAIL_PROXY_DISCOVERY: i32 = 23;

/// What went wrong, as far as the client told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A tag pin names no tag of the repository.
    NoSuchTag(String),
    /// A date pin lies before the first tagged revision.
    DateTooEarly(String),
    /// The repository's servers (or the proxy) cannot be reached, or answer with errors.
    Unreachable(String),
    /// The signature of the manifest or whitelist does not verify with the keys.
    BadSignature(String),
    /// No public key for the repository could be loaded.
    NoPublicKey(String),
    /// No HTTP proxy is configured.
    NoProxy,
    /// Anything else: the exit status and the client's own words.
    Other {
        /// The exit status, if the client exited.
        status: Option<i32>,
        /// What it said.
        message: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchTag(tag) => write!(f, "it has no tag {tag:?}"),
            Self::DateTooEarly(date) => write!(
                f,
                "it has no tagged revision as old as {date} (a date pin takes the newest tagged revision published at or before it)"
            ),
            Self::Unreachable(detail) => write!(
                f,
                "its manifest cannot be downloaded ({detail}); check the server URLs and the HTTP proxy"
            ),
            Self::BadSignature(detail) => write!(
                f,
                "its signature does not verify with the configured public keys ({detail})"
            ),
            Self::NoPublicKey(detail) => write!(
                f,
                "no public key for it could be loaded ({detail}); configure the repository's key"
            ),
            Self::NoProxy => write!(
                f,
                "no HTTP proxy is configured; set CVMFS_HTTP_PROXY (DIRECT for none)"
            ),
            Self::Other { status, message } => match status {
                Some(status) => write!(f, "cvmfs2 failed with status {status}: {message}"),
                None => write!(f, "cvmfs2 was killed: {message}"),
            },
        }
    }
}

impl Failure {
    /// Names the cause from the exit `status`, the client's `stderr` and what it logged
    /// during the attempt (`log`).
    pub fn classify(status: Option<i32>, stderr: &str, log: &str) -> Self {
        let text = format!("{stderr}\n{log}");
        if let Some(tag) = after(&text, "no such tag: ") {
            return Self::NoSuchTag(tag);
        }
        if let Some(date) = after(&text, "no repository state as early as utc timestamp ") {
            return Self::DateTooEarly(date);
        }
        if let Some(detail) = find_line(
            &text,
            &[
                "no public key loaded",
                "failed to load public key",
                "failed to open public key",
            ],
        ) {
            return Self::NoPublicKey(detail);
        }
        if let Some(detail) = find_line(
            &text,
            &[
                "whitelist verification failed",
                "signature verification failed",
                "failed to verify repository",
                "not on whitelist",
                "invalid whitelist signature",
            ],
        ) {
            return Self::BadSignature(detail);
        }
        if status == Some(FAIL_PROXY_DISCOVERY) || text.contains("failed to discover HTTP proxy") {
            return Self::NoProxy;
        }
        if let Some(detail) = parenthesised(&text, "failed to download repository manifest") {
            return Self::Unreachable(detail);
        }
        let message = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_owned();
        match status {
            Some(FAIL_SIGNATURE) => Self::NoPublicKey(message),
            _ => Self::Other { status, message },
        }
    }
}

/// What follows `marker` on the first line containing it, up to the loader's
/// ` (<code> - <text>)` suffix.
fn after(text: &str, marker: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.split_once(marker)?.1;
        let rest = rest.rsplit_once(" (").map_or(rest, |(value, _)| value);
        Some(rest.trim().to_owned())
    })
}

/// The first line containing any of `markers`, without the log's time stamp.
fn find_line(text: &str, markers: &[&str]) -> Option<String> {
    text.lines()
        .find(|line| markers.iter().any(|m| line.contains(m)))
        .map(|line| strip_log_prefix(line).to_owned())
}

/// The text in parentheses after `marker`, e.g. `7 - host connection problem`.
fn parenthesised(text: &str, marker: &str) -> Option<String> {
    let line = text.lines().find(|line| line.contains(marker))?;
    let rest = line.split_once(marker)?.1;
    let inner = rest.split_once('(')?.1.rsplit_once(')')?.0;
    Some(
        inner
            .split_once(" - ")
            .map_or(inner, |(_, words)| words)
            .trim()
            .to_owned(),
    )
}

/// A usyslog line is `<ctime> (<fqrn>) <message>`: keep the message.
fn strip_log_prefix(line: &str) -> &str {
    line.split_once(") ")
        .filter(|(head, _)| head.contains(" ("))
        .map_or(line, |(_, message)| message)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What CVMFS 2.11.5 really wrote (stderr, then its usyslog file) in each case.
    const STDERR_HISTORY: &str = "Failed to set requested number of open files, using maximum number 20000\nCernVM-FS: loading Fuse module... ";
    fn log(lines: &[&str]) -> String {
        lines
            .iter()
            .map(|l| format!("Tue Dec  1 08:41:35 2026 (cms.cern.ch) {l}\n"))
            .collect()
    }

    #[test]
    fn pins_that_name_nothing_are_told() {
        let tag = Failure::classify(
            Some(22),
            &format!("{STDERR_HISTORY}no such tag: v9 (22 - history init failure)\n"),
            &log(&["no such tag: v9 (22 - history init failure)"]),
        );
        assert_eq!(tag, Failure::NoSuchTag("v9".into()));
        assert_eq!(tag.to_string(), "it has no tag \"v9\"");
        let early = Failure::classify(
            Some(22),
            "",
            &log(&[
                "no repository state as early as utc timestamp 1 Jan 2020 00:00:00 (22 - history init failure)",
            ]),
        );
        assert_eq!(early, Failure::DateTooEarly("1 Jan 2020 00:00:00".into()));
    }

    #[test]
    fn unreachable_servers_and_bad_keys_are_told_apart() {
        let catalog = "Failed to initialize root file catalog (16 - file catalog failure)\n";
        let unreachable = Failure::classify(
            Some(16),
            catalog,
            &log(&[
                "failed to download repository manifest (7 - host connection problem)",
                "Failed to initialize root file catalog (16 - file catalog failure)",
            ]),
        );
        assert_eq!(
            unreachable,
            Failure::Unreachable("host connection problem".into())
        );
        let missing = Failure::classify(
            Some(16),
            catalog,
            &log(&["failed to download repository manifest (9 - host returned HTTP error)"]),
        );
        assert_eq!(
            missing,
            Failure::Unreachable("host returned HTTP error".into())
        );
        let wrong_key = Failure::classify(
            Some(16),
            catalog,
            &log(&["whitelist verification failed (6): invalid whitelist signature"]),
        );
        assert_eq!(
            wrong_key,
            Failure::BadSignature(
                "whitelist verification failed (6): invalid whitelist signature".into()
            )
        );
        let no_key = Failure::classify(
            Some(16),
            catalog,
            &log(&[
                "no public key loaded",
                "whitelist verification failed (6): invalid whitelist signature",
            ]),
        );
        assert_eq!(no_key, Failure::NoPublicKey("no public key loaded".into()));
        assert_eq!(Failure::classify(Some(23), "", ""), Failure::NoProxy);
    }

    #[test]
    fn anything_else_keeps_the_clients_last_words() {
        let other = Failure::classify(
            Some(4),
            "CernVM-FS: loading Fuse module... \nfailed to mount\n",
            "",
        );
        assert_eq!(
            other.to_string(),
            "cvmfs2 failed with status 4: failed to mount"
        );
    }
}
