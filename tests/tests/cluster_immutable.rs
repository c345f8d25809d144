//! The CEL transition rule: `spec.model.format` cannot change while `spec.model.uri` stays the same, and can
//! change together with it.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::cluster;
use tractor_e2e::modeldeployment::{apply, apply_example};

#[test]
fn model_format_is_immutable_for_one_uri() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let ns = c.namespace("immutable")?;
    let mut md = apply_example(&ns, "minimal.yaml", "fmt")?;
    md["spec"]["model"]["format"] = "onnx".into();
    apply(&ns, &md)?;

    md["spec"]["model"]["format"] = "nnef".into();
    let out = ns.kubectl_output(&["apply", "-f", "-"], Some(&md.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "format change was accepted");
    ensure!(
        stderr.contains("model.format is immutable while model.uri stays the same"),
        "{stderr}"
    );

    md["spec"]["model"]["uri"] = "https://models.example.com/digits/mlp.nnef.tgz".into();
    apply(&ns, &md)?;
    Ok(())
}
