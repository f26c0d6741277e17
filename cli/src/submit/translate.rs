//! From a parsed submit description to an AnalysisJob: a pure mapping.
//!
//! - `queue N` → `shards: N`; `queue <vars> from <file>` / `in (...)` → `inputs.files`,
//!   one item per shard, so `$HEPBATCH_INPUT_FILES` holds the shard's item line.
//! - `$(Process)`, `$(ProcId)`, `$(ItemIndex)`, `$(Row)`, `$(Step)` → the shard index;
//!   `$(Cluster)`/`$(ClusterId)` → the AnalysisJob's name; the queue variables → the
//!   shard's item; other macros defined in the file are expanded.
//! - Without item variables the program runs as `command`/`args` (Kubernetes expands
//!   `$(HEPBATCH_SHARD_INDEX)` there). With them it runs from a generated bash `script`
//!   that reads the item line and `exec`s the program with the same words.
//! - Sizes follow HTCondor's units; GPU demands become `resources.gpu`; `+JobFlavour`
//!   and `+MaxRuntime` become `maxRuntime`; OS choices (`+WantOS`, `+WantSL7`, ...) a
//!   platform, unless an image is given.
//! - Every command that is not translated is a [`Warning`] with its line.

use std::collections::BTreeSet;

use hepbatch_crds::analysis_job::MAX_RETRIES_PER_SHARD;
use hepbatch_crds::hep::{JOB_FLAVOURS, MAX_INLINE_INPUT_FILES, max_runtime_seconds};
use hepbatch_crds::{AnalysisJob, AnalysisJobSpec};
use serde_json::{Map, Value, json};

use super::SubmitError;
use super::parse::{Command, Description, ItemSource, Warning};
use super::value::{self, DefaultUnit};

/// What the translation needs beside the description.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The AnalysisJob's name; absent: `batch_name`, else `fallback_name`.
    pub name: Option<String>,
    /// Name to use when neither `name` nor `batch_name` gives one (the file's stem).
    pub fallback_name: String,
    /// The namespace to put in the metadata, if any.
    pub namespace: Option<String>,
    /// The lines of the `queue ... from <file>` file, read by the caller.
    pub items_file: Option<Vec<String>>,
    /// Platform to use when the description names no image and no OS.
    pub default_platform: Option<String>,
}

/// The AnalysisJob and what of the description it does not carry.
#[derive(Clone, Debug)]
pub struct Translation {
    /// The equivalent AnalysisJob.
    pub analysis_job: AnalysisJob,
    /// Commands and lines not translated, in line order.
    pub warnings: Vec<Warning>,
}

/// Environment variable with the shard index, as Kubernetes and bash reference it.
const SHARD_INDEX: &str = hepbatch_crds::analysis_job::SHARD_ENV;

/// Commands the translation reads.
const TRANSLATED: &[&str] = &[
    "universe",
    "executable",
    "arguments",
    "args",
    "environment",
    "request_cpus",
    "request_memory",
    "request_disk",
    "request_gpus",
    "require_gpus",
    "gpus_minimum_memory",
    "gpus_minimum_capability",
    "max_retries",
    "+maxruntime",
    "+jobflavour",
    "docker_image",
    "container_image",
    "+singularityimage",
    "batch_name",
];

