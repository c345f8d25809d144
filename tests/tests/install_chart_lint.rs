//! The Helm chart as a reviewer checks it: `helm lint` clean, its output accepted by the real API server
//! (`kubectl apply --dry-run=server`) in both RBAC modes, bad values refused by `values.schema.json`, and a
//! Grafana dashboard built only on metrics the code exports.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tractor_e2e::cluster::{cluster, repo_root};
use tractor_e2e::install::{chart_dir, helm, helm_output, render};

#[test]
fn helm_lint_is_clean() -> Result<()> {
    let c = cluster()?;
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    for sets in [
        vec![],
        vec!["--set", "replicas=3", "--set", "watchNamespace=models"],
    ] {
        let mut args = vec!["lint", chart, "--strict"];
        args.extend(sets.iter().copied());
        let out = helm(c, &args)?;
        ensure!(
            !out.stdout.contains("[WARNING]") && !out.stdout.contains("[ERROR]"),
            "helm lint {args:?} is not clean:\n{}",
            out.stdout
        );
    }
    Ok(())
}

#[test]
fn helm_template_is_accepted_by_the_api_server() -> Result<()> {
    let cluster = cluster()?;
    let ns = cluster.namespace("inst-tmpl")?;
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    let watch = format!("watchNamespace={}", ns.name());
    let podmonitor_off = "metrics.podMonitor.enabled=false";
    for sets in [
        vec!["replicas=1"],
        vec!["replicas=2", watch.as_str(), podmonitor_off],
    ] {
        let mut args = vec![
            "template",
            ns.name(),
            chart,
            "--namespace",
            ns.name(),
            "--include-crds",
        ];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let out = helm(cluster, &args)?;
        let applied =
            cluster.kubectl_output(&["apply", "--dry-run=server", "-f", "-"], Some(&out.stdout))?;
        let stdout = String::from_utf8_lossy(&applied.stdout);
        let stderr = String::from_utf8_lossy(&applied.stderr);
        ensure!(
            applied.status.success(),
            "dry run of helm template {sets:?} refused: {stderr}"
        );
        // Any warning (a deprecated API, PodSecurity) fails; the one kubectl gives for an object another test
        // created with server-side apply (the CRD) is about that object's history, not about the chart.
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("kubectl.kubernetes.io/last-applied-configuration"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        ensure!(
            warnings.is_empty(),
            "dry run of {sets:?} warned: {warnings:?}"
        );
        for kind in [
            "customresourcedefinition.apiextensions.k8s.io",
            "deployment.apps",
            "serviceaccount",
            "poddisruptionbudget.policy",
            "configmap",
        ] {
            ensure!(stdout.contains(kind), "{kind} missing from {stdout}");
        }
        let rbac = if sets.len() == 1 {
            "clusterrole"
        } else {
            "role"
        };
        ensure!(
            stdout.contains(&format!("{rbac}.rbac.authorization.k8s.io/")),
            "{rbac} missing from {stdout}"
        );
    }
    Ok(())
}

#[test]
fn values_schema_refuses_bad_values() -> Result<()> {
    let c = cluster()?;
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    for (set, field) in [
        ("replicas=-1", "replicas"),
        ("logFormat=xml", "logFormat"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("rbac.secretNames[0]=*", "secretNames"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let out = helm_output(c, &["template", "t", chart, "--set", set])?;
        ensure!(!out.success, "--set {set} was accepted");
        ensure!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                && out.stderr.contains(field),
            "--set {set}: unexpected error {}",
            out.stderr
        );
    }
    Ok(())
}

/// Metric names quoted in a source file (`"tractor_..."` string literals).
fn quoted_metric_names(path: &str) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_root().join(path))?;
    Ok(text
        .split('"')
        .filter(|s| {
            s.starts_with("tractor_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect())
}

#[test]
fn dashboard_uses_only_exported_metrics() -> Result<()> {
    let cluster = cluster()?;
    let mut exported = quoted_metric_names("crates/tractor-api/src/metrics.rs")?;
    exported.extend(quoted_metric_names(
        "crates/tractor-operator/src/metrics.rs",
    )?);
    ensure!(
        exported.len() > 10,
        "found too few exported metrics: {exported:?}"
    );

    let path = chart_dir().join("files/dashboard.json");
    let text = std::fs::read_to_string(&path)?;
    let dashboard: Value = serde_json::from_str(&text).context("dashboard.json is not JSON")?;
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .context("no panels")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if token.starts_with("tractor_") {
                let name = token;
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                ensure!(
                    exported.contains(base),
                    "the dashboard queries {name}, which no code exports (exported: {exported:?})"
                );
                used.insert(base.to_owned());
            }
        }
    }
    // What the issue asks the dashboard to show: latency quantiles, RPS, errors, batch size, accuracy (per
    // revision, from the confusion counters), replicas vs desired, canary weight.
    for needed in [
        "tractor_inference_request_duration_seconds",
        "tractor_inference_requests_total",
        "tractor_inference_batch_size",
        "tractor_model_predictions_labelled_total",
        "tractor_model_info",
    ] {
        ensure!(used.contains(needed), "no panel uses {needed}");
    }
    let all = exprs.join("\n");
    ensure!(
        all.contains("histogram_quantile(0.99"),
        "no p99 latency panel"
    );
    ensure!(all.contains("code!~"), "no error panel");
    ensure!(
        all.contains("kube_deployment_spec_replicas"),
        "no desired-replicas series"
    );
    ensure!(
        all.contains("serving_tractor_dev_revision"),
        "no traffic-by-revision (canary weight) panel"
    );

    // The chart ships it as a ConfigMap the Grafana sidecar picks up, byte for byte.
    let docs = render(cluster, "dash", "monitoring", &[])?;
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "dash-tractor-dashboard")
        .context("no dashboard ConfigMap")?;
    ensure!(cm["metadata"]["labels"]["grafana_dashboard"] == "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["tractor.json"].as_str().unwrap_or_default())?;
    ensure!(
        shipped == dashboard,
        "the ConfigMap's dashboard differs from files/dashboard.json"
    );
    let off = render(cluster, "dash", "monitoring", &["dashboard.enabled=false"])?;
    ensure!(!off.iter().any(|d| d["kind"] == "ConfigMap"));
    Ok(())
}
