//! SIGTERM: readiness goes false, requests in flight finish with 200, then the process exits 0.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::json;
use tractor_e2e::serve::Serve;

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    // One inference thread and a drain delay, so requests are still queued when the signal lands.
    let mut serve = Serve::start(
        "dense.onnx",
        "dense",
        &[
            "--threads",
            "1",
            "--max-batch-size",
            "8",
            "--drain-delay-millis",
            "300",
        ],
    )
    .unwrap();
    let url = serve.model_url("/infer");
    let body = json!({"inputs": [{"name": "input", "shape": [256, 256], "datatype": "FP32", "data": vec![0.5f32; 256 * 256]}]});
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap()
                    .post(url)
                    .json(&body)
                    .send()
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Wait until the server has them in flight (condition, not a fixed sleep).
    let c = Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = c
            .get(format!("{}/metrics", serve.http))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let in_flight = text
            .lines()
            .find(|l| l.starts_with("tractor_inference_in_flight"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_flight >= 2.0 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    serve.sigterm().unwrap();
    // During the drain delay readiness is false but the port still answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut saw_not_ready = false;
    while std::time::Instant::now() < deadline {
        match c.get(format!("{}/v2/health/ready", serve.http)).send() {
            Ok(r) if r.status() == 503 => {
                saw_not_ready = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    assert!(saw_not_ready, "readiness never went false");
    let statuses: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "in-flight requests: {statuses:?}"
    );
    let status = serve.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit status {status}");
}
