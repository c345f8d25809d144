//! On the real node, through the chart's operator: `spec.model.format` and `spec.model.inputs` reach the optimize
//! Job. An ONNX file declared `nnef`, and declared inputs the model contradicts, fail the Job; the resource goes
//! `Stalled` with the Job's reason and a message naming what disagrees.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tractor_e2e::cluster::{condition_is, wait_for};
use tractor_e2e::node::{model_configmap, operator, pods_summary, real_node, restricted_namespace};

/// Long enough for the Job's pod to start on the real node and the operator to read its report.
const JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Waits for `Stalled=True` and returns that condition.
fn wait_stalled(ns: &tractor_e2e::cluster::TestNamespace, name: &str) -> Result<Value> {
    wait_for(JOB_WAIT, &format!("mdep/{name} Stalled"), || {
        let md = tractor_e2e::modeldeployment::get(ns, name)?;
        if condition_is(&md, "Ready", "True") {
            bail!("mdep/{name} went Ready: {}", md["status"]);
        }
        Ok(md["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Stalled" && c["status"] == "True")
            .cloned())
    })
    .with_context(|| pods_summary(ns))
}

#[test]
fn declared_format_and_inputs_the_model_contradicts_stall_with_the_reason() -> Result<()> {
    let cluster = real_node()?;
    cluster.install_crd()?;
    let ns = restricted_namespace(cluster, "node-declared")?;
    let _op = operator(cluster, &ns)?;
    let sha = model_configmap(&ns, "digits-model", "digits_mlp.onnx")?;
    let model = |extra: Value| {
        let mut model_spec =
            json!({"uri": "configmap://digits-model/digits_mlp.onnx", "sha256": sha});
        model_spec
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        model_spec
    };
    for (name, extra) in [
        ("as-nnef", json!({"format": "nnef"})),
        (
            "narrow",
            json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]}),
        ),
    ] {
        let md = json!({
            "apiVersion": "serving.tractor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns.name()},
            "spec": {"model": model(extra), "optimize": {"precision": "f32"}, "serving": {"replicas": 1}},
        });
        tractor_e2e::modeldeployment::apply_as_is(&ns, &md)?;
    }

    let stalled = wait_stalled(&ns, "as-nnef")?;
    assert_eq!(stalled["reason"], "InvalidModel", "{stalled}");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "model.format is nnef, but the file is neither an NNEF folder nor a tar/gzip archive"
        ),
        "{stalled}"
    );

    let stalled = wait_stalled(&ns, "narrow")?;
    assert_eq!(stalled["reason"], "InputMismatch", "{stalled}");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("input `X` dimension 1: declared 32, the model fixes it at 64"),
        "{stalled}"
    );
    Ok(())
}
