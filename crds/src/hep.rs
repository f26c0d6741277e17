//! The HEP layer of the AnalysisJob spec: platforms, CMSSW, `/cvmfs` with pins, outputs,
//! GPUs, input splitting and HTCondor-style run-time limits.
//!
//! Each type is the part of the spec a physicist knows from HTCondor submit files, CRAB
//! configurations or the `cmssw-el8` wrappers, with the equivalent named in its doc comment
//! (the `kubectl explain` text). Everything that can be checked without the cluster's
//! configuration is checked at admission by the schema and CEL rules attached here; what
//! needs the configuration (is the platform configured? can the CVMFS provider pin?) is
//! checked by the operator, which reports it as a condition and an Event.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, HostPathVolumeSource, PersistentVolumeClaimVolumeSource,
};
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::analysis_job::{Rule, set_rules};

/// Repository that `cmssw` implies.
pub const CMS_REPOSITORY: &str = "cms.cern.ch";

/// Largest number of input files given inline in the spec; longer lists go into a
/// ConfigMap (`inputs.fromConfigMap`).
pub const MAX_INLINE_INPUT_FILES: usize = 5_000;

/// HTCondor `+JobFlavour` names and their run-time limits in seconds.
pub const JOB_FLAVOURS: &[(&str, i64)] = &[
    ("espresso", 20 * 60),
    ("microcentury", 60 * 60),
    ("longlunch", 2 * 60 * 60),
    ("workday", 8 * 60 * 60),
    ("tomorrow", 24 * 60 * 60),
    ("testmatch", 3 * 24 * 60 * 60),
    ("nextweek", 7 * 24 * 60 * 60),
];

/// CEL pattern of a CVMFS repository name: a DNS name with at least one dot.
const REPOSITORY_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$";

/// A CMSSW release set up before the user's commands, as `cmsrel` and `cmsenv` would.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cmssw {
    /// Release name, e.g. `CMSSW_13_0_13` or `CMSSW_10_6_30_patch1`.
    #[schemars(length(min = 1, max = 128), transform = release_rules)]
    pub release: String,
    /// SCRAM architecture, e.g. `el8_amd64_gcc11` or `slc7_amd64_gcc700`.
    #[schemars(length(min = 1, max = 64), transform = scram_arch_rules)]
    pub scram_arch: String,
}

/// Where a shard writes its results: `$ANALYSIS_OUTDIR`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// Absolute path in the container, exported as `ANALYSIS_OUTDIR`, e.g. `/output`.
    #[schemars(length(min = 2, max = 4096), transform = output_path_rules)]
    pub path: String,
    /// What is mounted there; absent: an empty directory that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<OutputVolume>,
}

/// The storage behind `output.path`; exactly one source.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = output_volume_rules)]
pub struct OutputVolume {
    /// A PersistentVolumeClaim in the AnalysisJob's namespace (shared by all shards: write
    /// to a per-shard file name, e.g. with `$HEPBATCH_SHARD_INDEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A directory of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    /// A scratch directory removed with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
}

/// The CVMFS repositories a shard sees under `/cvmfs`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cvmfs_rules)]
pub struct Cvmfs {
    /// Repositories mounted at `/cvmfs/<name>`, e.g. `[cms.cern.ch, sft.cern.ch]`. Absent:
    /// every repository, mounted on first access (as autofs does on lxplus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"), transform = repositories_rules)]
    pub repositories: Option<Vec<String>>,
    /// Repositories shown at a fixed revision instead of the latest: repository name →
    /// one of `tag`, `date` or `rootHash`. Needs the `csi` CVMFS provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32), transform = pin_keys_rules)]
    pub pin: Option<BTreeMap<String, Pin>>,
    /// Whether all shards see the same software: `Node` (default) or `Fleet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

impl Cvmfs {
    /// Whether the whole fleet of shards is pinned to the revisions current at the start.
    pub fn is_fleet(&self) -> bool {
        self.consistency == Some(Consistency::Fleet)
    }
}

/// Whether all shards see the same software. `Node` (default): each shard sees the
/// revision its node's CVMFS client has when the shard starts, so shards starting hours
/// apart may run different software. `Fleet`: when the AnalysisJob starts, the operator
/// resolves the current revision of each listed repository and pins every shard to it
/// (repositories with a `pin` keep theirs); `status.cvmfs.revisions` records what was used,
/// so a rerun can pin exactly that software. `Fleet` needs `repositories` and the csi CVMFS
/// provider.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Consistency {
    /// Each shard sees whatever revision its node's CVMFS client has.
    #[default]
    Node,
    /// Every shard sees the revision that was current when the AnalysisJob started.
    Fleet,
}

