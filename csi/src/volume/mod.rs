//! Typed, validated volume attributes.
//!
//! A CSI volume's context (the `volumeAttributes` of an inline volume or a PV) is read
//! into [`VolumeAttributes`] by serde, with unknown keys rejected, and then validated into a
//! [`VolumeSpec`]: every repository name is a [`RepositoryName`], every pin a [`Pin`].
//! Nothing downstream ever sees a raw string from the volume context.
//!
//! Syntax:
//! - `repositories`: `cms.cern.ch,sft.cern.ch` (absent: every repository on demand);
//! - `pins`: `cms.cern.ch@tag=v2;sft.cern.ch@date=2025-06-01T00:00:00Z;x.cern.ch@rootHash=<hex>`.
//!
//! Inputs are bounded before they are parsed ([`limits`]): a value longer than
//! [`limits::MAX_ATTRIBUTE_LENGTH`], more than [`limits::MAX_REPOSITORIES`] repositories or
//! [`limits::MAX_PINS`] pins are refused with the limit in words, and every message quotes
//! user input through [`quote`](fn@quote) (at most a short prefix).

pub mod quote;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use hepbatch_crds::{CSI_ATTRIBUTE_PINS, CSI_ATTRIBUTE_REPOSITORIES};
use serde::Deserialize;

pub use quote::{Bounded, quote};

/// The documented maximum sizes of a volume context (docs/csi.md, "Volume attributes").
pub mod limits {
    /// Characters of one attribute value (`repositories` or `pins`).
    pub const MAX_ATTRIBUTE_LENGTH: usize = 32 * 1024;
    /// Keys of a volume context, Kubernetes' own included.
    pub const MAX_KEYS: usize = 64;
    /// Repositories of one explicit list.
    pub const MAX_REPOSITORIES: usize = 128;
    /// Pins of one volume.
    pub const MAX_PINS: usize = 128;
    /// Characters of a tag (the CVMFS limit for tag names).
    pub const MAX_TAG_LENGTH: usize = 128;
}

/// Prefixes of keys that Kubernetes itself adds to a volume context (pod information,
/// the ephemeral marker, the provisioner identity); they are accepted and ignored.
const KUBERNETES_KEY_PREFIXES: [&str; 2] = ["csi.storage.k8s.io/", "storage.kubernetes.io/"];

/// Why a volume context was rejected; the message is returned to the user verbatim.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttributeError {
    /// A key that is neither ours nor Kubernetes'.
    #[error(
        "unknown volume attribute {key}: the attributes are {CSI_ATTRIBUTE_REPOSITORIES:?} and {CSI_ATTRIBUTE_PINS:?}"
    )]
    UnknownKey {
        /// The offending key (quoted).
        key: String,
    },
    /// A repository name that is not a DNS name.
    #[error("invalid repository name {name}: {reason}")]
    InvalidRepository {
        /// The offending name (quoted).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `repositories` was given but lists nothing.
    #[error(
        "volume attribute {CSI_ATTRIBUTE_REPOSITORIES:?} is empty: omit it to get every repository"
    )]
    EmptyRepositoryList,
    /// A pin entry that does not follow `<repository>@<kind>=<value>`.
    #[error("invalid pin {entry}: {reason}")]
    InvalidPin {
        /// The offending entry (quoted).
        entry: String,
        /// What is wrong with it.
        #[source]
        reason: PinError,
    },
    /// Two pins for one repository.
    #[error("repository {0} is pinned more than once")]
    DuplicatePin(RepositoryName),
    /// A pin for a repository that an explicit list does not carry.
    #[error("repository {0} is pinned but not listed in {CSI_ATTRIBUTE_REPOSITORIES:?}")]
    PinNotListed(RepositoryName),
    /// The context is not a flat string map (cannot happen over gRPC, kept for serde).
    #[error("malformed volume attributes: {0}")]
    Malformed(String),
    /// An attribute value longer than [`limits::MAX_ATTRIBUTE_LENGTH`].
    #[error(
        "volume attribute {key} has {length} characters; at most {} are allowed",
        limits::MAX_ATTRIBUTE_LENGTH
    )]
    TooLong {
        /// The attribute (quoted).
        key: String,
        /// Its length in characters.
        length: usize,
    },
    /// More keys, repositories or pins than the limits allow.
    #[error("{what}: {count} given, at most {limit} are allowed")]
    TooMany {
        /// What was counted, e.g. "repositories in \"repositories\"".
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// What is wrong with one pin entry (the part of [`AttributeError::InvalidPin`] after the
/// entry); each message is returned to the user verbatim.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    /// No `@` between the repository and the pin.
    #[error("expected <repository>@<kind>=<value>")]
    NoRepository,
    /// No `=` between the kind and the value.
    #[error("expected <kind>=<value> after '@'")]
    NoKind,
    /// A tag with characters CVMFS does not allow, empty or too long.
    #[error(
        "tag {} must be 1 to {} letters, digits, '.', '_' or '-'",
        quote(.0),
        limits::MAX_TAG_LENGTH
    )]
    Tag(String),
    /// A date that is not a UTC timestamp.
    #[error(
        "date {} must be an ISO-8601 UTC timestamp like 2025-06-01T00:00:00Z",
        quote(.0)
    )]
    Date(String),
    /// A root hash that is not 40 lower-case hex digits with an optional suffix.
    #[error(
        "rootHash {} must be 40 lower-case hex digits (optionally -rmd160 or -shake128)",
        quote(.0)
    )]
    RootHash(String),
    /// A kind other than tag, date and rootHash.
    #[error("unknown pin kind {}: use tag, date or rootHash", quote(.0))]
    UnknownKind(String),
}

