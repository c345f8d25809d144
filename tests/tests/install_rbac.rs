//! Least privilege: the operator's permissions, rendered and as the API server grants them, have no wildcard
//! verb, resource, group or name; Secrets are readable only by name and only when listed; nothing escalates.
//! The API server grants what the operator calls (crates/tractor-operator/src/rbac.rs, whose unit test keeps the
//! chart equal to it) and refuses a sample of what it never calls.
//! (That the same permissions are enough is shown by install_helm and install_kustomize, whose operator runs
//! with the chart's ServiceAccount token.)

use anyhow::{Result, ensure};
use serde_json::Value;
use tractor_e2e::cluster::cluster;
use tractor_e2e::install::{fullname, install, rbac_rules, render};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn rendered_rbac_has_no_wildcards_and_reads_secrets_by_name_only() -> Result<()> {
    let cluster = cluster()?;
    for sets in [
        vec![],
        vec!["replicas=2", "watchNamespace=models"],
        vec!["rbac.secretNames={prom-auth,other}"],
    ] {
        let docs = render(cluster, "rbac", "tractor-system", &sets)?;
        let rules = rbac_rules(&docs);
        ensure!(!rules.is_empty(), "{sets:?}: no RBAC rendered");
        for (who, rule) in &rules {
            eprintln!("{sets:?} {who}: {rule}");
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
            ] {
                ensure!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "{sets:?} {who}: wildcard in {field}: {rule}"
                );
            }
            let verbs = strings(&rule["verbs"]);
            for forbidden in ["escalate", "bind", "impersonate", "deletecollection"] {
                ensure!(
                    !verbs.iter().any(|v| v == forbidden),
                    "{who}: {forbidden}: {rule}"
                );
            }
            let resources = strings(&rule["resources"]);
            if resources.iter().any(|r| r == "secrets") {
                ensure!(
                    verbs == ["get"] && !strings(&rule["resourceNames"]).is_empty(),
                    "{who}: Secrets must be read by name only: {rule}"
                );
            }
            ensure!(
                !resources
                    .iter()
                    .any(|r| r.contains('/') && r != "modeldeployments/status"),
                "{who}: unexpected subresource: {rule}"
            );
        }
        let reads_secrets = rules
            .iter()
            .any(|(_, r)| strings(&r["resources"]).iter().any(|s| s == "secrets"));
        ensure!(
            reads_secrets == sets.iter().any(|s| s.starts_with("rbac.secretNames")),
            "{sets:?}: Secrets readable without being listed"
        );
        let namespaced = sets.iter().any(|s| s.starts_with("watchNamespace"));
        let cluster_roles = rules
            .iter()
            .filter(|(w, _)| w.starts_with("ClusterRole/"))
            .count();
        ensure!(
            (cluster_roles == 0) == namespaced,
            "{sets:?}: ClusterRole rules: {cluster_roles}"
        );
    }
    Ok(())
}

#[test]
fn api_server_grants_the_service_account_only_what_it_needs() -> Result<()> {
    let cluster = cluster()?;
    let ns = cluster.namespace("inst-rbac")?;
    let models = cluster.namespace("inst-rbac-md")?;
    let other = cluster.namespace("inst-rbac-other")?;
    let watch = format!("watchNamespace={}", models.name());
    let _release = install(
        cluster,
        &ns,
        &[watch.as_str(), "replicas=2", "rbac.secretNames={prom-auth}"],
    )?;
    let sa = format!(
        "system:serviceaccount:{}:{}",
        ns.name(),
        fullname(ns.name())
    );

    // The permissions as the API server lists them for the ServiceAccount in the watched namespace.
    let list = cluster.kubectl(&["auth", "can-i", "--list", "--as", &sa, "-n", models.name()])?;
    eprintln!("{list}");
    for line in list.lines().skip(1) {
        let resource = line.split_whitespace().next().unwrap_or_default();
        // Non-resource URLs (/api/*, /healthz...) come from the default discovery roles every authenticated
        // user has, not from the chart; resources are what matter.
        if resource.starts_with('/') || line.trim_start().starts_with('[') {
            continue;
        }
        ensure!(!line.contains('*'), "wildcard permission: {line}");
    }

    // `what` is `resource[.group][/name]`, optionally followed by ` --subresource=NAME`.
    let can = |verb: &str, what: &str, namespace: &str| -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb];
        args.extend(what.split_whitespace());
        args.extend(["--as", &sa, "-n", namespace]);
        let out = cluster.kubectl_output(&args, None)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    let models_ns = models.name();
    for (verb, what) in [
        ("watch", "modeldeployments.serving.tractor.dev"),
        (
            "patch",
            "modeldeployments.serving.tractor.dev --subresource=status",
        ),
        ("create", "deployments.apps"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("patch", "deployments.apps"),
        // The canary Deployment goes at promotion and rollback (rollout.rs).
        ("delete", "deployments.apps"),
        // rollbackOnAccuracyDrop reads the previous pod template from the Deployment's ReplicaSets.
        ("list", "replicasets.apps"),
        ("patch", "services"),
        ("patch", "poddisruptionbudgets.policy"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("list", "pods"),
        ("create", "events.events.k8s.io"),
        ("get", "secrets/prom-auth"),
    ] {
        ensure!(
            can(verb, what, models_ns)?,
            "cannot {verb} {what} in the watched namespace"
        );
    }
    for (verb, what) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "secrets/other"),
        ("update", "modeldeployments.serving.tractor.dev"),
        ("delete", "modeldeployments.serving.tractor.dev"),
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "pods --subresource=exec"),
        (
            "update",
            "modeldeployments.serving.tractor.dev --subresource=status",
        ),
        // Never read one by one: the watch and the start-up list are enough.
        ("get", "modeldeployments.serving.tractor.dev"),
        // Only patched (server-side apply or merge patch), never replaced.
        ("update", "deployments.apps"),
        ("deletecollection", "deployments.apps"),
        // Deleted by garbage collection through owner references, never by the operator.
        ("delete", "services"),
        ("delete", "poddisruptionbudgets.policy"),
        ("delete", "networkpolicies.networking.k8s.io"),
        ("delete", "replicasets.apps"),
        ("patch", "replicasets.apps"),
        ("delete", "events.events.k8s.io"),
        ("get", "configmaps"),
        ("create", "roles.rbac.authorization.k8s.io"),
        // Wildcards: a rule granting any verb, or any resource, would answer yes.
        ("*", "deployments.apps"),
        ("list", "*"),
        ("*", "*"),
    ] {
        ensure!(
            !can(verb, what, models_ns)?,
            "may {verb} {what}: more than it needs"
        );
    }
    // Namespaced mode: nothing outside the watched namespace, no cluster-wide reads.
    ensure!(!can("patch", "deployments.apps", other.name())?);
    ensure!(!can("delete", "deployments.apps", other.name())?);
    ensure!(!can(
        "list",
        "modeldeployments.serving.tractor.dev",
        other.name()
    )?);
    // Leader election: only the operator's own Lease, in the release namespace.
    ensure!(can(
        "update",
        "leases.coordination.k8s.io/tractor-operator",
        ns.name()
    )?);
    ensure!(!can(
        "update",
        "leases.coordination.k8s.io/someone-else",
        ns.name()
    )?);
    ensure!(!can(
        "update",
        "leases.coordination.k8s.io/tractor-operator",
        models_ns
    )?);
    Ok(())
}
