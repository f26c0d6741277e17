//! Test fixtures of the API, behind the `testing` feature: one builder for the
//! AnalysisJobs that unit tests, integration tests and benchmarks start from.
//!
//! An AnalysisJob is written as its spec in JSON (the form physicists write, and the one
//! every test case reads best in) plus the metadata a test needs:
//!
//! ```
//! use hepbatch_crds::testing::analysis_job;
//! use serde_json::json;
//!
//! let aj = analysis_job("higgs", json!({"image": "busybox", "shards": 2}))
//!     .namespace("physics")
//!     .uid("u-1")
//!     .build()
//!     .expect("a valid AnalysisJob");
//! assert_eq!(aj.metadata.namespace.as_deref(), Some("physics"));
//! ```

use serde_json::{Map, Value, json};

use crate::{ANALYSIS_JOB_KIND, API_GROUP, API_VERSION, AnalysisJob};

/// An AnalysisJob under construction; see the [module](self) documentation.
#[derive(Clone, Debug)]
#[must_use]
pub struct AnalysisJobFixture {
    metadata: Map<String, Value>,
    spec: Value,
}

/// An AnalysisJob named `name` with `spec` (JSON), and no other metadata.
pub fn analysis_job(name: &str, spec: Value) -> AnalysisJobFixture {
    let mut metadata = Map::new();
    metadata.insert("name".to_owned(), json!(name));
    AnalysisJobFixture { metadata, spec }
}

impl AnalysisJobFixture {
    /// In namespace `namespace`.
    pub fn namespace(self, namespace: &str) -> Self {
        self.metadata_field("namespace", json!(namespace))
    }

    /// With the uid `uid` (what owner references point at).
    pub fn uid(self, uid: &str) -> Self {
        self.metadata_field("uid", json!(uid))
    }

    /// At generation `generation`.
    pub fn generation(self, generation: i64) -> Self {
        self.metadata_field("generation", json!(generation))
    }

    /// With the metadata field `key` set to `value` (labels, annotations, timestamps).
    pub fn metadata_field(mut self, key: &str, value: Value) -> Self {
        self.metadata.insert(key.to_owned(), value);
        self
    }

    /// The object as JSON, for clients that send what the Rust types would refuse.
    pub fn json(&self) -> Value {
        json!({
            "apiVersion": format!("{API_GROUP}/{API_VERSION}"),
            "kind": ANALYSIS_JOB_KIND,
            "metadata": self.metadata,
            "spec": self.spec,
        })
    }

    /// The typed AnalysisJob; an error when the spec does not fit the API types.
    pub fn build(&self) -> Result<AnalysisJob, serde_json::Error> {
        serde_json::from_value(self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_sets_what_it_is_given_and_nothing_else() {
        let fixture = analysis_job("zpeak", json!({"platform": "el9"}))
            .namespace("cms")
            .uid("u-1")
            .generation(2);
        assert_eq!(
            fixture.json(),
            json!({
                "apiVersion": "hepbatch.io/v1alpha1",
                "kind": "AnalysisJob",
                "metadata": {"name": "zpeak", "namespace": "cms", "uid": "u-1", "generation": 2},
                "spec": {"platform": "el9"},
            })
        );
        let aj = fixture.build().expect("valid");
        assert_eq!(aj.metadata.namespace.as_deref(), Some("cms"));
        assert_eq!(aj.metadata.generation, Some(2));
    }

    #[test]
    fn a_spec_the_types_refuse_is_an_error() {
        assert!(
            analysis_job("bad", json!({"shards": "many"}))
                .build()
                .is_err()
        );
    }
}
