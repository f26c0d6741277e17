//! The order of one reconcile's requests, against a scripted apiserver (`tower-test`):
//! a new Job's input ConfigMaps are applied before the Job, so no shard starts without its
//! list; a finished fleet's status is written before the Event that announces it, so an
//! Event never tells what `kubectl get aj` does not show yet; a TTL deletion is the only
//! write once the status says the fleet finished. The real-cluster suites check the
//! outcome of these; only here is the order itself seen.

use hepbatch_crds::analysis_job::AnalysisJob;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::nodes::NodeRooms;
use super::{Context, FIELD_MANAGER, reconcile_analysis_job};
use crate::config::{ConfigWatch, OperatorConfig};
use crate::metrics::Metrics;
use crate::pacing::{NotBefore, StatusPacer};

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// What the scripted apiserver answers one request with.
enum Reply {
    /// The request's own body, as a create or apply of a whole object returns it.
    Echo,
    /// This object, with 200.
    Object(Value),
    /// 404 Not Found.
    NotFound,
}

/// One expected request: its method, a path it ends with, and the reply.
struct Step {
    method: Method,
    path: &'static str,
    reply: Reply,
}

fn step(method: Method, path: &'static str, reply: Reply) -> Step {
    Step {
        method,
        path,
        reply,
    }
}

/// Answers the requests in `steps` order, failing on any other, then checks that none
/// follows once every client is dropped.
async fn serve(mut server: ApiServer, steps: Vec<Step>) {
    for (number, step) in steps.into_iter().enumerate() {
        let (request, respond) = server.next_request().await.unwrap_or_else(|| {
            panic!(
                "request {number} ({} …{}) never came",
                step.method, step.path
            )
        });
        let path = request.uri().path().to_owned();
        assert_eq!(
            (request.method(), path.ends_with(step.path)),
            (&step.method, true),
            "request {number}: {} {path}, expected {} …{}",
            request.method(),
            step.method,
            step.path
        );
        if step.method == Method::PATCH
            && request.uri().query().is_some_and(|q| q.contains("force"))
        {
            let query = request.uri().query().unwrap_or_default();
            assert!(
                query.contains(&format!("fieldManager={FIELD_MANAGER}")),
                "{query}"
            );
        }
        let body = request.into_body().collect_bytes().await.expect("a body");
        let (status, body) = match step.reply {
            Reply::Echo => (StatusCode::OK, body.to_vec()),
            Reply::Object(object) => (StatusCode::OK, object.to_string().into_bytes()),
            Reply::NotFound => (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"})
                .to_string()
                .into_bytes(),
            ),
        };
        let response = Response::builder()
            .status(status)
            .body(Body::from(body))
            .expect("a response");
        respond.send_response(response);
    }
    if let Some((request, _)) = server.next_request().await {
        panic!("unexpected {} {}", request.method(), request.uri());
    }
}

/// Reconciles `analysis_job` once against an apiserver that expects exactly `steps`.
async fn reconcile_against(analysis_job: &AnalysisJob, steps: Vec<Step>) {
    let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
    let apiserver = tokio::spawn(serve(server, steps));
    let client = Client::new(service, "physics");
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: Some("test".to_owned()),
    };
    let context = Context {
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Metrics::new(),
        jobs: reflector::store().0,
        failed_pods: reflector::store().0,
        waiting_pods: reflector::store().0,
        config: ConfigWatch::fixed(OperatorConfig::default()),
        pacer: StatusPacer::default(),
        unschedulable_checks: NotBefore::default(),
        refusals: reflector::store().0,
        nodes: NodeRooms::default(),
        client,
    };
    reconcile_analysis_job(analysis_job, &context)
        .await
        .expect("reconciles");
    drop(context);
    apiserver.await.expect("the apiserver saw what it expected");
}

fn analysis_job(spec: Value, status: Option<Value>) -> (AnalysisJob, Value) {
    let mut object = json!({
        "apiVersion": "hepbatch.io/v1alpha1", "kind": "AnalysisJob",
        "metadata": {"name": "higgs", "namespace": "physics", "uid": "u-1", "generation": 1},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    let typed = serde_json::from_value(object.clone()).expect("a valid AnalysisJob");
    (typed, object)
}

/// The Job `higgs` of the AnalysisJob, created a while ago, with this status.
fn finished_job(status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "higgs", "namespace": "physics",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"apiVersion": "hepbatch.io/v1alpha1", "kind": "AnalysisJob",
                "name": "higgs", "uid": "u-1", "controller": true}]},
        "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
            "template": {"spec": {"containers": []}}},
        "status": status,
    })
}

fn complete() -> Value {
    json!({"succeeded": 2, "completedIndexes": "0-1",
        "startTime": "2026-01-01T00:00:01Z", "completionTime": "2026-01-01T00:00:30Z",
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                "lastTransitionTime": "2026-01-01T00:00:30Z"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                "lastTransitionTime": "2026-01-01T00:00:30Z"}]})
}

const JOB: &str = "/apis/batch/v1/namespaces/physics/jobs/higgs";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/physics/events";
const STATUS: &str = "/apis/hepbatch.io/v1alpha1/namespaces/physics/analysisjobs/higgs/status";
const ANALYSIS_JOB: &str = "/apis/hepbatch.io/v1alpha1/namespaces/physics/analysisjobs/higgs";

#[tokio::test]
async fn input_lists_are_applied_before_the_job_and_the_event_comes_last() {
    let (aj, _) = analysis_job(
        json!({"platform": "el9", "script": "true",
            "inputs": {"files": ["a.root", "b.root"], "filesPerShard": 1}}),
        None,
    );
    reconcile_against(
        &aj,
        vec![
            step(Method::GET, JOB, Reply::NotFound),
            step(
                Method::PATCH,
                "/api/v1/namespaces/physics/configmaps/higgs-inputs-0",
                Reply::Echo,
            ),
            step(Method::PATCH, JOB, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_finished_fleet_is_written_before_it_is_announced() {
    let spec = json!({"platform": "el9", "script": "true", "shards": 2});
    let running = json!({"phase": "Running", "shards": 2, "active": 2, "ready": 2,
        "jobName": "higgs", "startTime": "2026-01-01T00:00:01Z", "observedGeneration": 1});
    let (aj, object) = analysis_job(spec, Some(running));
    reconcile_against(
        &aj,
        vec![
            step(Method::GET, JOB, Reply::Object(finished_job(complete()))),
            step(Method::PATCH, STATUS, Reply::Object(object)),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
}

#[tokio::test]
async fn past_its_ttl_a_finished_analysis_job_is_only_deleted() {
    let spec = json!({"platform": "el9", "script": "true", "shards": 2,
        "ttlSecondsAfterFinished": 0});
    let (running, _) = analysis_job(spec.clone(), Some(json!({"phase": "Running"})));
    // The status the operator writes for the finished Job, as it would be stored.
    let finished = crate::status::derive(
        &running,
        Some(&serde_json::from_value(finished_job(complete())).expect("a Job")),
        &[],
    );
    let stored = serde_json::to_value(&finished).expect("serializes");
    let (aj, object) = analysis_job(spec, Some(stored));
    reconcile_against(
        &aj,
        vec![
            step(Method::GET, JOB, Reply::Object(finished_job(complete()))),
            step(Method::DELETE, ANALYSIS_JOB, Reply::Object(object)),
        ],
    )
    .await;
}