/// A CVMFS repository's fully qualified name, e.g. `cms.cern.ch`: a DNS name of at least
/// two labels, lower case, so it is also a safe single path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Validates `name` as a repository name.
    pub fn parse(name: &str) -> Result<Self, AttributeError> {
        let invalid = |reason| AttributeError::InvalidRepository {
            name: quote(name),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > 253 {
            return Err(invalid("it is longer than 253 characters"));
        }
        if name.contains('/') || name.contains("..") {
            return Err(invalid("it must not contain '/' or '..'"));
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid(
                "it must be a fully qualified DNS name such as cms.cern.ch",
            ));
        }
        for label in labels {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid("each DNS label must have 1 to 63 characters"));
            }
            if !label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(
                    "only lower-case letters, digits, '-' and '.' are allowed",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a DNS label must not start or end with '-'"));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A revision a repository is pinned to; each maps onto one CVMFS client setting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pin {
    /// A named tag (`CVMFS_REPOSITORY_TAG`).
    Tag(String),
    /// The newest revision at an instant, `YYYY-MM-DDTHH:MM:SSZ` (`CVMFS_REPOSITORY_DATE`).
    Date(String),
    /// A root catalog hash (`CVMFS_ROOT_HASH`), lower-case hex.
    RootHash(String),
}

impl Pin {
    /// Parses `tag=<tag>`, `date=<ISO-8601>` or `rootHash=<hex>`.
    fn parse(spec: &str) -> Result<Self, PinError> {
        let (kind, value) = spec.split_once('=').ok_or(PinError::NoKind)?;
        match kind {
            "tag" => {
                if value.is_empty()
                    || value.len() > limits::MAX_TAG_LENGTH
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    || value.starts_with('.')
                {
                    return Err(PinError::Tag(value.to_owned()));
                }
                Ok(Self::Tag(value.to_owned()))
            }
            "date" => {
                if !is_utc_timestamp(value) {
                    return Err(PinError::Date(value.to_owned()));
                }
                Ok(Self::Date(value.to_owned()))
            }
            "rootHash" => {
                let (hex, suffix) = value.split_once('-').unwrap_or((value, ""));
                let hex_ok =
                    hex.len() == 40 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
                let suffix_ok = matches!(suffix, "" | "rmd160" | "shake128");
                if !hex_ok || !suffix_ok {
                    return Err(PinError::RootHash(value.to_owned()));
                }
                Ok(Self::RootHash(value.to_owned()))
            }
            other => Err(PinError::UnknownKind(other.to_owned())),
        }
    }

