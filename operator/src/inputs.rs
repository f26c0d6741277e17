//! Input splitting (CRAB `FileBased`): a file list → shards, and each shard's slice.
//!
//! [`plan`] cuts the list into consecutive slices of `filesPerShard` files (the last one
//! may be shorter), so shard `i` reads files `i*n .. (i+1)*n`, and packs the slices into
//! owned, immutable ConfigMaps `<name>-inputs-<k>` with one key `shard-<i>` per shard (the
//! files one per line). Immutable ConfigMaps are not watched by kubelets, which matters
//! with thousands of pods. All ConfigMaps go into one projected volume at
//! [`INPUTS_MOUNT_PATH`], so the pod template is the same for every index and
//! `HEPBATCH_INPUT_FILES=/etc/hepbatch/inputs/shard-$(HEPBATCH_SHARD_INDEX)` names the
//! shard's own list (Kubernetes expands `$(VAR)` from the variable defined before it).
//!
//! A ConfigMap holds at most 1 MiB; slices are packed up to [`MAX_CONFIG_MAP_BYTES`], and a
//! list that needs more than [`MAX_CONFIG_MAPS`] ConfigMaps, or a single slice larger than
//! one, is rejected with a message that says so — never truncated.

use std::collections::BTreeMap;

use hepbatch_crds::analysis_job::{ANALYSIS_JOB_LABEL, INPUT_FILES_ENV, MAX_SHARDS, SHARD_ENV};
use hepbatch_crds::{AnalysisJob, ShardIndexesError};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, EnvVar, ProjectedVolumeSource, Volume, VolumeMount,
    VolumeProjection,
};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

/// Where the shards' file lists appear in the container.
pub const INPUTS_MOUNT_PATH: &str = "/etc/hepbatch/inputs";

/// Name of the pod volume carrying the file lists.
pub const INPUTS_VOLUME: &str = "hepbatch-inputs";

/// Payload packed into one ConfigMap at most (the apiserver's limit is 1 MiB per object,
/// metadata included).
pub const MAX_CONFIG_MAP_BYTES: usize = 900 * 1024;

/// ConfigMaps one AnalysisJob's inputs may use at most (every pod mounts all of them).
pub const MAX_CONFIG_MAPS: usize = 16;

/// Why an input list cannot be split.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputsError {
    /// Nothing to process.
    #[error("the input list is empty; give at least one file")]
    Empty,
    /// The ConfigMap or key named in `inputs.fromConfigMap` does not exist.
    #[error(
        "spec.inputs.fromConfigMap: ConfigMap {name} with key {key} not found in this namespace; \
         create it (one file per line) and the AnalysisJob starts"
    )]
    Missing {
        /// ConfigMap name.
        name: String,
        /// Key.
        key: String,
    },
    /// More shards than an AnalysisJob may have.
    #[error(
        "{files} files at {per_shard} per shard make {shards} shards, more than {MAX_SHARDS}; \
         raise spec.inputs.filesPerShard"
    )]
    TooManyShards {
        /// Files in the list.
        files: usize,
        /// `filesPerShard`.
        per_shard: i32,
        /// Resulting shards.
        shards: usize,
    },
    /// One shard's list does not fit a ConfigMap.
    #[error(
        "shard {shard}'s file list is {bytes} bytes, more than one ConfigMap holds \
         ({MAX_CONFIG_MAP_BYTES}); lower spec.inputs.filesPerShard"
    )]
    ShardTooLarge {
        /// The shard.
        shard: usize,
        /// Its list's size.
        bytes: usize,
    },
    /// The whole list does not fit the ConfigMaps a pod may mount.
    #[error(
        "the input list is {bytes} bytes and needs more than {MAX_CONFIG_MAPS} ConfigMaps of \
         {MAX_CONFIG_MAP_BYTES} bytes; split it over several AnalysisJobs"
    )]
    ListTooLarge {
        /// The list's size.
        bytes: usize,
    },
    /// `spec.shardIndexes` is not a selection of the shards the list makes.
    #[error(transparent)]
    Selection(#[from] ShardIndexesError),
    /// The AnalysisJob lacks what owned objects need.
    #[error("the AnalysisJob has no namespace or uid")]
    Unowned,
}

impl InputsError {
    /// The reason of the condition that reports this error.
    pub fn reason(&self) -> &'static str {
        match self {
            InputsError::Selection(_) => "InvalidShardIndexes",
            _ => "InvalidInputs",
        }
    }
}

