//! `kubectl hepbatch submit`: an HTCondor submit description as an AnalysisJob.
//!
//! Three pure steps: [`parse`] reads the file into commands and its `queue` statement,
//! [`value`] reads the values (arguments, environments, sizes), [`translate`] maps them
//! onto the AnalysisJob spec and lists what it does not carry. The only input besides
//! the text is the item file of `queue ... from <file>`, which the caller reads.

pub mod parse;
pub mod translate;
pub mod value;

#[cfg(test)]
mod examples;

pub use parse::{Description, ItemSource, Warning, parse};
pub use translate::{Options, Translation, translate};

/// Why a submit description cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The description has no `queue` statement, so it submits nothing.
    #[error("no queue statement: the description submits no job (add `queue` at the end)")]
    NoQueue,
    /// A `queue` form that has no AnalysisJob equivalent.
    #[error("line {line}: {message}")]
    UnsupportedQueue {
        /// Line of the statement.
        line: usize,
        /// What is unsupported and what to write instead.
        message: String,
    },
    /// A command whose value cannot be read.
    #[error("line {line}: {command}: {message}")]
    BadValue {
        /// Line of the command.
        line: usize,
        /// The command's name as written.
        command: String,
        /// What is wrong with the value.
        message: String,
    },
    /// Neither an image nor an OS is named, and no default platform was given.
    #[error(
        "no image: give docker_image, container_image or +SingularityImage, an OS \
         (+WantOS = \"el9\"), or --platform"
    )]
    NoImage,
    /// A vanilla-universe description without an executable.
    #[error("no executable: a vanilla-universe job needs `executable`")]
    NoExecutable,
    /// Macros that vary per shard in a job that runs the image's entrypoint.
    #[error(
        "the arguments or environment use per-shard macros, which need a generated script, \
         but there is no executable to run from it: name the executable"
    )]
    MacrosNeedExecutable,
    /// The caller did not read the item file of `queue ... from <file>`.
    #[error("the item file {0} was not read")]
    ItemsNotRead(String),
    /// The translation produced a spec the API types refuse (a bug).
    #[error("the translated spec does not fit the AnalysisJob type: {0}")]
    Internal(String),
}