    /// A path-safe key naming this revision, e.g. `tag-v2`; validation guarantees it has
    /// no `/`.
    pub fn key(&self) -> String {
        match self {
            Self::Tag(tag) => format!("tag-{tag}"),
            Self::Date(date) => format!("date-{date}"),
            Self::RootHash(hash) => format!("rootHash-{hash}"),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => write!(f, "tag={tag}"),
            Self::Date(date) => write!(f, "date={date}"),
            Self::RootHash(hash) => write!(f, "rootHash={hash}"),
        }
    }
}

/// Checks `YYYY-MM-DDTHH:MM:SSZ` with plausible field ranges.
fn is_utc_timestamp(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 20 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = value.get(range)?;
        if part.chars().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && bytes[19] == b'Z';
    match (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) {
        (Some(_), Some(month), Some(day), Some(hour), Some(minute), Some(second)) => {
            separators_ok
                && (1..=12).contains(&month)
                && (1..=31).contains(&day)
                && hour < 24
                && minute < 60
                && second < 61
        }
        _ => false,
    }
}

/// One CVMFS client instance: a repository at its latest revision (shared by every volume
/// on the node) or at a pinned revision (a private client of its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    /// The repository served.
    pub repository: RepositoryName,
    /// The pinned revision, `None` for the latest.
    pub pin: Option<Pin>,
}

impl Instance {
    /// A path-safe name unique per instance: `cms.cern.ch` or `cms.cern.ch@tag-v2`.
    pub fn dir_name(&self) -> String {
        match &self.pin {
            None => self.repository.to_string(),
            Some(pin) => format!("{}@{}", self.repository, pin.key()),
        }
    }
}

impl Instance {
    /// Reads back a name made by [`Instance::dir_name`].
    pub fn from_dir_name(name: &str) -> Result<Self, AttributeError> {
        match name.split_once('@') {
            None => Ok(Self {
                repository: RepositoryName::parse(name)?,
                pin: None,
            }),
            Some((repository, key)) => {
                let spec = key.replacen('-', "=", 1);
                let pin = Pin::parse(&spec).map_err(|reason| AttributeError::InvalidPin {
                    entry: quote(name),
                    reason,
                })?;
                Ok(Self {
                    repository: RepositoryName::parse(repository)?,
                    pin: Some(pin),
                })
            }
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pin {
            None => write!(f, "{}", self.repository),
            Some(pin) => write!(f, "{}@{pin}", self.repository),
        }
    }
}

/// The raw attributes as serde reads them from the volume context.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttributes {
    /// Comma-separated repositories, see [`CSI_ATTRIBUTE_REPOSITORIES`].
    pub repositories: Option<String>,
    /// `;`-separated pins, see [`CSI_ATTRIBUTE_PINS`].
    pub pins: Option<String>,
}

/// Which repositories a volume shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repositories {
    /// Every repository, mounted on first access.
    OnDemand,
    /// Exactly these repositories, nothing else visible.
    Listed(BTreeSet<RepositoryName>),
}

/// A validated volume: what it shows and at which revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The repositories the volume carries.
    pub repositories: Repositories,
    /// Pinned revisions; every other repository shows its latest revision.
    pub pins: BTreeMap<RepositoryName, Pin>,
}

impl VolumeSpec {
    /// Reads and validates a CSI volume context.
    pub fn from_context(context: &HashMap<String, String>) -> Result<Self, AttributeError> {
        if context.len() > limits::MAX_KEYS {
            return Err(AttributeError::TooMany {
                what: "keys in the volume context",
                count: context.len(),
                limit: limits::MAX_KEYS,
            });
        }
        let mut ours = serde_json::Map::new();
        for (key, value) in context {
            if KUBERNETES_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            if key != CSI_ATTRIBUTE_REPOSITORIES && key != CSI_ATTRIBUTE_PINS {
                return Err(AttributeError::UnknownKey { key: quote(key) });
            }
            ours.insert(key.clone(), serde_json::Value::String(value.clone()));
        }
        let attributes: VolumeAttributes = serde_json::from_value(ours.into())
            .map_err(|e| AttributeError::Malformed(e.to_string()))?;
        Self::validate(&attributes)
    }

