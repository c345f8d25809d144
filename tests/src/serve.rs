//! Process-test helpers for `tractor serve`: find the binary and fixtures, start it on free ports,
//! wait for readiness, read `/metrics`, send SIGTERM, and compare answers with onnxruntime's.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use crate::optimize::free_port;
use crate::paths::tractor_binary;
pub use crate::paths::{fixtures, repo_root, venv_python};

/// A running `tractor serve`; killed on drop.
pub struct Serve {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The gRPC port.
    pub grpc_port: u16,
    /// The served model name.
    pub name: String,
    /// The client readiness is polled with (trusts the test CA when the server speaks TLS).
    client: reqwest::blocking::Client,
}

impl Serve {
    /// Start `tractor serve` on fixture `model` (e.g. `digits_mlp.onnx`) as `name`, plus `extra` flags,
    /// and wait until `/v2/health/ready` says so.
    pub fn start(model: &str, name: &str, extra: &[&str]) -> anyhow::Result<Serve> {
        Serve::start_with(model, name, extra, None)
    }

    /// As [`Serve::start`], for a server started with `--tls-cert/--tls-key` (in `extra`) signed by the
    /// CA `ca_pem`: `http` is then `https://localhost:PORT`.
    pub fn start_tls(
        model: &str,
        name: &str,
        extra: &[&str],
        ca_pem: &[u8],
    ) -> anyhow::Result<Serve> {
        Serve::start_with(model, name, extra, Some(ca_pem))
    }

    fn start_with(
        model: &str,
        name: &str,
        extra: &[&str],
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Serve> {
        let http_port = free_port()?;
        let grpc_port = free_port()?;
        let model_path = fixtures().join(model);
        let child = Command::new(tractor_binary()?)
            .arg("serve")
            .arg("--model")
            .arg(&model_path)
            .args([
                "--name",
                name,
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--grpc-addr",
                &format!("127.0.0.1:{grpc_port}"),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tractor serve")?;
        let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2));
        let http = match ca_pem {
            None => format!("http://127.0.0.1:{http_port}"),
            Some(pem) => {
                client = client.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
                format!("https://localhost:{http_port}")
            }
        };
        let mut serve = Serve {
            child: Some(child),
            http,
            grpc_port,
            name: name.to_owned(),
            client: client.build()?,
        };
        serve.wait_ready(Duration::from_secs(60))?;
        Ok(serve)
    }

    /// Poll readiness until it answers 200 or the process dies.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client.clone();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/v2/health/ready", self.http);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("tractor serve exited with {status} before ready: {err}");
            }
            if client
                .get(&url)
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("tractor serve not ready after {timeout:?}")
    }

    /// `{http}/v2/models/{name}{suffix}`.
    pub fn model_url(&self, suffix: &str) -> String {
        format!("{}/v2/models/{}{}", self.http, self.name, suffix)
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.http))
            .send()?
            .error_for_status()?
            .text()?)
    }

    /// Send SIGTERM (through `kill`, since tests forbid unsafe code).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("already stopped")?;
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -TERM failed");
        }
        Ok(())
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("already stopped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("tractor serve still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A throwaway PKI made with the `openssl` command: a CA and a server certificate for `localhost` and
/// `127.0.0.1` signed by it (a self-signed leaf would be refused by rustls as a CA used as end entity).
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The server certificate file.
    pub cert: PathBuf,
    /// The server key file.
    pub key: PathBuf,
}

impl TestPki {
    /// Write the PKI into `dir`.
    pub fn create(dir: &std::path::Path) -> anyhow::Result<TestPki> {
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=tractor-test-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(&ca)?;
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "tls.key", "-out", "tls.csr"]);
        openssl(&csr)?;
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "tls.crt",
        ])?;
        Ok(TestPki {
            ca_pem: std::fs::read(dir.join("ca.crt"))?,
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        })
    }
}

/// A fixture's labelled test split and onnxruntime's outputs (`NAME_test.json`).
#[derive(Debug, serde::Deserialize)]
pub struct Split {
    /// The model's input name.
    pub input: String,
    /// Features per row.
    pub features: usize,
    /// Rows, flat.
    pub x: Vec<f32>,
    /// True labels.
    pub y: Vec<i64>,
    /// onnxruntime's outputs by name.
    pub reference: std::collections::BTreeMap<String, Reference>,
}