/// Commands that are understood but have no AnalysisJob equivalent, with what to do.
const NOT_TRANSLATED: &[(&[&str], &str)] = &[
    (
        &["output", "error", "stream_output", "stream_error"],
        "stdout and stderr stay in the shard's pod log: `kubectl hepbatch logs <aj> --shard N`",
    ),
    (
        &["log"],
        "the AnalysisJob's status and events replace the job event log: `kubectl hepbatch \
         status` and `watch`",
    ),
    (
        &[
            "should_transfer_files",
            "when_to_transfer_output",
            "transfer_input_files",
            "transfer_output_files",
            "transfer_output_remaps",
            "transfer_executable",
        ],
        "files are not transferred: read inputs from /cvmfs, xrootd or a volume and write \
         results to spec.output",
    ),
    (
        &["requirements", "rank"],
        "machine requirements are not translated: use spec.nodeSelector or spec.affinity \
         (GPU properties: require_gpus)",
    ),
    (
        &["notification", "notify_user"],
        "no e-mail: `kubectl hepbatch watch <aj>` exits when the AnalysisJob finishes",
    ),
    (
        &["getenv"],
        "the submitting shell's environment is not copied: list the variables in environment",
    ),
    (
        &["x509userproxy", "use_x509userproxy"],
        "no proxy is transferred: put it in a Secret and use spec.envFrom or a volume",
    ),
    (
        &[
            "accounting_group",
            "accounting_group_user",
            "+accountinggroup",
            "priority",
        ],
        "accounting and priority are not translated: use spec.queueName (Kueue) or \
         spec.priorityClassName",
    ),
    (
        &["initialdir"],
        "initialdir is a directory of the submit machine: spec.workingDir sets the \
         container's",
    ),
    (
        &[
            "on_exit_remove",
            "on_exit_hold",
            "periodic_remove",
            "periodic_hold",
            "periodic_release",
            "success_exit_code",
            "retry_until",
        ],
        "exit policies are not translated: spec.fatalExitCodes fails a shard at once on \
         the exit codes it lists",
    ),
    (
        &["max_materialize", "max_idle"],
        "use spec.parallelism for how many shards run at once",
    ),
];

/// What a word of a value is made of after macro expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    ShardIndex,
    Item(usize),
}

/// Expands macros, remembering which file-defined macros were used.
struct Expander<'a> {
    description: &'a Description,
    vars: Vec<String>,
    has_items: bool,
    name: String,
    used: BTreeSet<String>,
    warnings: Vec<Warning>,
}

impl Expander<'_> {
    fn expand(&mut self, text: &str, line: usize) -> Vec<Segment> {
        let mut out = Vec::new();
        self.expand_into(text, line, 0, &mut out);
        merge_text(out)
    }

    fn expand_into(&mut self, text: &str, line: usize, depth: usize, out: &mut Vec<Segment>) {
        let mut rest = text;
        while let Some(start) = rest.find("$(") {
            out.push(Segment::Text(rest[..start].to_owned()));
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else {
                out.push(Segment::Text(rest[start..].to_owned()));
                return;
            };
            let name = &after[..end];
            rest = &after[end + 1..];
            self.macro_value(name, line, depth, out);
        }
        out.push(Segment::Text(rest.to_owned()));
    }

    fn macro_value(&mut self, name: &str, line: usize, depth: usize, out: &mut Vec<Segment>) {
        let lower = name.to_ascii_lowercase();
        if let Some(position) = self.vars.iter().position(|v| v.eq_ignore_ascii_case(name)) {
            out.push(Segment::Item(position));
            return;
        }
        match lower.as_str() {
            "process" | "procid" => return out.push(Segment::ShardIndex),
            "itemindex" | "row" | "step" if self.has_items || lower == "step" => {
                // One shard per item, and one step per item: all are the shard's index.
                return out.push(Segment::ShardIndex);
            }
            "cluster" | "clusterid" => return out.push(Segment::Text(self.name.clone())),
            _ => {}
        }
        let defined = self
            .description
            .get(&lower)
            .filter(|c| !c.name.starts_with('+'))
            .map(|c| c.value.clone());
        match defined {
            Some(value) if depth < 16 => {
                self.used.insert(lower);
                self.expand_into(&value, line, depth + 1, out);
            }
            _ => {
                self.warnings.push(Warning {
                    line,
                    message: format!("macro $({name}) has no translation; kept as written"),
                });
                out.push(Segment::Text(format!("$({name})")));
            }
        }
    }
}

fn merge_text(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for segment in segments {
        match (out.last_mut(), segment) {
            (_, Segment::Text(t)) if t.is_empty() => {}
            (Some(Segment::Text(last)), Segment::Text(t)) => last.push_str(&t),
            (_, segment) => out.push(segment),
        }
    }
    out
}