/// The shards and the ConfigMaps carrying their file lists.
#[derive(Clone, Debug, PartialEq)]
pub struct InputPlan {
    /// Number of shards the list makes (the fleet, also when `shardIndexes` selects some).
    pub shards: i32,
    /// The ConfigMaps to apply before the Job.
    pub config_maps: Vec<ConfigMap>,
}

/// The files in a list: one per line; blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Name of the `index`-th inputs ConfigMap of the AnalysisJob `name`.
pub fn config_map_name(name: &str, index: usize) -> String {
    format!("{name}-inputs-{index}")
}

/// Key of shard `shard`'s list.
pub fn shard_key(shard: usize) -> String {
    format!("shard-{shard}")
}

/// Splits `files` into slices of `files_per_shard` and packs them into ConfigMaps owned by
/// `analysis_job`; with `spec.shardIndexes` only the selected shards' slices, under their
/// original keys.
pub fn plan(
    analysis_job: &AnalysisJob,
    files: &[String],
    files_per_shard: i32,
) -> Result<InputPlan, InputsError> {
    if files.is_empty() {
        return Err(InputsError::Empty);
    }
    let per_shard = usize::try_from(files_per_shard.max(1)).unwrap_or(1);
    let shards = files.len().div_ceil(per_shard);
    let shard_count = i32::try_from(shards)
        .ok()
        .filter(|n| *n <= MAX_SHARDS)
        .ok_or(InputsError::TooManyShards {
            files: files.len(),
            per_shard: files_per_shard,
            shards,
        })?;
    let numbering = analysis_job.spec.numbering()?;
    if let Some(selection) = numbering.selection() {
        selection.within(shard_count)?;
    }
    let name = analysis_job.name_any();
    let namespace = analysis_job.namespace().ok_or(InputsError::Unowned)?;
    let owner = analysis_job
        .controller_owner_ref(&())
        .ok_or(InputsError::Unowned)?;

    let slices = files.chunks(per_shard).enumerate().filter(|(shard, _)| {
        i32::try_from(*shard).is_ok_and(|shard| numbering.completion(shard).is_some())
    });
    let packs = pack(slices, files)?;
    let config_maps = packs
        .into_iter()
        .enumerate()
        .map(|(index, data)| ConfigMap {
            metadata: ObjectMeta {
                name: Some(config_map_name(&name, index)),
                namespace: Some(namespace.clone()),
                labels: Some(BTreeMap::from([(
                    ANALYSIS_JOB_LABEL.to_owned(),
                    name.clone(),
                )])),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            immutable: Some(true),
            ..ConfigMap::default()
        })
        .collect();
    Ok(InputPlan {
        shards: shard_count,
        config_maps,
    })
}

/// Packs each shard's list (`shard`, its files) under its key into as few ConfigMap data
/// maps as their size allows.
fn pack<'a>(
    slices: impl Iterator<Item = (usize, &'a [String])>,
    files: &[String],
) -> Result<Vec<BTreeMap<String, String>>, InputsError> {
    let mut packs: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    let mut pack_bytes = 0;
    for (shard, slice) in slices {
        let mut list = slice.join("\n");
        list.push('\n');
        let key = shard_key(shard);
        let bytes = list.len() + key.len();
        if bytes > MAX_CONFIG_MAP_BYTES {
            return Err(InputsError::ShardTooLarge {
                shard,
                bytes: list.len(),
            });
        }
        if pack_bytes + bytes > MAX_CONFIG_MAP_BYTES {
            if packs.len() == MAX_CONFIG_MAPS {
                return Err(InputsError::ListTooLarge {
                    bytes: files.iter().map(|f| f.len() + 1).sum(),
                });
            }
            packs.push(BTreeMap::new());
            pack_bytes = 0;
        }
        pack_bytes += bytes;
        if let Some(pack) = packs.last_mut() {
            pack.insert(key, list);
        }
    }
    Ok(packs)
}

/// The projected volume, its mount and the `HEPBATCH_INPUT_FILES` variable for a plan's
/// ConfigMaps (given by name).
pub fn volume(config_maps: &[String]) -> (Volume, VolumeMount, EnvVar) {
    let volume = Volume {
        name: INPUTS_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(
                config_maps
                    .iter()
                    .map(|name| VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: name.clone(),
                            optional: Some(false),
                            items: None,
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
            default_mode: Some(0o444),
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: INPUTS_VOLUME.to_owned(),
        mount_path: INPUTS_MOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let env = EnvVar {
        name: INPUT_FILES_ENV.to_owned(),
        value: Some(format!("{INPUTS_MOUNT_PATH}/shard-$({SHARD_ENV})")),
        value_from: None,
    };
    (volume, mount, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis_job() -> AnalysisJob {
        hepbatch_crds::testing::analysis_job("zpeak", serde_json::json!({"platform": "el9"}))
            .namespace("cms")
            .uid("u-1")
            .build()
            .expect("valid")
    }

    fn files(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("/store/data/Run2024/file{i}.root"))
            .collect()
    }

    #[test]
    fn lists_parse_one_file_per_line() {
        assert_eq!(
            parse_list("# data\n a.root \n\nb.root\n"),
            vec!["a.root", "b.root"]
        );
    }

    #[test]
    fn every_file_lands_in_exactly_one_shard_in_order() {
        let all = files(1000);
        let plan = plan(&analysis_job(), &all, 3).expect("splits");
        assert_eq!(plan.shards, 334);
        assert_eq!(plan.config_maps.len(), 1);
        let data = plan.config_maps[0].data.clone().expect("data");
        let mut seen = Vec::new();
        for shard in 0..334 {
            seen.extend(parse_list(&data[&shard_key(shard)]));
        }
        assert_eq!(seen, all);
        assert_eq!(parse_list(&data["shard-333"]), vec![all[999].clone()]);
        let config_map = &plan.config_maps[0];
        assert_eq!(config_map.immutable, Some(true));
        assert_eq!(config_map.metadata.name.as_deref(), Some("zpeak-inputs-0"));
        assert_eq!(
            config_map
                .metadata
                .owner_references
                .as_ref()
                .expect("owned")[0]
                .uid,
            "u-1"
        );
    }

    #[test]
    fn large_lists_spread_over_several_config_maps_and_never_truncate() {
        // ~36 bytes per file, 40,000 files ≈ 1.4 MB → 2 ConfigMaps.
        let all = files(40_000);
        let plan = plan(&analysis_job(), &all, 10).expect("splits");
        assert_eq!(plan.shards, 4000);
        assert!(plan.config_maps.len() >= 2, "{}", plan.config_maps.len());
        let mut seen = Vec::new();
        for config_map in &plan.config_maps {
            let bytes: usize = config_map
                .data
                .as_ref()
                .expect("data")
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            assert!(bytes <= MAX_CONFIG_MAP_BYTES);
        }
        for shard in 0..4000 {
            let key = shard_key(shard);
            let holder = plan
                .config_maps
                .iter()
                .find_map(|c| c.data.as_ref().and_then(|d| d.get(&key)))
                .expect("every shard has a list");
            seen.extend(parse_list(holder));
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn too_large_inputs_are_rejected_with_the_reason() {
        let huge: Vec<String> = (0..300_000).map(|i| format!("{i:0>60}")).collect();
        let error = plan(&analysis_job(), &huge, 100).expect_err("too large");
        assert!(matches!(error, InputsError::ListTooLarge { .. }), "{error}");
        assert!(error.to_string().contains("split it over several"));

        let error = plan(&analysis_job(), &huge, 20_000).expect_err("slice too large");
        assert!(
            matches!(error, InputsError::ShardTooLarge { .. }),
            "{error}"
        );

        let error = plan(&analysis_job(), &files(200_001), 1).expect_err("too many shards");
        assert!(
            error
                .to_string()
                .contains("raise spec.inputs.filesPerShard")
        );

        assert_eq!(plan(&analysis_job(), &[], 1), Err(InputsError::Empty));
    }

    #[test]
    fn the_variable_points_at_the_shards_own_list() {
        let (volume, mount, env) = volume(&["zpeak-inputs-0".to_owned()]);
        assert_eq!(
            env.value.as_deref(),
            Some("/etc/hepbatch/inputs/shard-$(HEPBATCH_SHARD_INDEX)")
        );
        assert_eq!(mount.read_only, Some(true));
        let sources = volume
            .projected
            .expect("projected")
            .sources
            .expect("sources");
        assert_eq!(
            sources[0].config_map.as_ref().expect("config map").name,
            "zpeak-inputs-0"
        );
    }
}
