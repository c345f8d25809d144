//! Two operators with leader election: only the Lease holder acts; when it dies, the other takes over.
//!
//! Processes under a token of the chart's ServiceAccount, not the chart's pods: the test kills the leader at
//! a moment it chooses and must know which of the two is the follower.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, wait_for};
use tractor_e2e::modeldeployment::{
    apply_example, finish_job_with_report, success_report, wait_for_new_job,
};
use tractor_e2e::operator::Operator;

#[test]
fn follower_takes_over_when_the_leader_dies() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("op-lead")?;
    let lease_ns = ["--leader-elect", "--leader-namespace", ns.name()];
    let mut leader = Operator::spawn(cluster, ns.name(), &lease_ns)?;
    wait_for(DEFAULT_WAIT, "the first operator to lead", || {
        Ok(leader.is_leading().then_some(()))
    })?;
    let follower = Operator::spawn(cluster, ns.name(), &lease_ns)?;
    // A standby is Ready (a Deployment of two must be Available) but says it stands by.
    wait_for(DEFAULT_WAIT, "the follower to stand by", || {
        Ok(follower.is_ready().then_some(()))
    })?;
    ensure!(
        !follower.is_leading(),
        "a follower must not lead while another replica holds the lease"
    );

    apply_example(&ns, "minimal.yaml", "digits")?;
    let job = wait_for_new_job(&ns, "digits", &[])?;
    let lease = ns.kubectl_json(&["get", "lease", "tractor-operator"])?;
    let first_holder = lease["spec"]["holderIdentity"].clone();

    leader.kill()?;
    // The lease lasts 15 s without renewal; the follower renews every 5 s.
    wait_for(DEFAULT_WAIT, "the follower to take the lease", || {
        Ok(follower.is_leading().then_some(()))
    })?;
    let lease = ns.kubectl_json(&["get", "lease", "tractor-operator"])?;
    ensure!(
        lease["spec"]["holderIdentity"] != first_holder,
        "lease still held by the dead leader"
    );
    ensure!(
        lease["spec"]["leaseTransitions"] == 1,
        "lease: {}",
        lease["spec"]
    );

    finish_job_with_report(&ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mdep/digits",
        "--timeout=120s",
    ])?;
    Ok(())
}
