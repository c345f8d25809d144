//! SIGTERM: requests in flight when the signal lands (at least one, counted by the test) each get a complete
//! 200 answer, readiness goes false meanwhile, then the process exits 0.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tractor_e2e::serve::{Serve, metric};
use tractor_serve::metrics::IN_FLIGHT;

/// Concurrent clients, each sending one slow request.
const CLIENTS: usize = 8;
/// Rows per request: with one inference thread and a batch limit below it, each request runs alone (about
/// 0.2 s), so the queue outlasts the drain delay and the server must wait for it.
const ROWS: usize = 4096;

/// What one client saw: when it started sending, when the last byte of its answer arrived, and the answer.
struct Outcome {
    started: Instant,
    answered: Instant,
    answer: Result<(u16, Value), String>,
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
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
    // Binary tensor data, built once and sent at once: the server decodes it fast, so the requests queue up
    // together behind the one inference thread.
    let header = json!({"inputs": [{"name": "input", "shape": [ROWS, 256], "datatype": "FP32", "parameters": {"binary_data_size": ROWS * 256 * 4}}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend((0..ROWS * 256).flat_map(|_| 0.5f32.to_le_bytes()));
    let together = Arc::new(Barrier::new(CLIENTS));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, body, together) = (url.clone(), body.clone(), Arc::clone(&together));
            let done = Arc::clone(&done);
            let header_len = header.len();
            std::thread::spawn(move || {
                let client = Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                together.wait();
                let started = Instant::now();
                // Answered at the last byte of the body, not at the status line.
                let received = client
                    .post(url)
                    .header("inference-header-content-length", header_len)
                    .body(body)
                    .send()
                    .and_then(|response| {
                        let status = response.status().as_u16();
                        response.bytes().map(|b| (status, b))
                    });
                let answered = Instant::now();
                done.fetch_add(1, Ordering::SeqCst);
                let answer = received
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|(status, bytes)| {
                        serde_json::from_slice(&bytes)
                            .map(|v| (status, v))
                            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
                    });
                Outcome {
                    started,
                    answered,
                    answer,
                }
            })
        })
        .collect();
    // Signal once the server holds every request its client is still waiting for (none answered during the
    // scrape): then an answer that arrives after the signal belongs to a request the server held when it
    // landed. Decoding a request ties up an I/O thread, so the last ones can be accepted after the first is
    // answered: all at once is not a condition to wait for.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answered = done.load(Ordering::SeqCst);
        let in_flight = metric(&serve.metrics().unwrap(), IN_FLIGHT, &[]);
        let unchanged = done.load(Ordering::SeqCst) == answered;
        if unchanged && in_flight == Some((CLIENTS - answered) as f64) && answered < CLIENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never held every unanswered request: {answered} of {CLIENTS} answered, {in_flight:?} in flight"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let signal_sending = Instant::now();
    serve.sigterm().unwrap();
    let signal_sent = Instant::now();
    // During the drain delay readiness is false but the port still answers.
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_not_ready = false;
    while Instant::now() < deadline {
        match client.get(format!("{}/v2/health/ready", serve.http)).send() {
            Ok(response) if response.status() == 503 => {
                saw_not_ready = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    assert!(saw_not_ready, "readiness never went false");
    let outcomes: Vec<Outcome> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let in_flight_at_signal = outcomes
        .iter()
        .filter(|o| o.started < signal_sending && o.answered > signal_sent)
        .count();
    let last = outcomes
        .iter()
        .map(|o| o.answered.saturating_duration_since(signal_sent))
        .max()
        .unwrap_or_default();
    println!(
        "{in_flight_at_signal} of {CLIENTS} requests in flight when SIGTERM was sent; the last answered {last:?} after it"
    );
    assert!(
        in_flight_at_signal > 0,
        "no request was in flight when SIGTERM was sent: the drain was not exercised"
    );
    // Every request, those in flight at the signal among them, got a whole 200 answer.
    for (request, outcome) in outcomes.iter().enumerate() {
        let (status, answer) = outcome
            .answer
            .as_ref()
            .unwrap_or_else(|e| panic!("request {request}: no complete answer: {e}"));
        assert_eq!(*status, 200, "request {request}: {answer}");
        let out = &answer["outputs"][0];
        let cols = out["shape"][1].as_u64().unwrap_or(0) as usize;
        assert_eq!(out["shape"][0], ROWS, "request {request}: {out}");
        let data = out["data"].as_array().unwrap();
        assert!(
            cols > 0 && data.len() == ROWS * cols && data.iter().all(Value::is_number),
            "request {request}: {} values for shape {}",
            data.len(),
            out["shape"]
        );
    }
    let status = serve.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit status {status}");
}
