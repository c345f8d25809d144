//! `kubectl explain` shows the CRD's field docs (they come from the Rust doc comments).

use anyhow::{Context, Result};
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, crd_document, wait_for};

#[test]
fn explain_prints_the_model_uri_doc() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let crd = crd_document()?;
    let versions = crd["spec"]["versions"]
        .as_array()
        .context("CRD without versions")?;
    let served = versions
        .iter()
        .find(|v| v["storage"] == true)
        .context("CRD without a storage version")?;
    let doc = served["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]["properties"]["uri"]
        ["description"]
        .as_str()
        .context("spec.model.uri has no description in the CRD")?;
    // kubectl wraps the text; compare the first words, whitespace-normalised.
    let first_words: Vec<&str> = doc.split_whitespace().take(6).collect();
    let want = first_words.join(" ");

    // The OpenAPI document is republished a few seconds after a CRD is established.
    wait_for(DEFAULT_WAIT, "kubectl explain to show the uri doc", || {
        let out = c.kubectl_output(&["explain", "modeldeployment.spec.model.uri"], None)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok((out.status.success()
            && normalised.contains("FIELD: uri")
            && normalised.contains(&want))
        .then_some(()))
    })
}