fn uses_items(words: &[Vec<Segment>]) -> bool {
    words
        .iter()
        .flatten()
        .any(|s| matches!(s, Segment::Item(_)))
}

fn uses_shard(words: &[Vec<Segment>]) -> bool {
    words.iter().flatten().any(|s| *s == Segment::ShardIndex)
}

/// A word for `command`/`args`/`env`: Kubernetes expands `$(VAR)`, and `$$` is a `$`.
fn kubernetes_word(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) => t.replace("$(", "$$("),
            Segment::ShardIndex => format!("$({SHARD_INDEX})"),
            // Words with items run from a script; a caller never asks for this.
            Segment::Item(_) => String::new(),
        })
        .collect()
}

/// A bash word: text single-quoted, references double-quoted.
fn shell_word(segments: &[Segment], shell_vars: &[String]) -> String {
    if segments.is_empty() {
        return "''".to_owned();
    }
    segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) => format!("'{}'", t.replace('\'', r"'\''")),
            Segment::ShardIndex => format!("\"${SHARD_INDEX}\""),
            Segment::Item(i) => format!("\"${}\"", shell_vars[*i]),
        })
        .collect()
}

/// A shell variable name for the queue variable `var`.
fn shell_var(var: &str) -> String {
    let cleaned: String = var
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("item_{cleaned}")
}

/// An AnalysisJob name (a DNS label short enough for its pods' names) from `text`.
pub fn job_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name.trim_matches('-').chars().take(50).collect();
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        "analysis".to_owned()
    } else {
        name
    }
}

/// The platform an OS name means: `sl7`, `CentOS7`, `el9`, `alma9`, `rhel8` → cc7, el9,
/// el8; older EL versions → `slc<N>` (a platform the cluster admin must define).
pub fn os_platform(os: &str) -> Option<String> {
    let lower = os.to_ascii_lowercase();
    let digits: String = lower
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    let family = &lower[..lower.find(|c: char| c.is_ascii_digit())?];
    let known = [
        "sl",
        "slc",
        "cc",
        "cs",
        "el",
        "centos",
        "rhel",
        "alma",
        "almalinux",
        "rocky",
    ];
    if !known.contains(&family.trim_end_matches(['-', '_'])) {
        return None;
    }
    match digits.parse::<u32>().ok()? {
        7 => Some("cc7".to_owned()),
        8 => Some("el8".to_owned()),
        9 => Some("el9".to_owned()),
        major @ 4..=6 => Some(format!("slc{major}")),
        major if major >= 10 => Some(format!("el{major}")),
        _ => None,
    }
}

/// The OS a `+Want<OS> = True` or `+WantOS`/`+DESIRED_OS`/`+REQUIRED_OS = "<os>"`
/// command asks for.
fn os_choice(command: &Command) -> Option<Result<String, String>> {
    let attribute = command.name.strip_prefix('+')?;
    let named = [
        "wantos",
        "desired_os",
        "required_os",
        "requestedos",
        "requiredos",
    ];
    if named.contains(&attribute) {
        let os = value::classad_string(&command.value);
        return Some(
            os.split(',')
                .map(str::trim)
                .find_map(os_platform)
                .ok_or(format!(
                    "{} = {} names no OS we know",
                    command.written, command.value
                )),
        );
    }
    let os = attribute.strip_prefix("want")?;
    let platform = os_platform(os)?;
    match value::classad_bool(&command.value) {
        Some(true) => Some(Ok(platform)),
        Some(false) => None,
        None => Some(Err(format!(
            "{} = {} is not True or False",
            command.written, command.value
        ))),
    }
}

