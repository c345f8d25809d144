//! One reconcile: observe → decide → apply, and the error policy that paces retries per object.

use std::sync::Arc;

use kube::runtime::controller::Action;
use tracing::warn;
use tractor_api::ModelDeployment;

use crate::backoff::{self, Retry};
use crate::context::Context;
use crate::error::Error;
use crate::{apply, decide, object_key, observe};

/// Reconciles one ModelDeployment. Children carry owner references: deletion cascades without a finalizer.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut timer = ctx.metrics.start();
    if md.metadata.deletion_timestamp.is_some() {
        ctx.written.forget(&md);
        ctx.failures.reset(&object_key(&md));
        timer.ok();
        return Ok(Action::await_change());
    }
    let md = ctx.written.latest(md);
    let observed = observe::observe(&md, &ctx).await?;
    let plan = decide::decide(&observed, &ctx.build);
    let action = apply::apply(&md, plan, &ctx).await?;
    ctx.failures.reset(&object_key(&md));
    timer.ok();
    Ok(action)
}

/// Failures back off per object: transient ones exponentially with jitter up to [`backoff::CAP`], counted
/// from this object's last success; an API refusal of what the spec builds waits for a change.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&md);
    let failures = ctx.failures.record(&key);
    ctx.metrics.failed(error.category());
    match backoff::retry(error.category(), failures, backoff::jitter(&key, failures)) {
        Retry::After(delay) => {
            warn!(%error, failures, retry_in_secs = delay.as_secs_f64(), "reconcile failed");
            Action::requeue(delay)
        }
        Retry::OnChange => {
            warn!(%error, failures, "reconcile failed; retried when the object changes");
            Action::await_change()
        }
    }
}
