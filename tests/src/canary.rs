//! Helpers for canary tests: a ModelDeployment's Deployments and what its status says once a canary has
//! been promoted or rolled back.

use anyhow::{Context, Result, ensure};

use crate::cluster::{DEFAULT_WAIT, TestNamespace, wait_for};
use crate::modeldeployment::get;
use crate::scale::{condition, events};

/// The revision label of a Deployment's pod template.
pub fn template_revision(ns: &TestNamespace, deployment: &str) -> Result<Option<String>> {
    let d = ns.kubectl_json(&["get", "deployment", deployment])?;
    Ok(
        d["spec"]["template"]["metadata"]["labels"]["serving.tractor.dev/revision"]
            .as_str()
            .map(str::to_owned),
    )
}

/// True when the Deployment exists.
pub fn exists(ns: &TestNamespace, deployment: &str) -> Result<bool> {
    Ok(ns
        .kubectl_output(&["get", "deployment", deployment], None)?
        .status
        .success())
}

/// `status.revision.current` of `mdep/name`: the revision the spec asks for.
pub fn current_revision(ns: &TestNamespace, name: &str) -> Result<String> {
    get(ns, name)?["status"]["revision"]["current"]
        .as_str()
        .map(str::to_owned)
        .context("status.revision.current")
}

/// What happened to a canary.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The canary's revision became the stable one.
    Promoted,
    /// The canary was removed and its revision marked failed.
    RolledBack,
}

/// Waits until the canary of revision `canary` of `mdep/name` is promoted or rolled back.
pub fn wait_outcome(
    ns: &TestNamespace,
    name: &str,
    canary: &str,
    timeout: std::time::Duration,
) -> Result<Outcome> {
    wait_for(timeout, "promotion or rollback", || {
        let s = get(ns, name)?;
        let r = &s["status"]["revision"];
        if r["failed"].as_str() == Some(canary) {
            return Ok(Some(Outcome::RolledBack));
        }
        if r["stable"].as_str() == Some(canary) && condition(ns, name, "Ready")?["status"] == "True"
        {
            return Ok(Some(Outcome::Promoted));
        }
        Ok(None)
    })
}

/// After a rollback of `digits`: the canary is gone, the stable revision `first` serves at `replicas` and
/// says so, and the Stalled reason names `signal` and the failed revision `second`.
pub fn assert_rolled_back(
    ns: &TestNamespace,
    first: &str,
    second: &str,
    signal: &str,
    replicas: i64,
) -> Result<()> {
    let mdep = get(ns, "digits")?;
    let stalled = condition(ns, "digits", "Stalled")?;
    ensure!(
        stalled["status"] == "True" && stalled["reason"] == "RolledBack",
        "Stalled: {stalled}"
    );
    let message = stalled["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(signal) && message.contains(second),
        "the reason names {signal} and the revision: {message}"
    );
    ensure!(condition(ns, "digits", "Ready")?["status"] == "False");
    ensure!(condition(ns, "digits", "ModelReady")?["status"] == "True");
    ensure!(mdep["status"]["phase"] == "Failed");
    ensure!(
        mdep["status"]["model"]["revision"].as_str() == Some(first),
        "status.model names what serves: {}",
        mdep["status"]["model"]
    );
    ensure!(mdep["status"]["revision"]["canary"].is_null());
    wait_for(DEFAULT_WAIT, "the canary Deployment gone", || {
        Ok((!exists(ns, "digits-canary")?).then_some(()))
    })?;
    ensure!(template_revision(ns, "digits")?.as_deref() == Some(first));
    let deployment = ns.kubectl_json(&["get", "deployment", "digits"])?;
    ensure!(
        deployment["spec"]["replicas"] == replicas,
        "the stable side is back to full size"
    );
    ensure!(
        events(ns, "digits", "RolledBack")?.len() == 1,
        "one RolledBack event"
    );
    Ok(())
}