/// One fixed revision of a repository; exactly one field.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = pin_rules)]
pub struct Pin {
    /// A named snapshot (CVMFS tag), e.g. `v2` or `generic-2025-06-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), transform = tag_rules)]
    pub tag: Option<String>,
    /// The revision that was current at this time, ISO-8601 in UTC, e.g.
    /// `2025-06-01T00:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 20, max = 20), transform = date_rules)]
    pub date: Option<String>,
    /// The revision with this root catalog hash (hex, as `cvmfs_talk revision` and
    /// `status.cvmfs.revisions` of a `Fleet` AnalysisJob show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 40, max = 128), transform = root_hash_rules)]
    pub root_hash: Option<String>,
}

/// GPU vendors with a device plugin.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// NVIDIA (`nvidia.com/gpu`, MIG and shared variants; GPU Feature Discovery labels).
    #[default]
    Nvidia,
    /// AMD (`amd.com/gpu`).
    Amd,
    /// Intel (`gpu.intel.com/i915` or `gpu.intel.com/xe`).
    Intel,
}

/// The kernel driver an Intel GPU is exposed with.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntelDriver {
    /// `gpu.intel.com/i915`.
    #[default]
    I915,
    /// `gpu.intel.com/xe`.
    Xe,
}

/// GPUs per shard, in HTCondor terms `request_gpus`, `gpus_minimum_memory`,
/// `gpus_minimum_capability`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = gpu_rules)]
pub struct GpuRequest {
    /// GPUs per shard (default 1).
    #[serde(default = "default_gpu_count")]
    #[schemars(range(min = 1, max = 64))]
    pub count: i32,
    /// `nvidia` (default), `amd` or `intel`.
    #[serde(default)]
    pub vendor: GpuVendor,
    /// Least memory per GPU, a quantity such as `40Gi` (NVIDIA; matched against the
    /// `nvidia.com/gpu.memory` label of GPU Feature Discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), transform = gpu_memory_rules)]
    pub min_memory: Option<String>,
    /// Least CUDA compute capability, `major.minor`, e.g. `8.0` (NVIDIA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), transform = compute_capability_rules)]
    pub min_compute_capability: Option<String>,
    /// Acceptable GPU models as GPU Feature Discovery names them
    /// (`nvidia.com/gpu.product`), e.g. `NVIDIA-A100-SXM4-80GB` (NVIDIA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub products: Option<Vec<String>>,
    /// A MIG slice instead of a whole GPU, e.g. `1g.10gb` (NVIDIA, mixed strategy:
    /// `nvidia.com/mig-1g.10gb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), transform = mig_rules)]
    pub mig: Option<String>,
    /// A time-sliced share of a GPU (`nvidia.com/gpu.shared`) instead of a whole one
    /// (NVIDIA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// Intel only: the driver the GPUs are exposed with (default `i915`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_driver: Option<IntelDriver>,
}

