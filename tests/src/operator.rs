//! The operator under test, two ways: the chart's, installed by Helm into the test's namespace and running as
//! a pod on the real node under the chart's ServiceAccount (the user's path, [`Operator::start`]); or a
//! `tractor operator` process on this machine under a token of that same ServiceAccount, for the few tests
//! that must kill or time a process ([`Operator::spawn`]). Either way the harness reads its admin endpoints,
//! keeps its log under `target/debug/e2e-logs/`, and fails the test when it logged a forbidden API call.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::{Cluster, DEFAULT_WAIT, HOST_IP, PROMETHEUS_PORT, wait_for};
use crate::install::{Release, ServiceAccountKubeconfig, fullname, install_release};
pub use crate::paths::tractor_binary;

/// The chart's default admin port (`adminPort` in `charts/tractor/values.yaml`).
const ADMIN_PORT: u16 = 8090;

/// The log line the operator writes for every API call the API server refused with 403.
const FORBIDDEN: &str = tractor_operator::rbac::FORBIDDEN_LOG;

/// The debug log of the operators a test starts in `namespace`, appended to by each:
/// `target/debug/e2e-logs/<namespace>-operator.log`. A file rather than the test output, where every
/// concurrently running test's operator interleaved its debug lines into CI's log.
fn log_path(namespace: &str) -> Result<PathBuf> {
    let dir = crate::paths::target_profile_dir()?.join("e2e-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{namespace}-operator.log")))
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// How the operator runs.
enum Backend {
    /// The chart's Deployment in the test namespace; the release is uninstalled on drop.
    Chart { release: Release, selector: String },
    /// A process on this machine under the chart's ServiceAccount token; killed on drop. The first process
    /// of a namespace holds the release that grants its RBAC.
    Process {
        child: Child,
        admin: String,
        release: Option<Release>,
        _kubeconfig: ServiceAccountKubeconfig,
    },
}

/// A running operator.
pub struct Operator {
    cluster: &'static Cluster,
    backend: Backend,
    namespace: String,
    log: PathBuf,
    /// `verb resource` pairs this test expects the API server to refuse (see [`Operator::expect_forbidden`]).
    expected_forbidden: Vec<String>,
}

/// The chart's values every test install starts from: the image imported on the real node, and the
/// cluster's Prometheus, reachable from pods on the cluster's host address.
fn base_values(namespace: &str) -> Vec<String> {
    let [repository, tag] = crate::install::image_values();
    vec![
        repository,
        tag,
        format!("watchNamespace={namespace}"),
        format!("prometheusUrl=http://{HOST_IP}:{PROMETHEUS_PORT}"),
        "logLevel=info\\,tractor_operator=debug".to_owned(),
        // Two more pods per install that only the scale-to-zero tests use; they switch it on.
        "activator.enabled=false".to_owned(),
    ]
}

impl Operator {
    /// Installs the chart into `namespace` (release `namespace`, namespaced mode: it watches only there, so
    /// parallel tests never reconcile each other's objects) and waits until its pod on the real node is
    /// Ready.
    pub fn start(cluster: &'static Cluster, namespace: &str) -> Result<Self> {
        Self::start_with(cluster, namespace, &[])
    }

    /// Like [`Operator::start`], with extra `--set` values for the chart.
    pub fn start_with(cluster: &'static Cluster, namespace: &str, sets: &[&str]) -> Result<Self> {
        crate::node::real_node()?;
        let mut values = base_values(namespace);
        values.extend(sets.iter().map(|s| (*s).to_owned()));
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let release = install_release(cluster, namespace, namespace, &values)?;
        let selector = format!(
            "app.kubernetes.io/name=tractor-operator,app.kubernetes.io/instance={namespace}"
        );
        let op = Self {
            cluster,
            backend: Backend::Chart { release, selector },
            namespace: namespace.to_owned(),
            log: log_path(namespace)?,
            expected_forbidden: vec![],
        };
        // Captured by the test harness: shown with a failing test's output only.
        eprintln!("operator log: {}", op.log.display());
        op.wait_ready()?;
        Ok(op)
    }

