//! `tractor serve --sha256` pins the model file: a wrong digest stops the server before it listens, with an
//! error naming the expected and the actual digest; the right one serves.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tractor_e2e::cluster::wait_for;
use tractor_e2e::optimize::sha256;
use tractor_e2e::paths::{fixtures, tractor_binary};
use tractor_e2e::serve::{Serve, free_port};

#[test]
fn a_wrong_digest_refuses_to_start_naming_both_digests() -> Result<()> {
    let model = fixtures().join("digits_mlp.onnx");
    let actual = sha256(&model)?;
    let wrong = "0".repeat(64);
    let http_port = free_port()?;
    let mut child = Command::new(tractor_binary()?)
        .args(["serve", "--name", "digits", "--sha256", &wrong])
        .arg("--model")
        .arg(&model)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--grpc-addr",
            &format!("127.0.0.1:{}", free_port()?),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning tractor serve")?;
    let status = wait_for(Duration::from_secs(60), "tractor serve to exit", || {
        Ok(child.try_wait()?)
    })?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().context("stderr")?, &mut stderr)?;
    ensure!(!status.success(), "a wrong digest was served: {status}");
    ensure!(
        stderr.contains(&wrong) && stderr.contains(&actual),
        "the error must name the expected ({wrong}) and the actual ({actual}) digest:\n{stderr}"
    );
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err(),
        "something listens on the refused server's port"
    );

    // The right digest serves.
    let serve = Serve::start("digits_mlp.onnx", "digits", &["--sha256", &actual])?;
    let ready = reqwest::blocking::get(serve.model_url("/ready"))?;
    ensure!(ready.status().is_success(), "{}", ready.status());
    Ok(())
}
