//! Helpers for the `tractor optimize` process tests: the binary, the fixtures, a local HTTP server and a real
//! S3-compatible server (SeaweedFS, built by `tests/s3/build.sh`), each started on loopback and stopped on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::paths::tractor_binary;
pub use crate::paths::{fixtures, repo_root};

/// What one `tractor optimize` run gave.
#[derive(Debug)]
pub struct Run {
    /// Exit status code.
    pub code: i32,
    /// The report, parsed from `--report`.
    pub report: Value,
    /// stderr, for failure messages.
    pub stderr: String,
}

impl Run {
    /// The report's reason code, if any.
    pub fn reason(&self) -> Option<&str> {
        self.report.get("reason").and_then(Value::as_str)
    }
}

/// Run `tractor optimize` with `args` plus `--out OUT --report OUT/../report.json`, with `env` added.
pub fn optimize(out: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
    let report = out.with_extension("report.json");
    let mut cmd = Command::new(tractor_binary()?);
    cmd.arg("optimize")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--report")
        .arg(&report)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().context("running tractor optimize")?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("no report written; stderr:\n{stderr}"))?;
    let parsed: Value = serde_json::from_str(&text)?;
    // The same report goes to stdout, so a Job's logs carry it too.
    let printed = String::from_utf8_lossy(&stdout);
    anyhow::ensure!(
        printed.trim() == text.trim(),
        "stdout differs from report: {printed}"
    );
    anyhow::ensure!(text.len() <= 4096, "report is {} bytes", text.len());
    Ok(Run {
        code: status.code().unwrap_or(-1),
        report: parsed,
        stderr,
    })
}

/// Files in `dir` (names), sorted; an absent folder is empty.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Hex sha256 of `bytes`, as [`sha256`] computes it.
pub fn sha256_bytes(bytes: &[u8]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bytes");
    std::fs::write(&path, bytes)?;
    sha256(&path)
}

/// Hex sha256 of a file, with the system's sha256sum (an independent implementation from the binary's).
pub fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// A free loopback port (the listener is dropped, so a server can take it), never one this process handed out
/// before: tests in one binary run in parallel, and two of them given the same port between the drop and their
/// server's bind would share one server, which the first to finish kills under the other.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// Wait until `port` accepts connections on loopback.
pub fn wait_for_port(port: u16, timeout: Duration, child: &mut Child) -> Result<()> {
    wait_for_port_at(LOOPBACK, port, timeout, child)
}

/// Loopback, where the test servers listen unless pods must reach them.
const LOOPBACK: &str = "127.0.0.1";

