//! The chart's operator pod force-deleted mid-rollout (no grace period, its Deployment at zero so nothing
//! replaces it) and brought back converges with nothing orphaned or duplicated.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{cluster, condition_is};
use tractor_e2e::modeldeployment::{
    apply_example, ensure_one_of_each_child, finish_job_with_report, get, success_report,
    wait_for_new_job,
};
use tractor_e2e::operator::Operator;

#[test]
fn operator_killed_mid_rollout_converges() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let ns = c.namespace("op-kill")?;
    let mut op = Operator::start(c, ns.name())?;
    apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;
    op.kill()?;

    // The Job finishes while no operator runs.
    finish_job_with_report(&ns, &job, &success_report("f16"))?;
    op.resume()?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    let s = get(&ns, "digits")?;
    ensure!(condition_is(&s, "ModelReady", "True"));
    ensure!(s["status"]["model"]["precision"] == "f16");
    ensure_one_of_each_child(&ns, "digits")?;
    Ok(())
}
