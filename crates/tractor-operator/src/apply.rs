//! Apply, the last stage of a reconcile: carries out a [`Plan`] through one applier (server-side apply,
//! deletes with preconditions, scale as a patch), every call timed out; publishes its Events; writes the
//! status only when it changed.
#![allow(clippy::disallowed_methods)] // writes through `kube::Api` belong here (and reads in `observe`)

use std::time::Duration;

use crate::events::Event;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};
use tractor_api::ModelDeployment;
use tractor_api::names::{self, FIELD_MANAGER};

use crate::context::Context;
use crate::decide::{Child, Plan, Remember, Write};
use crate::error::{Error, call, is_not_found};
use crate::rbac::{self, Request};
use crate::{children, object_key};

/// How soon to look again after a create found the Job already there (a reconcile racing its own write).
const JOB_EXISTS_REQUEUE: Duration = Duration::from_secs(2);
/// Upper bound on publishing one Event: they are best effort and must not hold a reconcile up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Carries out `plan` for `md`; returns when to reconcile again.
pub async fn apply(md: &ModelDeployment, plan: Plan, ctx: &Context) -> Result<Action, Error> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let key = object_key(md);
    match plan.autoscaler {
        Remember::Keep => {}
        Remember::Store(memory) => ctx.autoscaler.remember(&key, Some(memory)),
        Remember::Forget => ctx.autoscaler.remember(&key, None),
    }
    if let Some(outcome) = &plan.evaluation {
        let result = outcome.result();
        ctx.metrics
            .autoscaler_evaluations
            .with_label_values(&[result])
            .inc();
        info!(%name, %namespace, result, why = %outcome.why, "autoscaler");
    }
    let mut requeue = plan.requeue;
    for write in plan.writes {
        match write {
            Write::CreateJob(job) => {
                if !create_job(ctx, &namespace, *job).await? {
                    requeue = Some(
                        requeue.map_or(JOB_EXISTS_REQUEUE, |sooner| sooner.min(JOB_EXISTS_REQUEUE)),
                    );
                }
            }
            Write::Apply(child) => match *child {
                Child::Service(object) => {
                    server_side_apply(ctx, &namespace, object, rbac::APPLY_SERVICE).await?
                }
                Child::PodDisruptionBudget(object) => {
                    server_side_apply(ctx, &namespace, object, rbac::APPLY_PODDISRUPTIONBUDGET)
                        .await?
                }
                Child::NetworkPolicy(object) => {
                    server_side_apply(ctx, &namespace, object, rbac::APPLY_NETWORKPOLICY).await?
                }
                Child::Deployment(object) => {
                    server_side_apply(ctx, &namespace, object, rbac::APPLY_DEPLOYMENT).await?
                }
                Child::EndpointSlice(object) => {
                    server_side_apply(ctx, &namespace, object, rbac::APPLY_ENDPOINTSLICE).await?
                }
            },
            Write::DeleteEndpointSlices { names } => {
                delete_endpoint_slices(ctx, &namespace, &names).await?
            }
            Write::DeletePodEndpoints { slices } => {
                // First the Endpoints object, so the mirroring controller does not copy it back.
                let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
                match call(
                    rbac::DELETE_ENDPOINTS,
                    &namespace,
                    endpoints.delete(&name, &DeleteParams::default()),
                )
                .await
                {
                    Ok(_) => info!(%name, "Endpoints deleted"),
                    Err(Error::Api { source, .. }) if is_not_found(&source) => {}
                    Err(error) => return Err(error),
                }
                delete_endpoint_slices(ctx, &namespace, &slices).await?
            }
            Write::ServiceMonitor { object, resource } => {
                // Optional: failing to write it (RBAC not granted for it, say) must not hold up serving.
                if let Err(error) = service_monitor(ctx, &namespace, *object, &resource).await {
                    warn!(%error, "ServiceMonitor not applied");
                }
            }
            Write::Scale {
                deployment,
                replicas,
            } => {
                let patch = serde_json::json!({"spec": {"replicas": replicas}});
                patch_deployment(ctx, &namespace, &deployment, &patch, rbac::SCALE_DEPLOYMENT)
                    .await?;
            }
            Write::RollBack(previous) => {
                info!(%name, %namespace, previous = %previous.revision, "accuracy rollback");
                let patch = serde_json::json!({
                    "metadata": {"annotations": {
                        names::ANNOTATION_MODEL: previous.model,
                        // Whatever is applied next must be written, not matched against this hash.
                        names::ANNOTATION_SPEC_HASH: null,
                    }},
                    "spec": {"template": previous.template},
                });
                patch_deployment(ctx, &namespace, &name, &patch, rbac::ROLL_BACK_DEPLOYMENT)
                    .await?;
            }
            Write::DeleteCanary { uid } => delete_canary(ctx, &namespace, &name, uid).await?,
            Write::PruneJobs { keep } => prune_jobs(ctx, &namespace, &name, &keep).await?,
        }
    }
    for event in &plan.events {
        publish(ctx, md, event).await;
    }
    if let Some(status) = plan.status {
        write_status(ctx, &namespace, &name, status).await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes EndpointSlices of the Service; one already gone is fine.
async fn delete_endpoint_slices(
    ctx: &Context,
    namespace: &str,
    names: &[String],
) -> Result<(), Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    for name in names {
        match call(
            rbac::DELETE_ENDPOINTSLICE,
            namespace,
            slices.delete(name, &DeleteParams::default()),
        )
        .await
        {
            Ok(_) => info!(slice = %name, "EndpointSlice deleted"),
            Err(Error::Api { source, .. }) if is_not_found(&source) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Creates the optimize Job; false when it already exists.
async fn create_job(ctx: &Context, namespace: &str, job: Job) -> Result<bool, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match call(rbac::CREATE_JOB, namespace, jobs.create(&params, &job)).await {
        Ok(created) => {
            ctx.metrics.child_applies.with_label_values(&["Job"]).inc();
            info!(job = %created.name_any(), "started optimize Job");
            Ok(true)
        }
        Err(Error::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Server-side applies one child with the operator's field manager, taking over conflicting fields.
async fn server_side_apply<K>(
    ctx: &Context,
    namespace: &str,
    desired: K,
    request: Request,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    call(
        request,
        namespace,
        api.patch(&desired.name_any(), &params, &Patch::Apply(&desired)),
    )
    .await?;
    ctx.metrics
        .child_applies
        .with_label_values(&[&K::kind(&())])
        .inc();
    Ok(())
}

async fn service_monitor(
    ctx: &Context,
    namespace: &str,
    desired: DynamicObject,
    resource: &ApiResource,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    call(
        rbac::APPLY_SERVICEMONITOR,
        namespace,
        api.patch(
            &desired.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        ),
    )
    .await?;
    Ok(())
}

/// A merge patch of a serving Deployment (its count, or a rollback's template): fields the apply does not own.
async fn patch_deployment(
    ctx: &Context,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
    request: Request,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    call(
        request,
        namespace,
        api.patch(name, &params, &Patch::Merge(patch)),
    )
    .await?;
    ctx.metrics
        .child_applies
        .with_label_values(&["Deployment"])
        .inc();
    Ok(())
}

/// Deletes the canary Deployment, exactly the one observed (not a namesake created since).
async fn delete_canary(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: String,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let mut params = DeleteParams::background();
    params.preconditions = Some(Preconditions {
        uid: Some(uid),
        resource_version: None,
    });
    let canary = children::canary_name(name);
    match call(
        rbac::DELETE_DEPLOYMENT,
        namespace,
        api.delete(&canary, &params),
    )
    .await
    {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a namesake (409: the precondition failed).
        Err(Error::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 || s.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes the optimize Jobs of revisions not in `keep`.
async fn prune_jobs(
    ctx: &Context,
    namespace: &str,
    name: &str,
    keep: &[String],
) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}={name},{}={}",
        names::LABEL_MODEL,
        names::LABEL_COMPONENT,
        names::COMPONENT_OPTIMIZE
    );
    let list = call(
        rbac::LIST_JOBS,
        namespace,
        jobs.list(&ListParams::default().labels(&selector)),
    )
    .await?;
    for job in list.items {
        let revision = job
            .labels()
            .get(names::LABEL_REVISION)
            .cloned()
            .unwrap_or_default();
        if keep.contains(&revision) {
            continue;
        }
        let params = DeleteParams::background();
        match call(
            rbac::DELETE_JOB,
            namespace,
            jobs.delete(&job.name_any(), &params),
        )
        .await
        {
            Ok(_) => {}
            Err(Error::Api { source, .. }) if is_not_found(&source) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Publishes an event about the ModelDeployment. Events are best effort: losing one must not fail the
/// reconcile.
async fn publish(ctx: &Context, md: &ModelDeployment, event: &Event) {
    let reference = md.object_ref(&());
    match tokio::time::timeout(EVENT_TIMEOUT, ctx.recorder.publish(event, &reference)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "could not publish event"),
        Err(_) => warn!(
            secs = EVENT_TIMEOUT.as_secs(),
            "publishing an event timed out"
        ),
    }
}

/// Writes the status subresource with server-side apply.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: tractor_api::ModelDeploymentStatus,
) -> Result<(), Error> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", names::GROUP, names::VERSION),
        "kind": "ModelDeployment",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match call(
        rbac::PATCH_STATUS,
        namespace,
        api.patch_status(name, &params, &Patch::Apply(&patch)),
    )
    .await
    {
        Ok(written) => ctx.written.remember(written),
        // Deleted while we reconciled: nothing left to report on.
        Err(Error::Api { source, .. }) if is_not_found(&source) => return Ok(()),
        Err(error) => return Err(error),
    }
    ctx.metrics.status_writes.inc();
    Ok(())
}