/// Input files split over shards, as CRAB's `FileBased` splitting does.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = inputs_rules)]
pub struct Inputs {
    /// The files (LFNs, `root://` URLs or paths), in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 5000), inner(length(min = 1, max = 4096)))]
    pub files: Option<Vec<String>>,
    /// A ConfigMap key holding the files, one per line (blank lines and lines starting
    /// with `#` ignored); read once, when the AnalysisJob is first reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_config_map: Option<ConfigMapKey>,
    /// Files per shard (CRAB's `unitsPerJob`); the shard count is
    /// ceil(files / filesPerShard). Default 1.
    #[serde(default = "default_files_per_shard")]
    #[schemars(range(min = 1, max = 100_000))]
    pub files_per_shard: i32,
}

/// A key of a ConfigMap in the AnalysisJob's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_gpu_count() -> i32 {
    1
}

fn default_files_per_shard() -> i32 {
    1
}

/// Seconds of a `maxRuntime` value: an HTCondor JobFlavour name or a duration such as
/// `90m`, `2h`, `1h30m`, `3600s`, `2d`. `None` when the value is neither.
pub fn max_runtime_seconds(value: &str) -> Option<i64> {
    if let Some((_, seconds)) = JOB_FLAVOURS.iter().find(|(name, _)| *name == value) {
        return Some(*seconds);
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut units = 0;
    for c in value.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let amount: i64 = number.parse().ok()?;
        total = total.checked_add(amount.checked_mul(unit)?)?;
        number.clear();
        units += 1;
    }
    (number.is_empty() && units > 0 && total > 0).then_some(total)
}

/// CEL pattern of a `maxRuntime` value (kept in step with [`max_runtime_seconds`]).
pub fn max_runtime_pattern() -> String {
    let flavours: Vec<&str> = JOB_FLAVOURS.iter().map(|(name, _)| *name).collect();
    format!("^({}|([0-9]+[smhd])+)$", flavours.join("|"))
}

/// The rules of `spec.maxRuntime`.
pub(crate) fn max_runtime_rules(schema: &mut Schema) {
    let flavours: Vec<&str> = JOB_FLAVOURS.iter().map(|(name, _)| *name).collect();
    set_rules(
        schema,
        &[Rule::new(
            format!("self.matches('{}')", max_runtime_pattern()),
            format!(
                "spec.maxRuntime must be an HTCondor JobFlavour ({}) or a duration such as \
                 90m, 2h, 1h30m or 2d",
                flavours.join(", ")
            ),
        )],
    );
}

/// Operating-system families whose names end in their Enterprise Linux major version,
/// as they begin SCRAM architectures (`slc7_…`, `cc8_…`, `cs9_…`, `el9_…`) and platform
/// names (`cc7`, `el8`, `alma9`).
pub const EL_FAMILIES: &[&str] = &["slc", "cc", "cs", "el", "alma", "rhel", "rocky", "centos"];

/// The platforms the schema knows, with the Enterprise Linux major version each runs;
/// other platforms are the cluster admin's, checked by the operator.
pub const KNOWN_PLATFORMS: &[(&str, u32)] = &[("cc7", 7), ("el8", 8), ("el9", 9)];

/// The Enterprise Linux major version the OS at the start of `name` is of: a SCRAM
/// architecture (`slc7_amd64_gcc700` → 7) or a platform name (`el9` → 9, `alma9-gpu` →
/// 9); `None` when that OS is not of an [`EL_FAMILIES`] family.
pub fn el_major(name: &str) -> Option<u32> {
    let os = name.split(['_', '-']).next()?;
    let digits = os.find(|c: char| c.is_ascii_digit())?;
    let (family, major) = os.split_at(digits);
    if !EL_FAMILIES.contains(&family) {
        return None;
    }
    major.parse().ok()
}

