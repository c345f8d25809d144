//! The API server restarted mid-rollout: the operator's watches reconnect and the resource converges with
//! nothing orphaned or duplicated. Alone in its test binary, since other tests would see the outage.

use anyhow::Result;
use tractor_e2e::cluster::cluster;
use tractor_e2e::modeldeployment::{
    apply_example, ensure_one_of_each_child, finish_job_with_report, success_report,
    wait_for_new_job,
};
use tractor_e2e::operator::Operator;

#[test]
fn apiserver_restart_mid_rollout_converges() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let ns = c.namespace("op-apiserver")?;
    let _op = Operator::start(c, ns.name())?;
    apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;

    c.restart_apiserver()?;

    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    ensure_one_of_each_child(&ns, "digits")?;
    Ok(())
}