    /// Validates raw attributes.
    pub fn validate(attributes: &VolumeAttributes) -> Result<Self, AttributeError> {
        for (key, value) in [
            (CSI_ATTRIBUTE_REPOSITORIES, &attributes.repositories),
            (CSI_ATTRIBUTE_PINS, &attributes.pins),
        ] {
            let length = value.as_deref().map_or(0, |v| v.chars().count());
            if length > limits::MAX_ATTRIBUTE_LENGTH {
                return Err(AttributeError::TooLong {
                    key: quote(key),
                    length,
                });
            }
        }
        let repositories = match &attributes.repositories {
            None => Repositories::OnDemand,
            Some(list) => {
                let entries: Vec<&str> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect();
                if entries.len() > limits::MAX_REPOSITORIES {
                    return Err(AttributeError::TooMany {
                        what: "repositories in \"repositories\"",
                        count: entries.len(),
                        limit: limits::MAX_REPOSITORIES,
                    });
                }
                let names = entries
                    .into_iter()
                    .map(RepositoryName::parse)
                    .collect::<Result<BTreeSet<_>, _>>()?;
                if names.is_empty() {
                    return Err(AttributeError::EmptyRepositoryList);
                }
                Repositories::Listed(names)
            }
        };
        let entries: Vec<&str> = attributes
            .pins
            .as_deref()
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.len() > limits::MAX_PINS {
            return Err(AttributeError::TooMany {
                what: "pins in \"pins\"",
                count: entries.len(),
                limit: limits::MAX_PINS,
            });
        }
        let mut pins = BTreeMap::new();
        for entry in entries {
            let invalid = |reason: PinError| AttributeError::InvalidPin {
                entry: quote(entry),
                reason,
            };
            let (name, pin) = entry
                .split_once('@')
                .ok_or_else(|| invalid(PinError::NoRepository))?;
            let name = RepositoryName::parse(name)?;
            let pin = Pin::parse(pin).map_err(invalid)?;
            if let Repositories::Listed(listed) = &repositories
                && !listed.contains(&name)
            {
                return Err(AttributeError::PinNotListed(name));
            }
            if pins.insert(name.clone(), pin).is_some() {
                return Err(AttributeError::DuplicatePin(name));
            }
        }
        Ok(Self { repositories, pins })
    }

    /// The client instance that serves `repository` in this volume.
    pub fn instance(&self, repository: &RepositoryName) -> Instance {
        Instance {
            repository: repository.clone(),
            pin: self.pins.get(repository).cloned(),
        }
    }

    /// The instances of an explicit list (empty for on-demand volumes).
    pub fn listed_instances(&self) -> Vec<Instance> {
        match &self.repositories {
            Repositories::OnDemand => Vec::new(),
            Repositories::Listed(names) => names.iter().map(|n| self.instance(n)).collect(),
        }
    }

    /// The volume context describing this spec, in normal form (sorted, no blanks, no
    /// empty keys): what a provisioned volume carries, read back on the node by
    /// [`VolumeSpec::from_context`] exactly like a static PV's attributes.
    pub fn to_context(&self) -> HashMap<String, String> {
        let mut context = HashMap::new();
        if let Repositories::Listed(names) = &self.repositories {
            context.insert(CSI_ATTRIBUTE_REPOSITORIES.to_owned(), list_text(names));
        }
        if !self.pins.is_empty() {
            context.insert(CSI_ATTRIBUTE_PINS.to_owned(), self.pins_text());
        }
        context
    }

