//! `tractor serve` driven by NVIDIA's Python `tritonclient` (HTTP JSON, HTTP binary, gRPC), the client
//! KServe and Triton users already have. Needs the fixtures venv (`tests/fixtures/requirements.txt`).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use tractor_e2e::serve::{Serve, repo_root, venv_python};

#[test]
fn tritonclient_http_json_http_binary_and_grpc() {
    let python = venv_python();
    assert!(
        python.is_file(),
        "{} missing: python3 -m venv /root/.cache/tractor/venv && pip install -r tests/fixtures/requirements.txt",
        python.display()
    );
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
    println!("tritonclient: {stdout}");
    assert!(
        out.status.success(),
        "tritonclient check failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
}