/// Wait until `host:port` accepts connections.
fn wait_for_port_at(host: &str, port: u16, timeout: Duration, child: &mut Child) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        // Exit first: a server that could not bind must not pass on another process's listener.
        if let Some(status) = child.try_wait()? {
            bail!("server exited early: {status}");
        }
        if TcpStream::connect((host, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("port {port} not open after {timeout:?}")
}

/// A child process killed on drop.
pub struct Server {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's `http.server` serving `root` on a free loopback port.
pub fn http_server(root: &Path) -> Result<Server> {
    let port = free_port()?;
    let mut child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    wait_for_port(port, Duration::from_secs(20), &mut child)?;
    Ok(Server {
        child,
        port,
        _dir: None,
    })
}

/// Credentials the S3 test server accepts.
pub const S3_ACCESS_KEY: &str = "tractortest";
/// Secret of [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "tractortestsecret";

/// The SeaweedFS binary, built by `tests/s3/build.sh` when missing (minutes on a cold Go cache).
pub fn weed_bin() -> Result<PathBuf> {
    let out = Command::new(repo_root().join("tests/s3/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/s3/build.sh")?;
    anyhow::ensure!(out.status.success(), "tests/s3/build.sh failed");
    let path = String::from_utf8(out.stdout)?.trim().to_owned();
    Ok(PathBuf::from(path))
}

/// A real SeaweedFS (master, volume, filer and S3 gateway in one process) on loopback, with one identity.
pub fn s3_server() -> Result<Server> {
    s3_server_at(LOOPBACK)
}

/// [`s3_server`] listening on `ip` only: the cluster's host address ([`crate::cluster::HOST_IP`]) for a
/// store that pods on the real node reach. Its free ports are picked on loopback, which shares the port space.
pub fn s3_server_at(ip: &str) -> Result<Server> {
    let weed = weed_bin()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("s3.json");
    std::fs::write(
        &config,
        serde_json::json!({"identities": [{
            "name": "tractor",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]
        }]})
        .to_string(),
    )?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let (s3, master, volume, filer) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let log = std::fs::File::create(dir.path().join("weed.log"))?;
    let mut child = Command::new(weed)
        .arg("server")
        .arg(format!("-dir={}", data.display()))
        .arg(format!("-ip={ip}"))
        .arg(format!("-ip.bind={ip}"))
        .args(["-s3", "-filer"])
        .arg(format!("-master.port={master}"))
        .arg(format!("-volume.port={volume}"))
        .arg(format!("-filer.port={filer}"))
        .arg(format!("-s3.port={s3}"))
        .arg(format!("-s3.config={}", config.display()))
        .arg("-master.volumeSizeLimitMB=64")
        .arg("-volume.max=8")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting weed server")?;
    wait_for_port_at(ip, s3, Duration::from_secs(90), &mut child)?;
    Ok(Server {
        child,
        port: s3,
        _dir: Some(dir),
    })
}

/// Run curl with AWS SigV4 against the S3 server (PUT a bucket or an object); retried while the server warms up.
pub fn s3_put(port: u16, path: &str, file: Option<&Path>) -> Result<()> {
    s3_put_at(LOOPBACK, port, path, file)
}

/// [`s3_put`] to a server listening on `host`.
pub fn s3_put_at(host: &str, port: u16, path: &str, file: Option<&Path>) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            // curl signs the body's hash only if told how; SeaweedFS accepts the standard unsigned-payload marker.
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg("--user")
            .arg(format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}"));
        if let Some(f) = file {
            cmd.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        cmd.arg(format!("http://{host}:{port}/{path}"));
        let out = cmd.output().context("running curl")?;
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if code.starts_with('2') {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "PUT {path}: HTTP {code} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What one signed request to the S3 test server answered.
#[derive(Debug)]
pub struct S3Response {
    /// HTTP status code.
    pub status: u16,
    /// The response headers, as curl wrote them (one `Name: value` a line).
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl S3Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// One request (`GET`, `HEAD`, `DELETE`) to the S3 test server with AWS SigV4, path-style (`bucket/key`, or
/// `bucket?query` with the query's values percent-encoded, as SigV4 signs them); not retried.
pub fn s3_request(port: u16, method: &str, path: &str) -> Result<S3Response> {
    s3_request_at(LOOPBACK, port, method, path)
}

/// [`s3_request`] to a server listening on `host`.
pub fn s3_request_at(host: &str, port: u16, method: &str, path: &str) -> Result<S3Response> {
    let dir = tempfile::tempdir()?;
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "%{http_code}"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg("--user")
        .arg(format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}"))
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body);
    if method == "HEAD" {
        // Not `-X HEAD`: curl would wait for the body a Content-Length announces.
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    let out = cmd
        .arg(format!("http://{host}:{port}/{path}"))
        .output()
        .context("running curl")?;
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| {
            format!(
                "{method} {path}: curl printed no status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(S3Response {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    })
}

/// The keys of `bucket` under `prefix` (one page of a ListObjectsV2, enough for a test's handful).
pub fn s3_keys(port: u16, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    s3_keys_at(LOOPBACK, port, bucket, prefix)
}

/// [`s3_keys`] of a server listening on `host`.
pub fn s3_keys_at(host: &str, port: u16, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let encoded = prefix.replace('/', "%2F");
    let listing = s3_request_at(
        host,
        port,
        "GET",
        &format!("{bucket}?list-type=2&prefix={encoded}"),
    )?;
    let text = String::from_utf8(listing.body)?;
    anyhow::ensure!(listing.status == 200, "listing {bucket}/{prefix}: {text}");
    Ok(text
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
        .collect())
}

/// What one `tractor fetch` run gave.
#[derive(Debug)]
pub struct FetchRun {
    /// Exit status code.
    pub code: i32,
    /// The JSON line it prints on stdout (its result or its failure).
    pub result: Value,
    /// stderr: progress lines and logs.
    pub stderr: String,
}

/// Run `tractor fetch --uri URI --sha256 SHA256 --out OUT` with `env` added.
pub fn fetch(uri: &str, sha256: &str, out: &Path, env: &[(&str, &str)]) -> Result<FetchRun> {
    let mut cmd = Command::new(tractor_binary()?);
    cmd.args(["fetch", "--uri", uri, "--sha256", sha256, "--out"])
        .arg(out)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let output = cmd.output().context("running tractor fetch")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result = serde_json::from_str(stdout.trim())
        .with_context(|| format!("tractor fetch printed {stdout:?}; stderr:\n{stderr}"))?;
    Ok(FetchRun {
        code: output.status.code().unwrap_or(-1),
        result,
        stderr,
    })
}

/// The environment `tractor optimize` gets in a pod for this server.
pub fn s3_env(port: u16, secret: &str) -> Vec<(String, String)> {
    vec![
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into()),
    ]
}

/// Write an ONNX model with an op tract does not implement, using the fixtures' Python venv (onnx package).
pub fn unsupported_op_model(dest: &Path) -> Result<()> {
    onnx_from_python(
        dest,
        r#"
import sys, onnx
from onnx import helper, TensorProto
x = helper.make_tensor_value_info("x", TensorProto.STRING, [None])
y = helper.make_tensor_value_info("y", TensorProto.STRING, [None])
node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER")
g = helper.make_graph([node], "g", [x], [y])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
onnx.save(m, sys.argv[1])
"#,
    )
}

/// An ONNX model whose input is `x`, FLOAT, with both dimensions free (`[N, F]`), and whose output `y` sums each
/// row: nothing in the graph fixes `F`, so only a declaration can.
pub fn free_features_model(dest: &Path) -> Result<()> {
    onnx_from_python(
        dest,
        r#"
import sys, onnx
from onnx import helper, TensorProto
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "F"])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
g = helper.make_graph([node], "g", [x], [y], initializer=[axes])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
onnx.save(m, sys.argv[1])
"#,
    )
}

/// Runs `script` (which saves a model to `sys.argv[1]`) with the fixtures venv's Python.
fn onnx_from_python(dest: &Path, script: &str) -> Result<()> {
    let python = std::env::var("TRACTOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tractor/venv")
        })
        .join("bin/python");
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(dest)
        .status()
        .with_context(|| format!("running {} (make the fixtures venv)", python.display()))?;
    anyhow::ensure!(status.success(), "generating {} failed", dest.display());
    Ok(())
}
