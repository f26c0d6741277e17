//! Tells what the plan decided: Events, the status (server-side applied with the
//! operator's field manager), what the pacer remembers, and the deletion of a finished
//! AnalysisJob whose TTL passed.

use hepbatch_crds::analysis_job::{AnalysisJob, AnalysisJobStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::Resource;
use kube::runtime::events::{Event, EventType};
use kube::{ResourceExt, core::ObjectMeta};
use serde_json::json;
use tracing::{info, warn};

use super::error::{self, Error};
use super::plan::{self, Plan};
use super::{Context, FIELD_MANAGER};
use crate::k8s;
use crate::metrics::ErrorCategory;
use crate::pacing::Pace;
use crate::status;

/// Carries out the reporting part of `plan` for `analysis_job` (`key` is its
/// `namespace/name`).
pub async fn report(
    analysis_job: &AnalysisJob,
    key: &str,
    plan: &Plan,
    context: &Context,
) -> Result<(), Error> {
    let reference = analysis_job.object_ref(&());
    for event in &plan.notes {
        publish(context, &reference, event).await;
    }
    context.pacer.set(key, plan.pace);
    if let Some(write) = &plan.status {
        if write.change.is_none()
            && let Some(accepted) = write
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == status::ACCEPTED_CONDITION)
        {
            warn!(
                reason = accepted.reason,
                message = accepted.message,
                "cannot run the AnalysisJob as it stands"
            );
        }
        write_status(context, analysis_job, &write.status)
            .await
            .map_err(error::report(key, "writing the status"))?;
        if let Some(change) = write.change {
            context.pacer.set(key, Pace::Written);
            context.metrics.observe_status_write(change);
        }
        for event in &write.events {
            publish(context, &reference, event).await;
        }
    }
    if plan.forget {
        context.forget(key);
    }
    if plan.delete {
        delete(analysis_job, key, context).await?;
    }
    Ok(())
}

/// Server-side applies `status` as the AnalysisJob's status.
async fn write_status(
    context: &Context,
    analysis_job: &AnalysisJob,
    status: &AnalysisJobStatus,
) -> Result<(), kube::Error> {
    let namespace = analysis_job.namespace().unwrap_or_default();
    let api: Api<AnalysisJob> = Api::namespaced(context.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": AnalysisJob::api_version(&()),
        "kind": AnalysisJob::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&analysis_job.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Deletes the AnalysisJob whose TTL after finishing passed; already gone is fine.
async fn delete(analysis_job: &AnalysisJob, key: &str, context: &Context) -> Result<(), Error> {
    info!(
        ttl = analysis_job.spec.ttl_seconds_after_finished,
        "TTL after finishing passed; deleting"
    );
    let namespace = analysis_job.namespace().unwrap_or_default();
    let api: Api<AnalysisJob> = Api::namespaced(context.client.clone(), &namespace);
    match api
        .delete(&analysis_job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if k8s::is_not_found(&error) => Ok(()),
        Err(error) => Err(error::report(key, "deleting the finished AnalysisJob")(
            error,
        )),
    }
}

/// Reports an AnalysisJob that cannot be read (a malformed stored object): a Warning
/// Event; the caller waits for it to change.
pub async fn malformed(metadata: &ObjectMeta, invalid: &impl std::fmt::Display, context: &Context) {
    warn!(
        namespace = metadata.namespace.as_deref().unwrap_or_default(),
        name = metadata.name.as_deref().unwrap_or_default(),
        error = %invalid,
        "malformed AnalysisJob; waiting for it to change"
    );
    context.metrics.observe_error(ErrorCategory::Invalid);
    let reference = ObjectReference {
        api_version: Some(AnalysisJob::api_version(&()).into_owned()),
        kind: Some(AnalysisJob::kind(&()).into_owned()),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        action: "Read".to_owned(),
        reason: "Malformed".to_owned(),
        ..plan::note(
            EventType::Warning,
            "Malformed",
            format!("cannot read this AnalysisJob: {invalid}"),
        )
    };
    publish(context, &reference, &event).await;
}

/// Publishes `event`; a failure is logged, not retried.
async fn publish(context: &Context, reference: &ObjectReference, event: &Event) {
    if let Err(error) = context.recorder.publish(event, reference).await {
        warn!(%error, reason = event.reason, "cannot publish an Event");
    }
}
