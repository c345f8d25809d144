//! Prometheus runs next to the cluster and scrapes the API server.

use anyhow::Result;
use tractor_e2e::cluster::{DEFAULT_WAIT, cluster, wait_for};

#[test]
fn prometheus_scrapes_the_apiserver() -> Result<()> {
    let c = cluster()?;
    // The first scrape happens up to one interval (5s) after Prometheus starts.
    wait_for(DEFAULT_WAIT, "up{job=\"apiserver\"} == 1", || {
        let result = c.prometheus_query("up")?;
        let found = result
            .iter()
            .any(|s| s["metric"]["job"] == "apiserver" && s["value"][1] == "1");
        Ok(found.then_some(()))
    })
}
