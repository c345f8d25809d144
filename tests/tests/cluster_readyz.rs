//! The API server of the local cluster is up, ready, and reports the version it was built as.

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::cluster;

#[test]
fn apiserver_answers_readyz() -> Result<()> {
    let c = cluster()?;
    let url = format!("{}/readyz?verbose", c.apiserver_url());
    let body = c.curl(&["--cacert".as_ref(), c.ca_cert().as_os_str(), url.as_ref()])?;
    ensure!(
        body.contains("[+]etcd ok"),
        "readyz does not report etcd ok:\n{body}"
    );
    ensure!(
        body.trim_end().ends_with("readyz check passed"),
        "readyz not passed:\n{body}"
    );
    Ok(())
}

#[test]
fn server_version_is_set_by_ldflags() -> Result<()> {
    let c = cluster()?;
    let v = c.kubectl_json(&["version"])?;
    let server = v["serverVersion"]["gitVersion"]
        .as_str()
        .context("no serverVersion.gitVersion")?;
    // Without the build's ldflags this would be v0.0.0-master+$Format:%H$, which breaks Helm's kubeVersion.
    ensure!(
        server.starts_with("v1."),
        "unexpected server version {server}"
    );
    Ok(())
}