/// The rule that the SCRAM architecture's OS is the platform's: a release built for
/// one EL major version does not run on another. Only for the [`KNOWN_PLATFORMS`] and
/// architectures of an [`EL_FAMILIES`] OS; the operator checks the others.
pub(crate) fn platform_scram_arch_rule() -> Rule {
    let platforms = KNOWN_PLATFORMS
        .iter()
        .map(|(name, _)| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let families = EL_FAMILIES.join("|");
    let by_major = |pairs: &mut dyn Iterator<Item = (u32, String)>| {
        let entries = pairs
            .map(|(major, value)| format!("'{major}': '{value}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{{{entries}}}")
    };
    let platform_of = by_major(&mut KNOWN_PLATFORMS.iter().map(|(n, m)| (*m, (*n).to_owned())));
    let major = |field: &str| format!("{field}.find('[0-9]+')");
    let (arch, platform) = (major("self.cmssw.scramArch"), major("self.platform"));
    Rule {
        rule: format!(
            "!has(self.cmssw) || !has(self.platform) || !(self.platform in [{platforms}]) || \
             !self.cmssw.scramArch.matches('^({families})[0-9]+_') || {arch} == {platform}"
        ),
        message: "spec.cmssw.scramArch must be built for the OS of spec.platform (slc7_… for \
                  cc7, el8_… for el8, el9_… for el9)"
            .to_owned(),
        message_expression: Some(format!(
            "'spec.cmssw.scramArch ' + self.cmssw.scramArch + ' is built for EL' + {arch} + \
             ' but spec.platform ' + self.platform + ' is EL' + {platform} + \
             ': choose a scramArch of EL' + {platform} + ' (the release must exist for it)' + \
             ({arch} in {platform_of} ? ' or spec.platform ' + {platform_of}[{arch}] : '')"
        )),
    }
}

/// The rules of `spec.platform`.
pub(crate) fn platform_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "spec.platform must be a platform name such as cc7, el8 or el9 (lowercase \
             letters, digits and '-')",
        )],
    );
}

fn release_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^CMSSW_[0-9]+_[0-9]+_[0-9]+(_[A-Za-z0-9]+)*$')",
            "spec.cmssw.release must be a CMSSW release name such as CMSSW_13_0_13 or \
             CMSSW_10_6_30_patch1",
        )],
    );
}

fn scram_arch_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[a-z]+[0-9]+_(amd64|aarch64|ppc64le)_gcc[0-9]+$')",
            "spec.cmssw.scramArch must be a SCRAM architecture such as el8_amd64_gcc11 or \
             slc7_amd64_gcc700 (<os>_<cpu>_<compiler>)",
        )],
    );
}

fn output_path_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[
            Rule::new(
                "self.startsWith('/') && !self.contains('/../') && !self.endsWith('/..')",
                "spec.output.path must be an absolute path (start with /, no ..)",
            ),
            Rule::new(
                "!(self == '/cvmfs' || self.startsWith('/cvmfs/'))",
                "spec.output.path must not lie under /cvmfs, which is read-only",
            ),
        ],
    );
}

fn output_volume_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "(has(self.persistentVolumeClaim) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) + \
             (has(self.emptyDir) ? 1 : 0) == 1",
            "spec.output.volume needs exactly one of persistentVolumeClaim, hostPath or \
             emptyDir",
        )],
    );
}

fn repositories_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            format!("self.all(r, r.matches('{REPOSITORY_PATTERN}'))"),
            "spec.cvmfs.repositories must be CVMFS repository names such as cms.cern.ch \
             (lowercase DNS names, no '/')",
        )],
    );
}

fn pin_keys_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            format!("self.all(r, size(r) <= 253 && r.matches('{REPOSITORY_PATTERN}'))"),
            "spec.cvmfs.pin keys must be CVMFS repository names such as cms.cern.ch",
        )],
    );
}

fn cvmfs_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[
            Rule::new(
                "!has(self.pin) || !has(self.repositories) || \
             self.pin.all(r, r in self.repositories)",
                "spec.cvmfs.pin names a repository that is not in spec.cvmfs.repositories; add \
             it to the list or remove the pin",
            ),
            Rule::new(
                "!has(self.consistency) || self.consistency != 'Fleet' || has(self.repositories)",
                "spec.cvmfs.consistency: Fleet needs spec.cvmfs.repositories: the revision of \
                 each listed repository is resolved when the AnalysisJob starts, and every \
                 repository on demand cannot be resolved ahead; list the repositories or use \
                 consistency: Node",
            ),
        ],
    );
}

