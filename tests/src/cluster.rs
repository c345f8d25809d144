//! Harness for control-plane tests: finds or starts the local cluster of `tests/cluster/`, gives each test a
//! namespace of its own, and runs kubectl/curl against it with deadlines instead of sleeps.
//!
//! The cluster is shared by every test (starting one costs tens of seconds on 2 cores); isolation comes from
//! namespaces. Cluster-scoped objects a test installs (the CRD) must be applied idempotently.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

pub use crate::paths::repo_root;

/// The cluster's host address, where the API server, CoreDNS and Prometheus listen and the real node lives,
/// reachable from this machine and from pods; mirrors `HOST_IP` in `tests/cluster/cluster.sh`.
pub const HOST_IP: &str = "10.250.0.1";
/// Taint key (value `"true"`, NoSchedule) of the KWOK nodes; mirrors `KWOK_TAINT` in `tests/cluster/cluster.sh`.
pub const KWOK_TAINT: &str = "tractor.dev/kwok";
/// kube-apiserver's secure port; mirrors `APISERVER_PORT` in `tests/cluster/cluster.sh`.
pub const APISERVER_PORT: u16 = 16443;
/// Prometheus' port; mirrors `PROMETHEUS_PORT` in `tests/cluster/cluster.sh`.
pub const PROMETHEUS_PORT: u16 = 19090;
/// How long a test waits for the cluster to converge on something (scheduling, GC, CRD establishment).
/// Generous because the 2-core CI machines also compile while tests run.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// The interval between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The running cluster: where its kubeconfig and CA are, and how to reach it.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
}

/// The cluster state dir, as `tests/cluster/cluster.sh` computes it.
fn cluster_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRACTOR_CLUSTER_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/tractor/cluster")
}

/// The shared cluster, started on first use. A running cluster whose `/readyz` answers is reused as is;
/// otherwise `tests/cluster/cluster.sh up` runs (it builds binaries if needed and is idempotent).
pub fn cluster() -> Result<&'static Cluster> {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(cluster) = CLUSTER.get() {
        return Ok(cluster);
    }
    // Tests in one binary run on parallel threads: only one of them may start the cluster.
    let _guard = INIT
        .lock()
        .map_err(|_| anyhow!("cluster init lock poisoned"))?;
    if let Some(cluster) = CLUSTER.get() {
        return Ok(cluster);
    }
    let cluster = Cluster { dir: cluster_dir() };
    if !cluster.apiserver_ready() {
        let script = repo_root().join("tests/cluster/cluster.sh");
        eprintln!("starting the test cluster: {} up", script.display());
        let out = Command::new(&script)
            .arg("up")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} up failed ({}):\n{}\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !cluster.apiserver_ready() {
            bail!("cluster.sh up succeeded but /readyz does not answer ok");
        }
    }
    Ok(CLUSTER.get_or_init(|| cluster))
}

impl Cluster {
    /// Path of the admin kubeconfig (`<cluster dir>/admin.kubeconfig`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Path of the cluster CA certificate, for clients that verify the apiserver.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// Base URL of the API server.
    pub fn apiserver_url(&self) -> String {
        format!("https://{HOST_IP}:{APISERVER_PORT}")
    }

    /// Base URL of Prometheus.
    pub fn prometheus_url(&self) -> String {
        format!("http://{HOST_IP}:{PROMETHEUS_PORT}")
    }

    /// True when the API server answers `/readyz` with `ok`.
    pub fn apiserver_ready(&self) -> bool {
        if !self.ca_cert().exists() {
            return false;
        }
        let url = format!("{}/readyz", self.apiserver_url());
        matches!(self.curl(&["--cacert".as_ref(), self.ca_cert().as_os_str(), url.as_ref()]),
                 Ok(body) if body.trim() == "ok")
    }

