//! The shipped examples parse into the typed API and survive a round trip unchanged; defaults agree between
//! serde (what the operator reads) and the CRD schema (what the API server stores).

use std::path::PathBuf;

use tractor_api::{ModelDeployment, Optimize, Precision, RolloutStrategy, Serving};

fn examples() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("manifests/examples exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable example");
            (p, text)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected at least three examples in {}",
        dir.display()
    );
    files
}

#[test]
fn every_example_round_trips() {
    for (path, text) in examples() {
        let parsed: ModelDeployment =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again: ModelDeployment =
            serde_yaml::from_str(&serde_yaml::to_string(&parsed).expect("serializes"))
                .expect("own output parses");
        assert_eq!(parsed, again, "{} changed in a round trip", path.display());
    }
}

#[test]
fn minimal_example_gets_documented_defaults() {
    let (_, text) = examples()
        .into_iter()
        .find(|(p, _)| p.ends_with("minimal.yaml"))
        .expect("minimal.yaml");
    let md: ModelDeployment = serde_yaml::from_str(&text).expect("parses");
    assert_eq!(md.spec.optimize.precision, Precision::Auto);
    assert_eq!(md.spec.optimize.active_deadline_seconds, 1800);
    assert_eq!(md.spec.optimize.backoff_limit, 1);
    assert_eq!(md.spec.rollout.strategy, RolloutStrategy::RollingUpdate);
    assert!(!md.spec.rollout.rollback_on_accuracy_drop);
    assert!(
        md.spec.serving.replicas.is_none(),
        "replicas stay unset so kubectl scale and autoscaling can own them"
    );
    assert!(md.spec.autoscaling.is_none());
}

#[test]
fn autoscaled_example_gets_nested_defaults() {
    let (_, text) = examples()
        .into_iter()
        .find(|(p, _)| p.ends_with("optimized-autoscaled.yaml"))
        .expect("example");
    let md: ModelDeployment = serde_yaml::from_str(&text).expect("parses");
    let scaling = md.spec.autoscaling.expect("autoscaling set");
    assert_eq!(scaling.tolerance, 0.1);
    assert_eq!(scaling.metrics.len(), 3);
    let latency = scaling.metrics[0].latency.as_ref().expect("latency member");
    assert_eq!(latency.quantile, 0.95);
}

/// Walks the CRD's openAPIV3Schema along `path` and returns the `default` stored there.
fn schema_default(path: &[&str]) -> serde_json::Value {
    let crd = serde_json::to_value(tractor_api::crd()).expect("CRD serializes");
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for name in path {
        node = &node["properties"][name];
    }
    node["default"].clone()
}

#[test]
fn schema_defaults_equal_serde_defaults() {
    assert_eq!(
        schema_default(&["spec", "optimize"]),
        serde_json::to_value(Optimize::default()).expect("json")
    );
    assert_eq!(
        schema_default(&["spec", "serving"]),
        serde_json::to_value(Serving::default()).expect("json")
    );
    let rollout = serde_json::json!({"strategy": "RollingUpdate", "rollbackOnAccuracyDrop": false});
    assert_eq!(schema_default(&["spec", "rollout"]), rollout);
    assert_eq!(schema_default(&["spec", "autoscaling", "interval"]), "15s");
    assert_eq!(schema_default(&["spec", "autoscaling", "tolerance"]), 0.1);
    assert_eq!(schema_default(&["spec", "autoscaling", "minReplicas"]), 1);
}

#[test]
fn crd_has_scale_and_status_subresources() {
    let crd = tractor_api::crd();
    let sub = crd.spec.versions[0]
        .subresources
        .as_ref()
        .expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.serving.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready",
            "Phase",
            "Replicas",
            "Precision",
            "Accuracy",
            "P95",
            "Age"
        ]
    );
}

/// Every schema property carries a description: it is the `kubectl explain` text.
#[test]
fn every_own_field_is_documented() {
    fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(|p| p.as_object()) else {
            if let Some(items) = node.get("items") {
                walk(items, path, missing);
            }
            return;
        };
        for (name, child) in props {
            let here = format!("{path}.{name}");
            if child.get("description").is_none() {
                missing.push(here.clone());
            }
            // Embedded core types keep only their top-level doc; see tractor_api::crd.
            if [
                "containers",
                "affinity",
                "tolerations",
                "resources",
                "conditions",
                "lastScaleTime",
                "time",
            ]
            .contains(&name.as_str())
            {
                continue;
            }
            walk(child, &here, missing);
        }
    }
    let crd = serde_json::to_value(tractor_api::crd()).expect("json");
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = vec![];
    walk(&root["properties"]["spec"], "spec", &mut missing);
    walk(&root["properties"]["status"], "status", &mut missing);
    assert!(missing.is_empty(), "fields without a doc: {missing:?}");
}
