//! Every example in `manifests/examples/` is accepted by the API server (schema and CEL rules included).

use anyhow::{Result, bail, ensure};
use tractor_e2e::cluster::{cluster, yaml_files};

#[test]
fn every_example_passes_server_side_dry_run() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("examples")?;
    let files = yaml_files("manifests/examples")?;
    ensure!(!files.is_empty(), "no YAML files in manifests/examples");
    let mut refused = Vec::new();
    for path in &files {
        let out = ns.kubectl_output(
            &[
                "apply".as_ref(),
                "--dry-run=server".as_ref(),
                "-f".as_ref(),
                path.as_os_str(),
            ],
            None,
        )?;
        if !out.status.success() {
            refused.push(format!(
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if !refused.is_empty() {
        bail!(
            "{} of {} examples refused:\n{}",
            refused.len(),
            files.len(),
            refused.join("\n")
        );
    }
    Ok(())
}
