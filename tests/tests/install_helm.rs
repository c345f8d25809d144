//! `helm install` → the operator Deployment is Ready, and the chart's ServiceAccount can reconcile a
//! ModelDeployment (the operator runs as a process with a token of that ServiceAccount, so it has exactly the
//! chart's RBAC); `helm upgrade` with changed values rolls the change out; `helm uninstall` leaves nothing but
//! the CRD (and so the users' ModelDeployments), as Helm does with `crds/`.

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, condition_is, crd_name, wait_for};
use tractor_e2e::install::{
    ServiceAccountKubeconfig, chart_dir, ensure_nothing_left, fullname, helm, install,
    reconcile_example,
};
use tractor_e2e::operator::Operator;

#[test]
fn helm_install_reconcile_upgrade_uninstall() -> Result<()> {
    let c = cluster()?;
    let ns = c.namespace("inst-helm")?;
    let models = c.namespace("inst-helm-md")?;
    let release = ns.name().to_owned();
    let name = fullname(&release);

    // Install: no PodSecurity warnings, the Deployment is Available, the CRD is established.
    let installed = install(c, &ns, &[])?;
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
        args.contains("--image=tractor:0.1.0") && !args.contains("--leader-elect"),
        "{args}"
    );
    let crd = c.kubectl_json(&["get", "crd", &crd_name()?])?;
    ensure!(condition_is(&crd, "Established", "True"));

    // The chart's RBAC is enough to reconcile a model end to end.
    let kubeconfig = ServiceAccountKubeconfig::new(c, ns.name(), &name)?;
    {
        let op = Operator::spawn_as(kubeconfig.path(), models.name(), &[])?;
        op.wait_ready()?;
        reconcile_example(&models, "digits")?;
    }

    // Upgrade with changed values: two replicas turn leader election on, with its Lease Role.
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    helm(
        c,
        &[
            "upgrade",
            &release,
            chart,
            "--namespace",
            ns.name(),
            "--set",
            "replicas=2",
            "--set",
            "logFormat=plain",
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    wait_for(DEFAULT_WAIT, "two operator replicas ready", || {
        let d = ns.kubectl_json(&["get", "deployment", &name])?;
        Ok((d["status"]["readyReplicas"] == 2 && d["status"]["updatedReplicas"] == 2).then_some(d))
    })?;
    let dep = ns.kubectl_json(&["get", "deployment", &name])?;
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    ensure!(
        args.contains("--leader-elect") && args.contains("--log-format=plain"),
        "{args}"
    );
    ensure!(dep["spec"]["strategy"]["type"] == "RollingUpdate");
    ns.kubectl(&["get", "role", &format!("{name}-leader-election")])?;
    // The new Role lets the ServiceAccount take the Lease.
    {
        let op = Operator::spawn_as(
            kubeconfig.path(),
            models.name(),
            &["--leader-elect", "--leader-namespace", ns.name()],
        )?;
        op.wait_ready()?;
        let lease = ns.kubectl_json(&["get", "lease", "tractor-operator"])?;
        ensure!(lease["spec"]["holderIdentity"].is_string(), "{lease}");
        ns.kubectl(&["delete", "lease", "tractor-operator"])?;
    }
    // And back to one replica: Recreate again (the chart drops the defaulted rollingUpdate).
    helm(
        c,
        &[
            "upgrade",
            &release,
            chart,
            "--namespace",
            ns.name(),
            "--reset-values",
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
        c,
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
        c,
        ns.name(),
        &format!("app.kubernetes.io/instance={release}"),
    )?;
    let sa = ns.kubectl_output(&["get", "serviceaccount", &name], None)?;
    ensure!(!sa.status.success(), "ServiceAccount {name} left behind");
    c.kubectl(&["get", "crd", &crd_name()?])?;
    models.kubectl(&["get", "mdep", "digits"])?;
    Ok(())
}
