//! Writes the planned child objects: server-side apply with the fixed field manager for a
//! new Job (idempotent, never get-then-create), its input ConfigMaps first; a merge patch
//! of `parallelism`/`suspend` for a live one.

use hepbatch_crds::analysis_job::AnalysisJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::error::{self, Error};
use super::plan::{self, Children};
use super::{Context, FIELD_MANAGER};

/// How writing the children went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Written (or nothing to write).
    Done,
    /// The Job turned out to be controlled by something else (created meanwhile).
    NameTaken,
}

/// Writes `children` of `analysis_job` (`key` is its `namespace/name`).
pub async fn apply(
    analysis_job: &AnalysisJob,
    key: &str,
    children: &Children,
    context: &Context,
) -> Result<Applied, Error> {
    let namespace = analysis_job.namespace().unwrap_or_default();
    let name = analysis_job.name_any();
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    match children {
        Children::Keep => Ok(Applied::Done),
        Children::Patch(patch) => {
            info!(%patch, "updating the Job");
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            jobs.patch(&name, &params, &Patch::Merge(patch))
                .await
                .map_err(error::apply(key, "patching the Job"))?;
            Ok(Applied::Done)
        }
        Children::Create { config_maps, job } => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let config_map_api: Api<ConfigMap> =
                Api::namespaced(context.client.clone(), &namespace);
            for config_map in config_maps {
                config_map_api
                    .patch(&config_map.name_any(), &params, &Patch::Apply(config_map))
                    .await
                    .map_err(error::apply(key, "applying an input-list ConfigMap"))?;
            }
            let applied = jobs
                .patch(&name, &params, &Patch::Apply(job.as_ref()))
                .await
                .map_err(error::apply(key, "applying the Job"))?;
            if plan::is_controlled_by(&applied, analysis_job) {
                Ok(Applied::Done)
            } else {
                Ok(Applied::NameTaken)
            }
        }
    }
}
