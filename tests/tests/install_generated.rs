//! The install files that are copies stay in sync with their one source: the CRD in the chart and in
//! `manifests/` equals `crds/modeldeployment.yaml`, and `manifests/tractor.yaml` equals the chart rendered with
//! its defaults (`scripts/gen-install.sh --check`).

use std::process::Command;

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::repo_root;

#[test]
fn generated_install_files_do_not_drift() -> Result<()> {
    let out = Command::new(repo_root().join("scripts/gen-install.sh"))
        .arg("--check")
        .output()
        .context("running scripts/gen-install.sh --check")?;
    ensure!(
        out.status.success(),
        "generated install files drifted:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kustomization lists every generated file, so none is silently left out of `kubectl apply -k`.
    let k = std::fs::read_to_string(repo_root().join("manifests/kustomization.yaml"))?;
    for f in [
        "crds/modeldeployment.yaml",
        "tractor.yaml",
        "namespace.yaml",
    ] {
        ensure!(
            k.contains(f),
            "manifests/kustomization.yaml does not list {f}"
        );
    }
    Ok(())
}
