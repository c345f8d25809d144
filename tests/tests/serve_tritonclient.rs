//! `tractor serve` driven by NVIDIA's Python `tritonclient` (HTTP JSON, HTTP binary, gRPC), the client
//! KServe and Triton users already have, with every row's argmax held to onnxruntime's. Needs the fixtures
//! venv (`scripts/python-env.sh`).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;
use tractor_e2e::serve::{Serve, Split, repo_root, venv_python};

#[test]
fn tritonclient_http_json_http_binary_and_grpc() {
    let python = venv_python();
    assert!(
        python.is_file(),
        "{} missing: run scripts/python-env.sh",
        python.display()
    );
    let split = Split::load("digits_mlp").unwrap();
    let serve = Serve::start("digits_mlp.onnx", "digits", &[]).unwrap();
    let http = serve.http.trim_start_matches("http://").to_owned();
    let out = Command::new(python)
        .arg(repo_root().join("tests/clients/tritonclient_check.py"))
        .args([
            http.as_str(),
            &format!("127.0.0.1:{}", serve.grpc_port),
            "digits",
            "digits_mlp",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient check failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON figures from the tritonclient check: {stdout}"));
    for protocol in ["http_json", "http_binary", "grpc"] {
        let answered: Vec<usize> = figures[format!("{protocol}_argmax")]
            .as_array()
            .unwrap_or_else(|| panic!("no {protocol}_argmax in {figures}"))
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let agreement = split
            .argmax_agreement("probabilities", &answered)
            .unwrap_or_else(|e| panic!("tritonclient {protocol}: {e:#}"));
        println!("tritonclient {protocol}: {agreement}");
    }
}
