//! A test harness for suites that share one testbed.
//!
//! `cargo test` runs each integration-test file as its own binary. Ours declare
//! `harness = false` and call [`run`] from `main`, which
//! 1. parses the usual libtest arguments (filters, `--list`, `--test-threads`, ...),
//! 2. starts one [`Testbed`] only if some selected test needs it,
//! 3. runs each test on a shared Tokio runtime in a fresh namespace that is deleted
//!    afterwards, under a per-test timeout,
//! 4. prints the tails of the component logs when anything failed, keeps the logs,
//! 5. stops the testbed and exits with libtest's exit code and summary line, or fails
//!    when a real node left anything behind (process, mount, cgroup, namespace, files).

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use libtest_mimic::{Arguments, Failed, Trial};
use rand::distr::{Alphanumeric, SampleString};

use crate::testbed::{NodeFootprint, RealNode, Testbed, TestbedOptions};

/// What a test returns: `Err` with a readable message fails it.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Default time a single test may take.
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything a test gets: the shared testbed, an admin client and its own namespace.
#[derive(Clone)]
pub struct TestContext {
    /// The shared testbed.
    pub testbed: Arc<Testbed>,
    /// An admin client.
    pub client: kube::Client,
    /// A namespace created for this test only.
    pub namespace: String,
}

impl std::fmt::Debug for TestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestContext")
            .field("testbed", &self.testbed)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

type BoxedTest =
    Arc<dyn Fn(TestContext) -> Pin<Box<dyn Future<Output = TestResult> + Send>> + Send + Sync>;

/// One test of a suite.
pub struct Test {
    name: String,
    timeout: Duration,
    body: BoxedTest,
}

/// Declares a test named `name` whose body is the async function `body`.
pub fn test<F, Fut>(name: &str, body: F) -> Test
where
    F: Fn(TestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TestResult> + Send + 'static,
{
    Test {
        name: name.to_owned(),
        timeout: DEFAULT_TEST_TIMEOUT,
        body: Arc::new(move |ctx| Box::pin(body(ctx))),
    }
}

impl Test {
    /// Overrides the per-test timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Runs `tests` against one testbed started with `options` (fake nodes, real nodes,
/// images for them); call from `main`.
pub fn run(options: TestbedOptions, tests: Vec<Test>) -> ExitCode {
    init_tracing();
    let args = Arguments::from_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => Arc::new(runtime),
        Err(error) => {
            eprintln!("cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let selected = tests.iter().any(|t| is_selected(&args, &t.name));
    let testbed = if selected && !args.list {
        eprintln!("starting the testbed ...");
        match runtime.block_on(Testbed::start(options)) {
            Ok(testbed) => {
                eprintln!(
                    "testbed ready in {:.1?} at {}",
                    testbed.started_in(),
                    testbed.server()
                );
                Some(Arc::new(testbed))
            }
            Err(error) => {
                eprintln!("the testbed did not start: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    let trials = tests
        .into_iter()
        .map(|test| {
            let runtime = runtime.clone();
            let testbed = testbed.clone();
            let Test {
                name,
                timeout,
                body,
            } = test;
            let trial_name = name.clone();
            Trial::test(trial_name, move || {
                let Some(testbed) = testbed else {
                    return Err(Failed::from("the testbed is not running"));
                };
                runtime.block_on(run_one(testbed, &name, timeout, body))
            })
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    let mut footprints = Vec::new();
    if let Some(testbed) = testbed {
        if conclusion.has_failed() {
            testbed.keep_logs();
            eprintln!(
                "\ncomponent logs (last 40 lines each):\n{}",
                testbed.log_tails(40)
            );
        }
        footprints = testbed
            .real_nodes()
            .iter()
            .map(RealNode::footprint)
            .collect();
        match Arc::try_unwrap(testbed) {
            Ok(testbed) => drop(testbed),
            Err(_) => eprintln!("testbed still referenced at exit; it stops with the process"),
        }
    }
    let leftovers = leftovers_of(&footprints);
    if !leftovers.is_empty() {
        eprintln!(
            "\nthe real nodes left behind:\n  {}",
            leftovers.join("\n  ")
        );
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

/// What stopped real nodes left on the machine, allowing killed processes a few seconds
/// to be reaped.
fn leftovers_of(footprints: &[NodeFootprint]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = footprints
            .iter()
            .flat_map(|f| {
                f.leftovers()
                    .into_iter()
                    .map(move |item| format!("{}: {item}", f.node))
            })
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn run_one(
    testbed: Arc<Testbed>,
    name: &str,
    timeout: Duration,
    body: BoxedTest,
) -> Result<(), Failed> {
    let client = testbed.client();
    let namespace = create_namespace(&client, name)
        .await
        .map_err(|e| Failed::from(format!("creating the test namespace: {e}")))?;
    let ctx = TestContext {
        testbed,
        client: client.clone(),
        namespace: namespace.clone(),
    };
    let outcome = tokio::time::timeout(timeout, body(ctx)).await;
    let api: Api<Namespace> = Api::all(client);
    let _ = api.delete(&namespace, &DeleteParams::background()).await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Failed::from(error.to_string())),
        Err(_) => Err(Failed::from(format!("test timed out after {timeout:?}"))),
    }
}

/// Creates a namespace named after the test plus a random suffix.
async fn create_namespace(client: &kube::Client, test: &str) -> Result<String, kube::Error> {
    let mut prefix: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    prefix = prefix.trim_matches('-').to_owned();
    let suffix = Alphanumeric
        .sample_string(&mut rand::rng(), 6)
        .to_ascii_lowercase();
    let name = format!("t-{prefix}-{suffix}");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("hepbatch.io/test".to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(name)
}

fn is_selected(args: &Arguments, name: &str) -> bool {
    let matches = |filter: &str| {
        if args.exact {
            name == filter
        } else {
            name.contains(filter)
        }
    };
    let included = args.filter.as_deref().is_none_or(matches);
    let skipped = args.skip.iter().any(|s| matches(s));
    included && !skipped && !args.ignored
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