    /// The pins in attribute syntax: `<repo>@<kind>=<value>` joined by `;`.
    fn pins_text(&self) -> String {
        self.pins
            .iter()
            .map(|(name, pin)| format!("{name}@{pin}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// A canonical text form: equal specs give equal strings (used to recognise a repeated
    /// publish of the same volume).
    pub fn canonical(&self) -> String {
        let repositories = match &self.repositories {
            Repositories::OnDemand => "*".to_owned(),
            Repositories::Listed(names) => list_text(names),
        };
        format!("{repositories}|{}", self.pins_text())
    }

    /// Reads back a [`VolumeSpec::canonical`] string (as recorded in a holder's mount source).
    pub fn from_canonical(text: &str) -> Result<Self, AttributeError> {
        let (repositories, pins) = text.split_once('|').unwrap_or((text, ""));
        Self::validate(&VolumeAttributes {
            repositories: (repositories != "*").then(|| repositories.to_owned()),
            pins: Some(pins.to_owned()),
        })
    }
}

/// Repository names in attribute syntax, joined by `,`.
fn list_text<'a>(names: impl IntoIterator<Item = &'a RepositoryName>) -> String {
    names
        .into_iter()
        .map(RepositoryName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_repositories_means_on_demand() {
        let spec = VolumeSpec::from_context(&context(&[])).unwrap();
        assert_eq!(spec.repositories, Repositories::OnDemand);
        assert!(spec.pins.is_empty());
    }

    #[test]
    fn explicit_list_with_pins_is_parsed() {
        let spec = VolumeSpec::from_context(&context(&[
            ("repositories", "cms.cern.ch, sft.cern.ch"),
            (
                "pins",
                "cms.cern.ch@tag=v2;sft.cern.ch@date=2025-06-01T00:00:00Z",
            ),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]))
        .unwrap();
        let cms = RepositoryName::parse("cms.cern.ch").unwrap();
        let sft = RepositoryName::parse("sft.cern.ch").unwrap();
        assert_eq!(
            spec.repositories,
            Repositories::Listed([cms.clone(), sft.clone()].into())
        );
        assert_eq!(spec.pins[&cms], Pin::Tag("v2".into()));
        assert_eq!(
            spec.instance(&sft).dir_name(),
            "sft.cern.ch@date-2025-06-01T00:00:00Z"
        );
        assert_eq!(
            spec.canonical(),
            "cms.cern.ch,sft.cern.ch|cms.cern.ch@tag=v2;sft.cern.ch@date=2025-06-01T00:00:00Z"
        );
    }

    #[test]
    fn instance_dir_names_round_trip() {
        for name in [
            "cms.cern.ch",
            "cms.cern.ch@tag-v-2.1",
            "sft.cern.ch@date-2025-06-01T00:00:00Z",
            "x.cern.ch@rootHash-0123456789abcdef0123456789abcdef01234567-rmd160",
        ] {
            assert_eq!(Instance::from_dir_name(name).unwrap().dir_name(), name);
        }
    }

    #[test]
    fn canonical_form_round_trips() {
        let spec = VolumeSpec::from_context(&context(&[
            ("repositories", "sft.cern.ch,cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ]))
        .unwrap();
        assert_eq!(VolumeSpec::from_canonical(&spec.canonical()).unwrap(), spec);
        let on_demand = VolumeSpec::from_context(&context(&[])).unwrap();
        assert_eq!(
            VolumeSpec::from_canonical(&on_demand.canonical()).unwrap(),
            on_demand
        );
    }

    #[test]
    fn context_form_round_trips_in_normal_form() {
        let spec = VolumeSpec::from_context(&context(&[
            ("repositories", " sft.cern.ch,cms.cern.ch ,"),
            ("pins", "cms.cern.ch@tag=v2; "),
            ("csi.storage.k8s.io/pv/name", "pv-1"),
        ]))
        .unwrap();
        let normal = spec.to_context();
        assert_eq!(
            normal,
            context(&[
                ("repositories", "cms.cern.ch,sft.cern.ch"),
                ("pins", "cms.cern.ch@tag=v2"),
            ])
        );
        assert_eq!(VolumeSpec::from_context(&normal).unwrap(), spec);
        let on_demand = VolumeSpec::from_context(&context(&[])).unwrap();
        assert!(on_demand.to_context().is_empty());
    }

    #[test]
    fn pins_are_allowed_on_demand() {
        let spec = VolumeSpec::from_context(&context(&[(
            "pins",
            "atlas.cern.ch@rootHash=0123456789abcdef0123456789abcdef01234567",
        )]))
        .unwrap();
        assert_eq!(spec.repositories, Repositories::OnDemand);
        assert_eq!(spec.pins.len(), 1);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = VolumeSpec::from_context(&context(&[("repository", "cms.cern.ch")])).unwrap_err();
        assert!(err.to_string().contains("\"repository\""), "{err}");
    }

    #[test]
    fn bad_repository_names_are_rejected() {
        for bad in [
            "cms",
            "../etc",
            "a/b.ch",
            "CMS.cern.ch",
            "-a.ch",
            "a..ch",
            "a b.ch",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(RepositoryName::parse("unpacked.cern.ch").is_ok());
    }

    #[test]
    fn bad_pins_are_rejected() {
        for bad in [
            "cms.cern.ch",
            "cms.cern.ch@v2",
            "cms.cern.ch@branch=v2",
            "cms.cern.ch@tag=",
            "cms.cern.ch@tag=a/b",
            "cms.cern.ch@date=2025-06-01",
            "cms.cern.ch@date=2025-13-01T00:00:00Z",
            "cms.cern.ch@rootHash=xyz",
            "cms.cern.ch@tag=a;cms.cern.ch@tag=b",
        ] {
            let err = VolumeSpec::from_context(&context(&[("pins", bad)]));
            assert!(err.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn pin_outside_explicit_list_is_an_error() {
        let err = VolumeSpec::from_context(&context(&[
            ("repositories", "cms.cern.ch"),
            ("pins", "sft.cern.ch@tag=v1"),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            AttributeError::PinNotListed(RepositoryName::parse("sft.cern.ch").unwrap())
        );
    }

    #[test]
    fn empty_list_is_an_error() {
        let err = VolumeSpec::from_context(&context(&[("repositories", " , ")])).unwrap_err();
        assert_eq!(err, AttributeError::EmptyRepositoryList);
    }

    #[test]
    fn oversized_input_is_refused_with_a_short_message() {
        let huge = "a".repeat(1_000_000);
        for attributes in [
            vec![("repositories", huge.as_str())],
            vec![("pins", huge.as_str())],
            vec![(huge.as_str(), "x")],
        ] {
            let err = VolumeSpec::from_context(&context(&attributes)).unwrap_err();
            let message = err.to_string();
            assert!(message.len() < 1024, "{} characters", message.len());
        }
        let err = VolumeSpec::from_context(&context(&[("repositories", &huge)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume attribute \"repositories\" has 1000000 characters; at most 32768 are allowed"
        );
    }

    #[test]
    fn long_names_and_tags_are_quoted_short() {
        let name = format!("{}.cern.ch", "a".repeat(300));
        let err = VolumeSpec::from_context(&context(&[("repositories", &name)])).unwrap_err();
        assert!(err.to_string().contains("(308 characters)"), "{err}");
        let pin = format!("cms.cern.ch@tag={}", "v".repeat(5000));
        let err = VolumeSpec::from_context(&context(&[("pins", &pin)])).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn counts_are_bounded_and_the_limit_is_named() {
        let names: Vec<String> = (0..limits::MAX_REPOSITORIES)
            .map(|i| format!("r{i}.cern.ch"))
            .collect();
        let spec = VolumeSpec::from_context(&context(&[("repositories", &names.join(","))]));
        assert!(spec.is_ok(), "{spec:?}");
        let mut too_many = names.clone();
        too_many.push("extra.cern.ch".to_owned());
        let err = VolumeSpec::from_context(&context(&[("repositories", &too_many.join(","))]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "repositories in \"repositories\": 129 given, at most 128 are allowed"
        );
        let pins: Vec<String> = (0..=limits::MAX_PINS)
            .map(|i| format!("r{i}.cern.ch@tag=v1"))
            .collect();
        let err = VolumeSpec::from_context(&context(&[("pins", &pins.join(";"))])).unwrap_err();
        assert!(err.to_string().contains("at most 128"), "{err}");
        let keys: Vec<(String, String)> = (0..=limits::MAX_KEYS)
            .map(|i| (format!("csi.storage.k8s.io/k{i}"), String::new()))
            .collect();
        let err = VolumeSpec::from_context(&keys.into_iter().collect()).unwrap_err();
        assert!(
            err.to_string().contains("keys in the volume context"),
            "{err}"
        );
    }
}
