//! Runs `tractor operator` as a real process against the local cluster, scoped to one test namespace, and
//! reads its admin endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::cluster::{Cluster, DEFAULT_WAIT, wait_for};
pub use crate::paths::tractor_binary;

/// The debug log of the operators a test starts in `namespace`, appended to by each:
/// `target/debug/e2e-logs/<namespace>-operator.log`. A file rather than the test output, where every
/// concurrently running test's operator interleaved its debug lines into CI's log.
fn log_file(namespace: &str) -> Result<(PathBuf, std::fs::File)> {
    let dir = crate::paths::target_profile_dir()?.join("e2e-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{namespace}-operator.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((path, file))
}

/// A running operator; killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    admin: String,
    namespace: String,
}

impl Operator {
    /// Starts an operator watching `namespace` only, and waits until its `/ready` says so.
    pub fn start(cluster: &Cluster, namespace: &str) -> Result<Self> {
        let op = Self::spawn(cluster, namespace, &[])?;
        op.wait_ready()?;
        Ok(op)
    }

    /// Starts an operator with extra flags and waits until its admin port answers `/live`.
    pub fn spawn(cluster: &Cluster, namespace: &str, extra: &[&str]) -> Result<Self> {
        Self::spawn_as(&cluster.kubeconfig(), namespace, extra)
    }

    /// Like [`Operator::spawn`], authenticating with `kubeconfig` (e.g. a ServiceAccount's token, so the
    /// process has exactly that account's RBAC).
    pub fn spawn_as(kubeconfig: &Path, namespace: &str, extra: &[&str]) -> Result<Self> {
        Self::spawn_image_as(kubeconfig, namespace, "tractor:test", extra)
    }

    /// Like [`Operator::spawn`], giving the pods it creates `image` (KWOK never runs them; the real node does).
    pub fn spawn_with_image(
        cluster: &Cluster,
        namespace: &str,
        image: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn_image_as(&cluster.kubeconfig(), namespace, image, extra)
    }

    fn spawn_image_as(
        kubeconfig: &Path,
        namespace: &str,
        image: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin = format!("127.0.0.1:{port}");
        let (log_path, log) = log_file(namespace)?;
        // Captured by the test harness: shown with a failing test's output only.
        eprintln!("operator log: {}", log_path.display());
        let child = Command::new(tractor_binary()?)
            .args([
                "operator",
                "--namespace",
                namespace,
                "--admin-addr",
                &admin,
                "--image",
                image,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,tractor_operator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tractor operator")?;
        let op = Self {
            child,
            admin,
            namespace: namespace.to_owned(),
        };
        // The admin port answers /live before leader election and the first sync.
        wait_for(DEFAULT_WAIT, "operator /live", || {
            Ok(op.get("/live").ok().map(|_| ()))
        })?;
        Ok(op)
    }

    /// True when `/ready` answers 200 now.
    pub fn is_ready(&self) -> bool {
        self.get("/ready").is_ok()
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self) -> Result<()> {
        wait_for(DEFAULT_WAIT, "operator /ready", || {
            Ok(self
                .get("/ready")
                .ok()
                .filter(|b| b.starts_with("ok"))
                .map(|_| ()))
        })
    }

    /// GETs a path on the admin port (plain HTTP/1.0, so no client crate is needed).
    pub fn get(&self, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.admin)?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{path}: {head}"
        );
        Ok(body.to_owned())
    }

    /// The sum of one operator metric's samples (0 when absent).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let body = self.get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The namespace this operator watches.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
