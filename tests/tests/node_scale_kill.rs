//! On the real node: `kubectl scale mdep/NAME --replicas=3` brings up three pods that serve, and a serving
//! process killed (SIGKILL) while a client sends requests through the Service costs a bounded window of
//! errors, after which every request succeeds again. The figures are printed for the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use reqwest::blocking::Client;
use tractor_e2e::cluster::wait_for;
use tractor_e2e::node::{
    NODE_WAIT, apply_digits, infer_argmax, kill_server, operator, ready_server_pods, real_node,
    restricted_namespace, service_url, wait_model_ready, wait_serving,
};
use tractor_e2e::serve::Split;

/// Successes in a row after the last error that count as "recovered".
const RECOVERED: usize = 100;

#[test]
fn scale_to_three_then_survive_a_killed_pod() -> Result<()> {
    let c = real_node()?;
    c.install_crd()?;
    let ns = restricted_namespace(c, "node-scale")?;
    let _op = operator(c, &ns)?;
    apply_digits(&ns, "digits", 1)?;
    wait_model_ready(&ns, "digits")?;

    ns.kubectl(&["scale", "mdep/digits", "--replicas=3"])?;
    let pods = wait_for(NODE_WAIT, "3 serving pods Ready", || {
        let pods = ready_server_pods(&ns, "digits")?;
        Ok((pods.len() == 3).then_some(pods))
    })?;
    let split = Split::load("digits_mlp")?;
    let reference = split.reference_argmax("probabilities").unwrap_or_default();
    let client = Client::builder().timeout(Duration::from_secs(2)).build()?;
    for (name, ip, _) in &pods {
        let got = wait_serving(&format!("pod {name} answering"), || {
            infer_argmax(
                &client,
                &format!("http://{ip}:8080"),
                "digits",
                &split,
                0..10,
            )
        })?;
        ensure!(got == reference[0..10], "pod {name}: {got:?}");
    }
    wait_for(NODE_WAIT, "status.readyReplicas 3", || {
        let md = tractor_e2e::modeldeployment::get(&ns, "digits")?;
        Ok((md["status"]["readyReplicas"] == 3).then_some(()))
    })?;

    // A client sends one request after another through the ClusterIP; one pod's server is killed meanwhile.
    let url = service_url(&ns, "digits")?;
    wait_serving("an answer through the ClusterIP", || {
        infer_argmax(&client, &url, "digits", &split, 0..1)
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // A new connection per request, so kube-proxy picks an endpoint for each one (a kept-alive connection
    // would stay on one pod, which may not be the one killed).
    let fresh = Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()?;
    let sender = {
        let (stop, client, url) = (stop.clone(), fresh, url.clone());
        let split = Split::load("digits_mlp")?;
        let reference = reference.clone();
        std::thread::spawn(move || {
            let mut log: Vec<(Duration, bool)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let row = i % split.rows();
                let ok = infer_argmax(&client, &url, "digits", &split, row..row + 1)
                    .is_ok_and(|got| got == [reference[row]]);
                log.push((start.elapsed(), ok));
                i += 1;
            }
            log
        })
    };
    let victim = pods[0].0.clone();
    wait_for(NODE_WAIT, "requests flowing before the kill", || {
        Ok((start.elapsed() > Duration::from_secs(3)).then_some(()))
    })?;
    let killed_at = start.elapsed();
    kill_server(c, &ns, &victim)?;
    // Recovered: the killed pod is back (restarted and Ready), and the client has seen a long run of
    // successes since.
    wait_for(NODE_WAIT, "the killed pod restarted and Ready", || {
        let p = ns.kubectl_json(&["get", "pod", &victim])?;
        let restarts = p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "server")
            .and_then(|s| s["restartCount"].as_i64())
            .unwrap_or(0);
        Ok(
            (restarts >= 1 && tractor_e2e::cluster::condition_is(&p, "Ready", "True"))
                .then_some(()),
        )
    })?;
    let settled_at = start.elapsed();
    wait_for(NODE_WAIT, "requests after the restart", || {
        Ok((start.elapsed() > settled_at + Duration::from_secs(3)).then_some(()))
    })?;
    stop.store(true, Ordering::Relaxed);
    let log = sender
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;

    let after_kill: Vec<_> = log.iter().filter(|(t, _)| *t >= killed_at).collect();
    let errors: Vec<Duration> = after_kill
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| *t)
        .collect();
    let streak = log.iter().rev().take_while(|(_, ok)| *ok).count();
    let window = match (errors.first(), errors.last()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    };
    println!(
        "kill report: {} requests in {:.1}s, {} after the kill; {} failed, error window {:.2}s \
         (first {:.2}s, last {:.2}s after the kill); pod Ready again {:.1}s after the kill; \
         {streak} successes in a row at the end",
        log.len(),
        start.elapsed().as_secs_f64(),
        after_kill.len(),
        errors.len(),
        window.as_secs_f64(),
        errors
            .first()
            .map_or(0.0, |t| (*t - killed_at).as_secs_f64()),
        errors
            .last()
            .map_or(0.0, |t| (*t - killed_at).as_secs_f64()),
        (settled_at - killed_at).as_secs_f64(),
    );
    ensure!(
        log.iter().any(|(t, ok)| *t < killed_at && *ok),
        "no successful request before the kill"
    );
    ensure!(
        streak >= RECOVERED.min(after_kill.len()),
        "requests did not recover: only {streak} successes in a row at the end"
    );
    ensure!(
        errors.len() < after_kill.len(),
        "every request after the kill failed"
    );
    Ok(())
}