/// The image an HTCondor container reference means: `docker://repo:tag` → `repo:tag`,
/// an unpacked image on `/cvmfs/unpacked.cern.ch/<registry>/<repo>:<tag>` → that image;
/// a `.sif` file or another path has no equivalent.
pub fn container_image(reference: &str) -> Result<String, String> {
    let reference = value::classad_string(reference);
    if let Some(image) = reference.strip_prefix("docker://") {
        return Ok(image.to_owned());
    }
    if let Some(unpacked) = reference.strip_prefix("/cvmfs/unpacked.cern.ch/") {
        let image = unpacked.trim_end_matches('/');
        let image = image
            .strip_prefix("registry.hub.docker.com/")
            .unwrap_or(image);
        if !image.is_empty() {
            return Ok(image.to_owned());
        }
    }
    if reference.starts_with('/') || reference.ends_with(".sif") {
        return Err(format!(
            "{reference} is an Apptainer image file; an AnalysisJob runs an OCI image: push \
             it to a registry and name it"
        ));
    }
    if reference.is_empty() || reference.contains(char::is_whitespace) {
        return Err(format!("`{reference}` is not an image reference"));
    }
    Ok(reference)
}

/// The CVMFS repositories that paths in `texts` name (`/cvmfs/cms.cern.ch/...` →
/// `cms.cern.ch`), in order of first mention.
pub fn cvmfs_repositories(texts: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for text in texts {
        for (at, _) in text.match_indices("/cvmfs/") {
            let rest = &text[at + "/cvmfs/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            let name = name.to_ascii_lowercase();
            if name.contains('.') && !name.ends_with('.') && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

/// GPU demands of a `require_gpus` expression: `Capability >= 8.0 && GlobalMemoryMb >=
/// 40000`; other clauses are warnings.
fn require_gpus(expression: &str) -> (Option<String>, Option<String>, Vec<String>) {
    let mut capability = None;
    let mut memory = None;
    let mut rest = Vec::new();
    for clause in expression.split("&&").map(str::trim) {
        let clause = clause.trim_matches(|c| c == '(' || c == ')').trim();
        let parsed = clause.split_once(">=").map(|(a, b)| (a.trim(), b.trim()));
        match parsed {
            Some((attribute, number)) if attribute.eq_ignore_ascii_case("Capability") => {
                match compute_capability(number) {
                    Some(c) => capability = Some(c),
                    None => rest.push(clause.to_owned()),
                }
            }
            Some((attribute, number)) if attribute.eq_ignore_ascii_case("GlobalMemoryMb") => {
                match value::size(number, DefaultUnit::Mebi) {
                    Ok(m) => memory = Some(m),
                    Err(_) => rest.push(clause.to_owned()),
                }
            }
            _ => rest.push(clause.to_owned()),
        }
    }
    (capability, memory, rest)
}

/// `8` or `8.0` or `7.5` as `major.minor`.
fn compute_capability(number: &str) -> Option<String> {
    let number = value::classad_string(number);
    let (major, minor) = number.split_once('.').unwrap_or((&number, "0"));
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    (major < 100 && minor < 10).then(|| format!("{major}.{minor}"))
}

/// Translates `description` into an AnalysisJob.
pub fn translate(description: &Description, options: &Options) -> Result<Translation, SubmitError> {
    let mut warnings = description.warnings.clone();
    let name = options
        .name
        .clone()
        .or_else(|| {
            description
                .get("batch_name")
                .map(|c| value::classad_string(&c.value))
        })
        .map(|n| job_name(&n))
        .unwrap_or_else(|| job_name(&options.fallback_name));
    let queue = &description.queue;
    let items: Option<Vec<String>> = match &queue.items {
        None => None,
        Some(ItemSource::List(list)) => Some(list.clone()),
        Some(ItemSource::File(file)) => Some(
            options
                .items_file
                .clone()
                .ok_or_else(|| SubmitError::ItemsNotRead(file.clone()))?,
        ),
    };
    if let Some(items) = &items {
        if items.is_empty() {
            return Err(SubmitError::UnsupportedQueue {
                line: queue.line,
                message: "the item list is empty: no shard to run".to_owned(),
            });
        }
        if items.len() > MAX_INLINE_INPUT_FILES {
            return Err(SubmitError::UnsupportedQueue {
                line: queue.line,
                message: format!(
                    "{} items: at most {MAX_INLINE_INPUT_FILES} fit into the AnalysisJob; put \
                     them into a ConfigMap and use spec.inputs.fromConfigMap",
                    items.len()
                ),
            });
        }
    }
    let mut expander = Expander {
        description,
        vars: if items.is_some() {
            queue.vars.clone()
        } else {
            Vec::new()
        },
        has_items: items.is_some(),
        name: name.clone(),
        used: BTreeSet::new(),
        warnings: Vec::new(),
    };
    let bad = |command: &Command, message: String| SubmitError::BadValue {
        line: command.line,
        command: command.written.clone(),
        message,
    };

    let mut spec = Map::new();

    // Universe, image and platform.
    let universe = description
        .get("universe")
        .map(|c| (c, c.value.to_ascii_lowercase()));
    if let Some((command, universe)) = &universe
        && !["vanilla", "docker", "container"].contains(&universe.as_str())
    {
        warnings.push(Warning {
            line: command.line,
            message: format!(
                "universe {universe} is not translated: every shard runs as a container"
            ),
        });
    }
    let image_command = ["docker_image", "container_image", "+singularityimage"]
        .iter()
        .filter_map(|n| description.get(n))
        .max_by_key(|c| c.line);
    let mut image = None;
    if let Some(command) = image_command {
        match container_image(&command.value) {
            Ok(i) => image = Some(i),
            Err(message) => warnings.push(Warning {
                line: command.line,
                message,
            }),
        }
    }
    let mut platform = None;
    for command in &description.commands {
        match os_choice(command) {
            None => {}
            Some(Err(message)) => warnings.push(Warning {
                line: command.line,
                message,
            }),
            Some(Ok(p)) if image.is_some() => warnings.push(Warning {
                line: command.line,
                message: format!(
                    "{} (platform {p}) is not used: the image decides the OS",
                    command.written
                ),
            }),
            Some(Ok(p)) => {
                if !["cc7", "el8", "el9"].contains(&p.as_str()) {
                    warnings.push(Warning {
                        line: command.line,
                        message: format!(
                            "{} asks for platform {p}, not a built-in one: the cluster admin \
                             must configure it",
                            command.written
                        ),
                    });
                }
                platform = Some(p);
            }
        }
    }
    match (image, platform.or_else(|| options.default_platform.clone())) {
        (Some(image), _) => {
            spec.insert("image".into(), json!(image));
        }
        (None, Some(platform)) => {
            spec.insert("platform".into(), json!(platform));
        }
        (None, None) => return Err(SubmitError::NoImage),
    }

    // The program.
    let executable = description.get("executable");
    let arguments = description
        .get("arguments")
        .or_else(|| description.get("args"));
    let mut program: Vec<Vec<Segment>> = Vec::new();
    if let Some(command) = executable {
        let path = command.value.trim();
        if !path.starts_with('/') && !path.contains("$(") {
            warnings.push(Warning {
                line: command.line,
                message: format!(
                    "executable {path} is a relative path: HTCondor transfers it, an \
                     AnalysisJob does not; build it into the image or give its absolute \
                     path (/cvmfs/...)"
                ),
            });
        }
        program.push(expander.expand(path, command.line));
    }
    let mut args: Vec<Vec<Segment>> = Vec::new();
    if let Some(command) = arguments {
        for word in value::arguments(&command.value).map_err(|m| bad(command, m))? {
            args.push(expander.expand(&word, command.line));
        }
    }
    let mut env: Vec<(String, Vec<Segment>)> = Vec::new();
    if let Some(command) = description.get("environment") {
        for (key, val) in value::environment(&command.value).map_err(|m| bad(command, m))? {
            if key.starts_with(hepbatch_crds::analysis_job::RESERVED_ENV_PREFIX) {
                return Err(bad(
                    command,
                    format!("{key}: names starting with HEPBATCH_ are set by the operator"),
                ));
            }
            let segments = expander.expand(&val, command.line);
            env.push((key, segments));
        }
    }
    let env_words: Vec<Vec<Segment>> = env.iter().map(|(_, s)| s.clone()).collect();
    let needs_script = uses_items(&program) || uses_items(&args) || uses_items(&env_words);
    let script_env = needs_script || uses_shard(&env_words);
    if script_env && executable.is_none() {
        return Err(SubmitError::MacrosNeedExecutable);
    }
    if needs_script || script_env {
        let shell_vars: Vec<String> = expander.vars.iter().map(|v| shell_var(v)).collect();
        let mut script = String::new();
        if !shell_vars.is_empty() {
            let ifs = if shell_vars.len() == 1 { "" } else { ", " };
            script.push_str(&format!(
                "IFS='{ifs}' read -r {} <<<\"$(head -n 1 \"${}\")\"\n",
                shell_vars.join(" "),
                hepbatch_crds::analysis_job::INPUT_FILES_ENV,
            ));
        }
        for (key, segments) in &env {
            script.push_str(&format!(
                "export {key}={}\n",
                shell_word(segments, &shell_vars)
            ));
        }
        let words: Vec<String> = program
            .iter()
            .chain(&args)
            .map(|w| shell_word(w, &shell_vars))
            .collect();
        script.push_str(&format!("exec {}\n", words.join(" ")));
        spec.insert("script".into(), json!(script));
    } else {
        if !program.is_empty() {
            spec.insert(
                "command".into(),
                json!(
                    program
                        .iter()
                        .map(|w| kubernetes_word(w))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if !args.is_empty() {
            spec.insert(
                "args".into(),
                json!(args.iter().map(|w| kubernetes_word(w)).collect::<Vec<_>>()),
            );
        }
        if !env.is_empty() {
            let vars: Vec<Value> = env
                .iter()
                .map(|(k, v)| json!({"name": k, "value": kubernetes_word(v)}))
                .collect();
            spec.insert("env".into(), Value::Array(vars));
        }
    }
    if executable.is_none() && universe.as_ref().is_none_or(|(_, u)| u == "vanilla") {
        return Err(SubmitError::NoExecutable);
    }

    // The CVMFS repositories the program names (HTCondor pools mount /cvmfs everywhere;
    // an AnalysisJob asks for it).
    let named: Vec<&str> = program
        .iter()
        .chain(&args)
        .chain(&env_words)
        .flatten()
        .filter_map(|s| match s {
            Segment::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let repositories = cvmfs_repositories(&named);
    if !repositories.is_empty() {
        spec.insert("cvmfs".into(), json!({"repositories": repositories}));
    }

    // Shards and inputs.
    match &items {
        Some(items) => {
            spec.insert("inputs".into(), json!({"files": items, "filesPerShard": 1}));
        }
        None => {
            spec.insert("shards".into(), json!(queue.count.unwrap_or(1)));
        }
    }

    // Resources.
    let mut resources = Map::new();
    if let Some(command) = description.get("request_cpus") {
        let cpus = value::classad_string(&command.value);
        match cpus.parse::<f64>() {
            Ok(n) if n > 0.0 => {
                resources.insert("cpu".into(), json!(cpus));
            }
            _ => warnings.push(Warning {
                line: command.line,
                message: format!("request_cpus = {cpus} is not a number of cores; not set"),
            }),
        }
    }
    for (name, field, unit) in [
        ("request_memory", "memory", DefaultUnit::Mebi),
        ("request_disk", "ephemeralStorage", DefaultUnit::Kibi),
    ] {
        if let Some(command) = description.get(name) {
            match value::size(&command.value, unit) {
                Ok(q) => {
                    resources.insert(field.into(), json!(q));
                }
                Err(message) => warnings.push(Warning {
                    line: command.line,
                    message: format!("{message}; {name} not set"),
                }),
            }
        }
    }
    let mut gpu = Map::new();
    if let Some(command) = description.get("request_gpus") {
        match value::classad_string(&command.value).parse::<i32>() {
            Ok(0) => {}
            Ok(n) if (1..=64).contains(&n) => {
                gpu.insert("count".into(), json!(n));
            }
            _ => return Err(bad(command, "expected 0 to 64 GPUs".to_owned())),
        }
    }
    if let Some(command) = description.get("require_gpus") {
        let (capability, memory, rest) = require_gpus(&command.value);
        if let Some(c) = capability {
            gpu.insert("minComputeCapability".into(), json!(c));
        }
        if let Some(m) = memory {
            gpu.insert("minMemory".into(), json!(m));
        }
        for clause in rest {
            warnings.push(Warning {
                line: command.line,
                message: format!(
                    "require_gpus clause `{clause}` is not translated (only Capability >= and \
                     GlobalMemoryMb >=)"
                ),
            });
        }
    }
    if let Some(command) = description.get("gpus_minimum_memory") {
        let memory = value::size(&command.value, DefaultUnit::Mebi).map_err(|m| bad(command, m))?;
        gpu.insert("minMemory".into(), json!(memory));
    }
    if let Some(command) = description.get("gpus_minimum_capability") {
        let capability = compute_capability(&command.value)
            .ok_or_else(|| bad(command, "expected a compute capability such as 8.0".into()))?;
        gpu.insert("minComputeCapability".into(), json!(capability));
    }
    if !gpu.is_empty() {
        if !gpu.contains_key("count") {
            let line = description
                .get("request_gpus")
                .or_else(|| description.get("require_gpus"))
                .map_or(queue.line, |c| c.line);
            if description.get("request_gpus").is_some() {
                // request_gpus = 0 with GPU properties: no GPU is asked for.
                warnings.push(Warning {
                    line,
                    message: "GPU properties without request_gpus: no GPU requested".into(),
                });
                gpu.clear();
            } else {
                gpu.insert("count".into(), json!(1));
            }
        }
        if !gpu.is_empty() {
            resources.insert("gpu".into(), Value::Object(gpu));
        }
    }
    if !resources.is_empty() {
        spec.insert("resources".into(), Value::Object(resources));
    }

    // Retries and run time.
    let retries = match description.get("max_retries") {
        None => 0,
        Some(command) => {
            let n = value::classad_string(&command.value)
                .parse::<i32>()
                .map_err(|_| bad(command, "expected a number of retries".to_owned()))?;
            if n > MAX_RETRIES_PER_SHARD {
                warnings.push(Warning {
                    line: command.line,
                    message: format!("max_retries = {n} is capped at {MAX_RETRIES_PER_SHARD}"),
                });
            }
            n.clamp(0, MAX_RETRIES_PER_SHARD)
        }
    };
    spec.insert("maxRetriesPerShard".into(), json!(retries));
    let flavour = description.get("+jobflavour");
    let runtime = description.get("+maxruntime");
    if let Some(command) = runtime {
        let seconds = value::classad_string(&command.value);
        let value = format!("{seconds}s");
        match (seconds.parse::<u64>(), max_runtime_seconds(&value)) {
            (Ok(_), Some(_)) => {
                spec.insert("maxRuntime".into(), json!(value));
            }
            _ => return Err(bad(command, "expected a number of seconds".to_owned())),
        }
        if let Some(flavour) = flavour {
            warnings.push(Warning {
                line: flavour.line,
                message: "+JobFlavour is not used: +MaxRuntime sets the run time".into(),
            });
        }
    } else if let Some(command) = flavour {
        let name = value::classad_string(&command.value).to_ascii_lowercase();
        if JOB_FLAVOURS.iter().any(|(n, _)| *n == name) {
            spec.insert("maxRuntime".into(), json!(name));
        } else {
            return Err(bad(
                command,
                format!(
                    "unknown flavour {name}: one of {}",
                    JOB_FLAVOURS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }

    // Everything else: known without equivalent, a macro definition, or unknown.
    let mut rest_warnings = expander.warnings;
    for command in &description.commands {
        if TRANSLATED.contains(&command.name.as_str()) || os_choice(command).is_some() {
            continue;
        }
        if command.name.starts_with("+want") {
            // `+WantX = False`: nothing asked for.
            continue;
        }
        if let Some((_, why)) = NOT_TRANSLATED
            .iter()
            .find(|(names, _)| names.contains(&command.name.as_str()))
        {
            rest_warnings.push(Warning {
                line: command.line,
                message: format!("{} is not translated: {why}", command.written),
            });
        } else if !expander.used.contains(&command.name) {
            rest_warnings.push(Warning {
                line: command.line,
                message: format!("unknown command {}; ignored", command.written),
            });
        }
    }
    warnings.extend(rest_warnings);
    warnings.sort_by_key(|w| w.line);
    warnings.dedup();

    let spec: AnalysisJobSpec = serde_json::from_value(Value::Object(spec))
        .map_err(|e| SubmitError::Internal(e.to_string()))?;
    let mut analysis_job = AnalysisJob::new(&name, spec);
    analysis_job.metadata.namespace = options.namespace.clone();
    Ok(Translation {
        analysis_job,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_names_map_to_platforms() {
        assert_eq!(os_platform("SL7").as_deref(), Some("cc7"));
        assert_eq!(os_platform("CentOS7").as_deref(), Some("cc7"));
        assert_eq!(os_platform("el9").as_deref(), Some("el9"));
        assert_eq!(os_platform("alma8").as_deref(), Some("el8"));
        assert_eq!(os_platform("rhel8").as_deref(), Some("el8"));
        assert_eq!(os_platform("slc5").as_deref(), Some("slc5"));
        assert_eq!(os_platform("Slc6").as_deref(), Some("slc6"));
        assert_eq!(os_platform("ubuntu22"), None);
        assert_eq!(os_platform("gpus"), None);
    }

    #[test]
    fn container_references() {
        assert_eq!(
            container_image("docker://ubuntu:22.04").unwrap(),
            "ubuntu:22.04"
        );
        assert_eq!(
            container_image("\"/cvmfs/unpacked.cern.ch/registry.hub.docker.com/cmssw/el8:x86_64\"")
                .unwrap(),
            "cmssw/el8:x86_64"
        );
        assert_eq!(
            container_image("/cvmfs/unpacked.cern.ch/gitlab-registry.cern.ch/atlas/athena:22.0")
                .unwrap(),
            "gitlab-registry.cern.ch/atlas/athena:22.0"
        );
        assert!(container_image("/home/me/analysis.sif").is_err());
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(job_name("My Analysis_v2!"), "my-analysis-v2");
        assert_eq!(job_name("___"), "analysis");
        assert_eq!(job_name(&"x".repeat(80)).len(), 50);
    }

    #[test]
    fn words_for_kubernetes_and_bash() {
        let segments = vec![
            Segment::Text("out_".into()),
            Segment::ShardIndex,
            Segment::Text(".root $(HOME) it's".into()),
        ];
        assert_eq!(
            kubernetes_word(&segments),
            "out_$(HEPBATCH_SHARD_INDEX).root $$(HOME) it's"
        );
        assert_eq!(
            shell_word(&segments, &[]),
            r#"'out_'"$HEPBATCH_SHARD_INDEX"'.root $(HOME) it'\''s'"#
        );
        assert_eq!(
            shell_word(&[Segment::Item(0)], &["item_file".into()]),
            "\"$item_file\""
        );
    }

    #[test]
    fn cvmfs_repositories_from_paths() {
        assert_eq!(
            cvmfs_repositories(&[
                "/cvmfs/cms.cern.ch/common/cmsRun",
                "CERTS=/cvmfs/grid.cern.ch/etc:/cvmfs/cms.cern.ch/x",
                "/cvmfs/ /cvmfs/notarepo/",
            ]),
            ["cms.cern.ch", "grid.cern.ch"]
        );
    }

    #[test]
    fn require_gpus_reads_capability_and_memory() {
        let (c, m, rest) =
            require_gpus("Capability >= 8.0 && GlobalMemoryMb >= 40000 && DeviceName == \"A100\"");
        assert_eq!(c.as_deref(), Some("8.0"));
        assert_eq!(m.as_deref(), Some("40000Mi"));
        assert_eq!(rest, ["DeviceName == \"A100\""]);
    }
}
