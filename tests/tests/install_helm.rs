//! `helm install` in cluster mode (the chart's defaults: a ClusterRole, every namespace watched) → the
//! operator pod runs on the real node under the chart's ServiceAccount and reconciles a ModelDeployment in
//! another namespace; `helm upgrade` to two replicas elects a leader among the two pods, both Ready; `helm
//! uninstall` leaves nothing but the CRD (and so the users' ModelDeployments), as Helm does with `crds/`.
//!
//! Cluster mode: its operator would reconcile every namespace, so it is alone in its test binary (test
//! binaries run one after another).

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, condition_is, crd_name, wait_for};
use tractor_e2e::install::{
    chart_dir, ensure_nothing_left, fullname, helm, image_values, install, reconcile_example,
};
use tractor_e2e::node::{E2E_IMAGE, REAL_NODE};

#[test]
fn helm_install_reconcile_upgrade_uninstall() -> Result<()> {
    let cluster = cluster()?;
    let ns = cluster.namespace("inst-helm")?;
    let models = cluster.namespace("inst-helm-md")?;
    let release = ns.name().to_owned();
    let name = fullname(&release);

    // Install: no PodSecurity warnings, the Deployment is Available, the CRD is established.
    let installed = install(cluster, &ns, &[])?;
    let out = &installed.output;
    ensure!(
        !out.stderr.contains("PodSecurity"),
        "install warned: {}",
        out.stderr
    );
    ensure!(out.stdout.contains("STATUS: deployed"), "{}", out.stdout);
    ensure!(
        out.stdout.contains("kubectl wait --for=condition=Ready"),
        "NOTES.txt not shown: {}",
        out.stdout
    );
    let dep = ns.kubectl_json(&["get", "deployment", &name])?;
    ensure!(condition_is(&dep, "Available", "True"), "{}", dep["status"]);
    ensure!(dep["status"]["readyReplicas"] == 1);
    ensure!(dep["spec"]["strategy"]["type"] == "Recreate");
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    ensure!(
        args.contains(&format!("--image={E2E_IMAGE}"))
            && !args.contains("--leader-elect")
            && !args.contains("--namespace"),
        "{args}"
    );
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tractor-operator",
    ])?;
    ensure!(
        pods["items"][0]["spec"]["nodeName"] == REAL_NODE,
        "operator pod not on the real node: {}",
        pods["items"][0]["spec"]
    );
    let crd = cluster.kubectl_json(&["get", "crd", &crd_name()?])?;
    ensure!(condition_is(&crd, "Established", "True"));

    // The chart's pod, with the chart's ClusterRole, reconciles a model in another namespace end to end.
    reconcile_example(&models, "digits")?;

    // Upgrade with changed values: two replicas turn leader election on, with its Lease Role.
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    // The image the tests imported, on every upgrade (a user pins theirs the same way).
    let [repository, tag] = image_values();
    helm(
        cluster,
        &[
            "upgrade",
            &release,
            chart,
            "--namespace",
            ns.name(),
            "--set",
            &repository,
            "--set",
            &tag,
            "--set",
            "replicas=2",
            "--set",
            "logFormat=plain",
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    // Both pods Ready, the follower included: a standby is healthy, or a Deployment of two would never be
    // Available and `helm --wait` would never return.
    wait_for(DEFAULT_WAIT, "two operator replicas ready", || {
        let deployment = ns.kubectl_json(&["get", "deployment", &name])?;
        Ok((deployment["status"]["readyReplicas"] == 2
            && deployment["status"]["updatedReplicas"] == 2)
            .then_some(deployment))
    })?;
    let dep = ns.kubectl_json(&["get", "deployment", &name])?;
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    ensure!(
        args.contains("--leader-elect") && args.contains("--log-format=plain"),
        "{args}"
    );
    ensure!(dep["spec"]["strategy"]["type"] == "RollingUpdate");
    ns.kubectl(&["get", "role", &format!("{name}-leader-election")])?;
    // The new Role lets the ServiceAccount take the Lease: one of the two pods holds it.
    let lease = wait_for(DEFAULT_WAIT, "a leader", || {
        let lease = ns.kubectl_output(&["get", "lease", "tractor-operator", "-o", "json"], None)?;
        Ok(lease
            .status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&lease.stdout).ok())
            .flatten()
            .filter(|l| l["spec"]["holderIdentity"].is_string()))
    })?;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tractor-operator",
    ])?;
    ensure!(
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .any(|p| holder.starts_with(p)),
        "lease holder {holder} is none of the operator pods"
    );
    // And back to one replica: Recreate again (the chart drops the defaulted rollingUpdate).
    helm(
        cluster,
        &[
            "upgrade",
            &release,
            chart,
            "--namespace",
            ns.name(),
            "--reset-values",
            "--set",
            &repository,
            "--set",
            &tag,
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    let dep = ns.kubectl_json(&["get", "deployment", &name])?;
    ensure!(dep["spec"]["strategy"]["type"] == "Recreate");
    ensure!(
        ns.kubectl_output(&["get", "role", &format!("{name}-leader-election")], None)?
            .status
            .code()
            != Some(0),
        "the leader-election Role outlived its replicas"
    );

    // Uninstall: nothing of the release left, the CRD and the users' ModelDeployments kept.
    helm(
        cluster,
        &[
            "uninstall",
            &release,
            "--namespace",
            ns.name(),
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    ensure_nothing_left(
        cluster,
        ns.name(),
        &format!("app.kubernetes.io/instance={release}"),
    )?;
    let sa = ns.kubectl_output(&["get", "serviceaccount", &name], None)?;
    ensure!(!sa.status.success(), "ServiceAccount {name} left behind");
    cluster.kubectl(&["get", "crd", &crd_name()?])?;
    models.kubectl(&["get", "mdep", "digits"])?;
    Ok(())
}