    /// Starts `tractor operator` as a process on this machine, watching `namespace`, with extra flags; it
    /// authenticates with a token of the chart's ServiceAccount (the chart is installed with no operator pod,
    /// for its RBAC only), so it has exactly the permissions the chart grants. Waits until `/live` answers.
    /// Only for tests that must kill or time the process itself: say why in the test's doc comment.
    pub fn spawn(cluster: &'static Cluster, namespace: &str, extra: &[&str]) -> Result<Self> {
        let mut values = base_values(namespace);
        // The Lease Role too, for tests that elect a leader among processes.
        values.extend([
            "replicas=0".to_owned(),
            "leaderElection.enabled=true".to_owned(),
        ]);
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        // A second process in the namespace (leader election) shares the first one's release.
        let installed =
            crate::install::helm_output(cluster, &["status", namespace, "-n", namespace])?;
        let release = if installed.success {
            None
        } else {
            Some(install_release(cluster, namespace, namespace, &values)?)
        };
        let kubeconfig = ServiceAccountKubeconfig::new(cluster, namespace, &fullname(namespace))?;
        Self::spawn_process(cluster, namespace, release, kubeconfig, extra)
    }

    fn spawn_process(
        cluster: &'static Cluster,
        namespace: &str,
        release: Option<Release>,
        kubeconfig: ServiceAccountKubeconfig,
        extra: &[&str],
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin = format!("127.0.0.1:{port}");
        let log = log_path(namespace)?;
        eprintln!("operator log: {}", log.display());
        let file = open_log(&log)?;
        let child = Command::new(tractor_binary()?)
            .args([
                "operator",
                "--namespace",
                namespace,
                "--admin-addr",
                &admin,
                "--image",
                crate::node::E2E_IMAGE,
                "--log-format",
                "json",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig.path())
            .env("RUST_LOG", "info,tractor_operator=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting tractor operator")?;
        let op = Self {
            cluster,
            backend: Backend::Process {
                child,
                admin,
                release,
                _kubeconfig: kubeconfig,
            },
            namespace: namespace.to_owned(),
            log,
            expected_forbidden: vec![],
        };
        // The admin port answers /live before leader election and the first sync.
        wait_for(DEFAULT_WAIT, "operator /live", || {
            Ok(op.get("/live").ok().map(|_| ()))
        })?;
        Ok(op)
    }

    /// Declares that this test expects the API server to refuse `verb` on `resource` (as the operator logs
    /// them, e.g. `("get", "secrets")`), so that 403 does not fail it.
    pub fn expect_forbidden(&mut self, verb: &str, resource: &str) {
        self.expected_forbidden.push(format!("{verb} {resource}"));
    }

    /// The admin address (`IP:port`) of the operator now: the Ready pod's IP (the real node's pods are
    /// routed from this machine) or the process' loopback port.
    fn admin(&self) -> Result<String> {
        match &self.backend {
            Backend::Process { admin, .. } => Ok(admin.clone()),
            Backend::Chart { selector, .. } => {
                let pods = self.cluster.kubectl_json(&[
                    "get",
                    "pods",
                    "-n",
                    &self.namespace,
                    "-l",
                    selector,
                ])?;
                pods["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .find_map(|p| p["status"]["podIP"].as_str())
                    .map(|ip| format!("{ip}:{ADMIN_PORT}"))
                    .context("no operator pod with an IP")
            }
        }
    }

    /// True when `/ready` answers 200 now (a standby replica included).
    pub fn is_ready(&self) -> bool {
        self.get("/ready").is_ok()
    }

    /// True when `/ready` says this replica leads and has synced (`ok`), not that it stands by.
    pub fn is_leading(&self) -> bool {
        self.get("/ready").is_ok_and(|b| b.trim() == "ok")
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
        let admin = self.admin()?;
        let addr: std::net::SocketAddr = admin.parse().context("admin address")?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
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

    /// Stops the operator at once, as a crash would: the process gets SIGKILL; the chart's pod is deleted
    /// with no grace period and its Deployment scaled to 0 first, so nothing replaces it until
    /// [`Operator::resume`].
    pub fn kill(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Process { child, .. } => {
                child.kill()?;
                child.wait()?;
            }
            Backend::Chart { selector, .. } => {
                let selector = selector.clone();
                self.save_pod_logs()?;
                let deployment = format!("deployment/{}", fullname(&self.namespace));
                let ns = self.namespace.clone();
                self.cluster
                    .kubectl(&["scale", &deployment, "--replicas=0", "-n", &ns])?;
                self.cluster.kubectl(&[
                    "delete",
                    "pods",
                    "-n",
                    &ns,
                    "-l",
                    &selector,
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ])?;
                wait_for(DEFAULT_WAIT, "no operator pod", || {
                    let pods = self
                        .cluster
                        .kubectl_json(&["get", "pods", "-n", &ns, "-l", &selector])?;
                    Ok(pods["items"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                        .then_some(()))
                })?;
            }
        }
        Ok(())
    }

    /// Brings the chart's operator back after [`Operator::kill`] (one replica) and waits until it is Ready.
    pub fn resume(&self) -> Result<()> {
        let Backend::Chart { .. } = &self.backend else {
            bail!("resume() is for the chart's operator; spawn a new process instead");
        };
        let deployment = format!("deployment/{}", fullname(&self.namespace));
        self.cluster
            .kubectl(&["scale", &deployment, "--replicas=1", "-n", &self.namespace])?;
        self.wait_ready()
    }

    /// The chart's release this operator came with (for a process: the release that holds its RBAC).
    pub fn release(&self) -> Option<&Release> {
        match &self.backend {
            Backend::Chart { release, .. } => Some(release),
            Backend::Process { release, .. } => release.as_ref(),
        }
    }

    /// The namespace this operator watches.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Appends the logs of the chart's operator pods (and of their previous containers, after a restart)
    /// to the test's operator log.
    fn save_pod_logs(&self) -> Result<()> {
        let Backend::Chart { selector, .. } = &self.backend else {
            return Ok(());
        };
        use std::io::Write;
        let mut file = open_log(&self.log)?;
        for previous in [true, false] {
            let mut args = vec![
                "logs",
                "-n",
                &self.namespace,
                "-l",
                selector.as_str(),
                "--tail=-1",
                "--prefix",
            ];
            if previous {
                args.push("--previous");
            }
            // --previous fails when no container restarted: nothing to save then.
            let out = self.cluster.kubectl_output(&args, None)?;
            file.write_all(&out.stdout)?;
        }
        Ok(())
    }

    /// The forbidden API calls in the operator's log that the test did not expect: `verb resource` each.
    fn unexpected_forbidden(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        forbidden_calls(&text)
            .into_iter()
            .filter(|call| !self.expected_forbidden.contains(call))
            .collect()
    }
}

/// `verb resource` of every forbidden-call line in an operator log (JSON lines, each maybe prefixed by
/// `kubectl logs --prefix`).
fn forbidden_calls(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(FORBIDDEN))
        .filter_map(|l| {
            let json = &l[l.find('{')?..];
            let v: Value = serde_json::from_str(json).ok()?;
            let f = &v["fields"];
            (f["message"] == FORBIDDEN).then(|| {
                format!(
                    "{} {}",
                    f["verb"].as_str().unwrap_or("?"),
                    f["resource"].as_str().unwrap_or("?")
                )
            })
        })
        .collect()
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Backend::Process { child, .. } = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.save_pod_logs();
        let forbidden = self.unexpected_forbidden();
        // The release (the chart's operator, or the RBAC of a process) goes with the backend, after this.
        if !forbidden.is_empty() && !std::thread::panicking() {
            panic!(
                "the operator was refused API calls its RBAC should allow: {forbidden:?} (log: {})",
                self.log.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_lines_are_found_with_and_without_a_pod_prefix() {
        let log = format!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"reconciled\"}}}}\n\
             [pod/x/operator] {{\"level\":\"WARN\",\"fields\":{{\"message\":\"{FORBIDDEN}\",\"verb\":\"delete\",\"resource\":\"deployments\"}}}}\n\
             {{\"level\":\"WARN\",\"fields\":{{\"message\":\"{FORBIDDEN}\",\"verb\":\"list\",\"resource\":\"replicasets\"}}}}\n"
        );
        assert_eq!(
            forbidden_calls(&log),
            vec!["delete deployments", "list replicasets"]
        );
    }
}