/// One reference output.
#[derive(Debug, serde::Deserialize)]
pub struct Reference {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Values, flat.
    pub data: Vec<f64>,
}

impl Split {
    /// Load `tests/fixtures/{name}_test.json`.
    pub fn load(name: &str) -> anyhow::Result<Split> {
        let text = std::fs::read_to_string(fixtures().join(format!("{name}_test.json")))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Rows in the split.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// onnxruntime's argmax of output `name` (rank 2) per row.
    pub fn reference_argmax(&self, name: &str) -> Option<Vec<usize>> {
        let r = self.reference.get(name)?;
        let cols = *r.shape.get(1)?;
        Some(r.data.chunks(cols).map(argmax).collect())
    }
}

/// Index of the largest value.
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Rows whose onnxruntime top-2 margin is below this are left out of argmax agreement: f32 rounding in a
/// different kernel may order such a near-tie either way, and neither order is wrong.
pub const NEAR_TIE: f64 = 1e-6;

/// The outcome of [`Split::argmax_agreement_at`] when every compared row agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// Rows compared, all of which agreed.
    pub agree: usize,
    /// Rows left out as near-ties (see [`NEAR_TIE`]).
    pub near_ties: usize,
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows agree with onnxruntime's argmax, {} near-ties left out",
            self.agree, self.near_ties
        )
    }
}

impl Split {
    /// Require a server's argmax for every row of the split (`got[i]` for row `i`) to equal onnxruntime's on
    /// output `name`, by the rule of [`Split::argmax_agreement_at`].
    pub fn argmax_agreement(&self, name: &str, got: &[usize]) -> anyhow::Result<Agreement> {
        if got.len() != self.rows() {
            bail!(
                "{} answers for the {} rows of the split",
                got.len(),
                self.rows()
            );
        }
        self.argmax_agreement_at(name, got.iter().copied().enumerate())
    }

    /// Require a server's argmax for some rows, as (row, class) pairs, to equal onnxruntime's on output
    /// `name`, except rows onnxruntime itself separates by less than [`NEAR_TIE`]. The error names every
    /// disagreeing row with both classes and onnxruntime's margin.
    pub fn argmax_agreement_at(
        &self,
        name: &str,
        got: impl IntoIterator<Item = (usize, usize)>,
    ) -> anyhow::Result<Agreement> {
        let reference = self
            .reference
            .get(name)
            .with_context(|| format!("no onnxruntime output {name}"))?;
        let cols = *reference.shape.get(1).context("reference is not rank 2")?;
        let mut agreement = Agreement {
            agree: 0,
            near_ties: 0,
        };
        let mut disagree = Vec::new();
        let mut compared = 0;
        for (row_ix, got) in got {
            let row = reference
                .data
                .get(row_ix * cols..(row_ix + 1) * cols)
                .with_context(|| format!("row {row_ix} is not in the split"))?;
            let want = argmax(row);
            let runner_up = row
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != want)
                .map(|(_, v)| *v)
                .fold(f64::NEG_INFINITY, f64::max);
            let margin = row[want] - runner_up;
            compared += 1;
            if margin < NEAR_TIE {
                agreement.near_ties += 1;
            } else if got == want {
                agreement.agree += 1;
            } else {
                disagree.push(format!(
                    "row {row_ix}: class {got}, onnxruntime {want} (margin {margin:.3e})"
                ));
            }
        }
        if !disagree.is_empty() {
            bail!(
                "{} of {compared} rows disagree with onnxruntime's argmax on {name}: {}",
                disagree.len(),
                disagree.join("; ")
            );
        }
        Ok(agreement)
    }
}

/// The value of the sample of metric `name` (the full series name, e.g. `..._bucket`) carrying every label
/// in `labels`, from Prometheus text; `None` when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let has_all = labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            (series_name == name && has_all)
                .then(|| value.parse().ok())
                .flatten()
        })
}