    /// Stops kube-apiserver (SIGTERM, as a rolling control-plane upgrade would) and starts it again with
    /// `cluster.sh up`, which restarts only what is down; returns once `/readyz` answers again.
    pub fn restart_apiserver(&self) -> Result<()> {
        let pid_file = self.dir.join("run/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let pid = pid.trim().to_owned();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        wait_for(DEFAULT_WAIT, "kube-apiserver to exit", || {
            Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(()))
        })?;
        let out = Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .arg("up")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "cluster.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(DEFAULT_WAIT, "kube-apiserver /readyz", || {
            Ok(self.apiserver_ready().then_some(()))
        })
    }

    /// Runs curl with a short timeout and returns the body; fails on transport errors and HTTP >= 400.
    pub fn curl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "10"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running curl")?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "curl failed ({}): {}{}",
                out.status,
                body,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(body)
    }

    /// A `kubectl` command bound to the cluster's kubeconfig (the binary comes from the build cache).
    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl and returns its raw output, whatever the exit status.
    pub fn kubectl_output<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut cmd = self.kubectl_cmd();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("spawning kubectl")?;
        if let Some(input) = stdin {
            let mut pipe = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("kubectl stdin not piped"))?;
            pipe.write_all(input.as_bytes())
                .context("writing kubectl stdin")?;
        }
        child.wait_with_output().context("waiting for kubectl")
    }

    /// Runs kubectl, fails with its stderr unless it exits 0, returns stdout.
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        self.kubectl_with_stdin(args, None)
    }

    /// Like [`Cluster::kubectl`], feeding `stdin` (e.g. a manifest for `apply -f -`).
    pub fn kubectl_with_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<String> {
        let out = self.kubectl_output(args, stdin)?;
        if !out.status.success() {
            let shown: Vec<_> = args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect();
            bail!(
                "kubectl {} failed ({}): {}",
                shown.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl with `-o json` appended and parses the result.
    pub fn kubectl_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Value> {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        all.extend([OsStr::new("-o"), OsStr::new("json")]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text).context("parsing kubectl JSON output")
    }

    /// Installs (or updates) the tractor CRD from `crds/modeldeployment.yaml` and waits until it is Established.
    /// Server-side apply makes it safe for several tests to call this concurrently.
    pub fn install_crd(&self) -> Result<()> {
        let crd = repo_root().join("crds/modeldeployment.yaml");
        self.kubectl(&[
            "apply".as_ref(),
            "--server-side".as_ref(),
            "--force-conflicts".as_ref(),
            "--field-manager=tractor-e2e".as_ref(),
            "-f".as_ref(),
            crd.as_os_str(),
        ])?;
        let name = crd_name()?;
        wait_for(DEFAULT_WAIT, &format!("CRD {name} Established"), || {
            let v = self.kubectl_json(&["get", "crd", &name])?;
            Ok(condition_is(&v, "Established", "True").then_some(()))
        })
    }

    /// Creates a namespace for one test (`<prefix>-<unique suffix>`); it is deleted when the value drops.
    pub fn namespace(&'static self, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix);
        self.kubectl(&["create", "namespace", &name])?;
        // Pods are refused until the KCM has created the namespace's `default` ServiceAccount.
        wait_for(
            DEFAULT_WAIT,
            &format!("ServiceAccount default in {name}"),
            || {
                let out =
                    self.kubectl_output(&["get", "serviceaccount", "default", "-n", &name], None)?;
                Ok(out.status.success().then_some(()))
            },
        )?;
        Ok(TestNamespace {
            cluster: self,
            name,
        })
    }

    /// The value of a PromQL query that yields one sample (e.g. a `sum(...)`); `None` when it yields none.
    pub fn prometheus_value(&self, query: &str) -> Result<Option<f64>> {
        Ok(self
            .prometheus_query(query)?
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Runs an instant PromQL query and returns `data.result`.
    pub fn prometheus_query(&self, query: &str) -> Result<Vec<Value>> {
        let url = format!("{}/api/v1/query", self.prometheus_url());
        let body = self.curl(&["-G", &url, "--data-urlencode", &format!("query={query}")])?;
        let v: Value = serde_json::from_str(&body).context("parsing Prometheus response")?;
        if v["status"] != "success" {
            bail!("Prometheus query {query:?} failed: {body}");
        }
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("Prometheus response without data.result: {body}"))
    }
}

/// Puts a ModelDeployment's pods (optimize Job and servers) on the KWOK nodes, for tests whose pods must
/// not really run (the test finishes the Job itself, or needs hundreds of pods): the toleration of the KWOK
/// taint and a nodeSelector on their `type: kwok` label, in `spec.serving.pod`, which the operator gives the
/// Job too. Without it a pod lands on the real node, as a user's would.
///
/// A nodeSelector or toleration the spec already has is kept (a test may pin pods where none can go).
pub fn on_kwok(md: &mut Value) {
    let pod = &mut md["spec"]["serving"]["pod"];
    pod["nodeSelector"]["type"] = "kwok".into();
    let toleration =
        serde_json::json!({"key": KWOK_TAINT, "operator": "Exists", "effect": "NoSchedule"});
    if !pod["tolerations"].is_array() {
        pod["tolerations"] = serde_json::json!([]);
    }
    if let Some(tolerations) = pod["tolerations"].as_array_mut()
        && !tolerations.contains(&toleration)
    {
        tolerations.push(toleration);
    }
}

/// A plain Deployment of `replicas` pods on the KWOK nodes (an image nothing pulls: KWOK fakes the pods).
pub fn kwok_deployment(namespace: &str, name: &str, replicas: u32) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": name, "image": format!("registry.invalid/{name}:1")}],
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": KWOK_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    })
}

/// A namespace owned by one test. Dropping it deletes the namespace (without waiting for the garbage
/// collector, so a failing test still cleans up quickly).
#[derive(Debug)]
pub struct TestNamespace {
    cluster: &'static Cluster,
    name: String,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs kubectl in this namespace (`-n <name>` appended).
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl in this namespace, feeding `stdin`.
    pub fn kubectl_with_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        all.extend([OsStr::new("-n"), OsStr::new(&self.name)]);
        self.cluster.kubectl_with_stdin(&all, stdin)
    }

    /// Runs kubectl in this namespace and returns the raw output, whatever the exit status.
    pub fn kubectl_output<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        all.extend([OsStr::new("-n"), OsStr::new(&self.name)]);
        self.cluster.kubectl_output(&all, stdin)
    }

    /// Runs kubectl in this namespace with `-o json` and parses the result.
    pub fn kubectl_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Value> {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        all.extend([OsStr::new("-n"), OsStr::new(&self.name)]);
        self.cluster.kubectl_json(&all)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// Polls `check` until it returns `Some`, failing after `timeout` with the last error seen. Errors from
/// `check` count as "not yet" (the API may be briefly unavailable), not as failure.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// True when `obj.status.conditions` has `type` with `status`.
pub fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == status)
    })
}

/// The CRD's `metadata.name`, read from `crds/modeldeployment.yaml`.
pub fn crd_name() -> Result<String> {
    let crd = crd_document()?;
    crd["metadata"]["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("crds/modeldeployment.yaml has no metadata.name"))
}

/// The CRD document, parsed.
pub fn crd_document() -> Result<Value> {
    let path = repo_root().join("crds/modeldeployment.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every `*.yaml`/`*.yml` file directly under `dir` (relative to the repo root), sorted.
pub fn yaml_files(dir: &str) -> Result<Vec<PathBuf>> {
    let dir = repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// A DNS-1123 name unique across test processes and threads.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}{:x}{n}", std::process::id(), nanos % 0x10000)
}

/// The kubectl built by `tests/cluster/build.sh` (so its version matches the server), else `kubectl` on PATH.
fn kubectl_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = repo_root().join("tests/cluster/build.sh");
        Command::new(script)
            .arg("--bin-dir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("kubectl"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("kubectl"))
    })
    .clone()
}