fn pin_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "(has(self.tag) ? 1 : 0) + (has(self.date) ? 1 : 0) + \
             (has(self.rootHash) ? 1 : 0) == 1",
            "a spec.cvmfs.pin entry needs exactly one of tag, date or rootHash",
        )],
    );
}

fn tag_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",
            "a pinned tag must be letters, digits, '.', '_' or '-', e.g. v2",
        )],
    );
}

fn date_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$') && \
             timestamp(self) < timestamp('9999-12-31T00:00:00Z')",
            "a pinned date must be ISO-8601 in UTC, e.g. 2025-06-01T00:00:00Z",
        )],
    );
}

fn root_hash_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[0-9a-f]+(-rmd160|-shake128)?$')",
            "a pinned rootHash must be lowercase hexadecimal, optionally followed by -rmd160 \
             or -shake128 (as status.cvmfs.revisions and cvmfs_talk revision show it)",
        )],
    );
}

fn gpu_memory_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[
            Rule::new(
                "isQuantity(self)",
                "spec.resources.gpu.minMemory must be a quantity such as 40Gi",
            ),
            Rule::new(
                "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
                "spec.resources.gpu.minMemory must be larger than zero",
            ),
        ],
    );
}

fn compute_capability_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[0-9]{1,2}\\\\.[0-9]$')",
            "spec.resources.gpu.minComputeCapability must be major.minor, e.g. 8.0",
        )],
    );
}

fn mig_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[1-7]g\\\\.[0-9]+gb$')",
            "spec.resources.gpu.mig must be a MIG profile such as 1g.10gb or 3g.40gb",
        )],
    );
}

fn gpu_rules(schema: &mut Schema) {
    let nvidia_only = |field: &str| {
        Rule::new(
            format!("self.vendor == 'nvidia' || !has(self.{field})"),
            format!(
                "spec.resources.gpu.{field} is only known for NVIDIA GPUs (GPU Feature \
                 Discovery); remove it or use vendor: nvidia"
            ),
        )
    };
    set_rules(
        schema,
        &[
            nvidia_only("minMemory"),
            nvidia_only("minComputeCapability"),
            nvidia_only("products"),
            nvidia_only("mig"),
            nvidia_only("shared"),
            Rule::new(
                "self.vendor == 'intel' || !has(self.intelDriver)",
                "spec.resources.gpu.intelDriver applies to vendor: intel only",
            ),
            Rule::new(
                "!has(self.mig) || self.count == 1",
                "spec.resources.gpu.mig asks for a MIG slice, and a CUDA process uses only \
                 one: set count to 1, or ask for whole GPUs without mig",
            ),
            Rule::new(
                "!(has(self.mig) && has(self.shared) && self.shared)",
                "spec.resources.gpu.mig and shared exclude each other: a MIG slice or a \
                 time-shared GPU",
            ),
            Rule::new(
                "!has(self.mig) || !has(self.minMemory)",
                "spec.resources.gpu.minMemory does not apply to a MIG slice, whose memory is \
                 in its profile (e.g. 3g.40gb)",
            ),
        ],
    );
}

fn inputs_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "has(self.files) != has(self.fromConfigMap)",
            "spec.inputs needs exactly one of files or fromConfigMap",
        )],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_and_durations_convert_to_seconds() {
        assert_eq!(max_runtime_seconds("espresso"), Some(1200));
        assert_eq!(max_runtime_seconds("nextweek"), Some(604_800));
        assert_eq!(max_runtime_seconds("90m"), Some(5400));
        assert_eq!(max_runtime_seconds("1h30m"), Some(5400));
        assert_eq!(max_runtime_seconds("2d"), Some(172_800));
        for bad in ["", "0s", "90", "m", "1.5h", "2w", "espresso2", "-1h"] {
            assert_eq!(max_runtime_seconds(bad), None, "{bad}");
        }
    }
}
