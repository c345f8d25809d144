//! The tractor CRD installs: the API server accepts its structural schema and serves the kind.

use anyhow::{Result, ensure};
use tractor_e2e::cluster::{cluster, condition_is, crd_name};

#[test]
fn crd_installs_and_is_established() -> Result<()> {
    let c = cluster()?;
    c.install_crd()?;
    let crd = c.kubectl_json(&["get", "crd", &crd_name()?])?;
    ensure!(
        condition_is(&crd, "NamesAccepted", "True"),
        "names not accepted: {}",
        crd["status"]
    );
    // A non-structural schema is accepted for storage but flagged with this condition.
    ensure!(
        !condition_is(&crd, "NonStructuralSchema", "True"),
        "schema is not structural: {}",
        crd["status"]
    );
    // The kind is served under its short name.
    c.kubectl(&["get", "mdep", "--all-namespaces"])?;
    Ok(())
}
