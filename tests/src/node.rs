//! Harness for real-node tests: brings up the cluster's real node (`cluster.sh node-up`), packs the binary
//! under test into an image and imports it there, and puts ModelDeployments on that node in namespaces that
//! enforce Pod Security `restricted`.
//!
//! The KWOK nodes are tainted and the real node is not, so a ModelDeployment applied as a user writes it
//! (no placement in its spec) has its optimize Job and serving pods here; KWOK tests ask for KWOK
//! ([`crate::cluster::on_kwok`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use crate::cluster::{Cluster, DEFAULT_WAIT, TestNamespace, cluster, repo_root, wait_for};
use crate::operator::{Operator, tractor_binary};

/// The real node's name (`REAL_NODE_NAME` in `tests/cluster/node/node.sh`).
pub const REAL_NODE: &str = "real-node-0";
/// Label (value `"true"`) of the real node (`REAL_NODE_LABEL` in node.sh).
pub const REAL_NODE_LABEL: &str = "tractor.dev/real-node";
/// The image the tests import, packed from the `tractor` binary under test.
pub const E2E_IMAGE: &str = "localhost/tractor:e2e";
/// Pods on a real node pull nothing, but start real processes on a loaded 2-core machine.
pub const NODE_WAIT: Duration = Duration::from_secs(240);

/// The cluster with its real node Ready and [`E2E_IMAGE`] imported; set up once per test process.
pub fn real_node() -> Result<&'static Cluster> {
    static READY: OnceLock<()> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    let c = cluster()?;
    if READY.get().is_some() {
        return Ok(c);
    }
    let _guard = INIT
        .lock()
        .map_err(|_| anyhow!("node init lock poisoned"))?;
    if READY.get().is_some() {
        return Ok(c);
    }
    // node-up is idempotent and takes the cluster lock, so parallel test binaries serialize on it.
    run(Command::new(repo_root().join("tests/cluster/cluster.sh")).arg("node-up"))?;
    let bin = tractor_binary()?;
    let out = bin
        .parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("image/tractor-e2e.oci.tar"))
        .unwrap_or_else(|| PathBuf::from("tractor-e2e.oci.tar"));
    run(Command::new(repo_root().join("scripts/image.sh"))
        .arg("--bin")
        .arg(&bin)
        .args(["--name", E2E_IMAGE, "--out"])
        .arg(&out)
        .arg("--import"))?;
    let _ = READY.set(());
    Ok(c)
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A test namespace that enforces Pod Security `restricted`: a tractor pod that the policy refused would
/// never appear, and the test waiting for it would fail.
pub fn restricted_namespace(c: &'static Cluster, prefix: &str) -> Result<TestNamespace> {
    let ns = c.namespace(prefix)?;
    c.kubectl(&[
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ])?;
    Ok(ns)
}

/// The chart's operator for `ns`, in-cluster, giving pods [`E2E_IMAGE`].
pub fn operator(c: &'static Cluster, ns: &TestNamespace) -> Result<Operator> {
    Operator::start(c, ns.name())
}

/// Puts the fixture model `tests/fixtures/<file>` in a ConfigMap `name` (key = file name) and returns its
/// sha256 in hex.
pub fn model_configmap(ns: &TestNamespace, name: &str, file: &str) -> Result<String> {
    let path = repo_root().join("tests/fixtures").join(file);
    ns.kubectl(&[
        "create".as_ref(),
        "configmap".as_ref(),
        name.as_ref(),
        format!("--from-file={file}={}", path.display()).as_ref(),
    ] as &[&std::ffi::OsStr])?;
    crate::optimize::sha256(&path)
}

/// The digits MLP from a ConfigMap (`<name>-model`), kept at f32, served by `replicas` pods on the real node. Creates the ConfigMap and applies the ModelDeployment.
pub fn apply_digits(ns: &TestNamespace, name: &str, replicas: i32) -> Result<Value> {
    let cm = format!("{name}-model");
    let sha = model_configmap(ns, &cm, "digits_mlp.onnx")?;
    let md = json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns.name()},
        "spec": {
            "model": {"uri": format!("configmap://{cm}/digits_mlp.onnx"), "sha256": sha},
            // f32: the served predictions must equal onnxruntime's, not merely agree within a tolerance.
            "optimize": {"precision": "f32"},
            "serving": {"replicas": replicas},
        },
    });
    crate::modeldeployment::apply_as_is(ns, &md)?;
    Ok(md)
}

/// Waits until `mdep/name` is Ready, failing early with the status when it reports Degraded or Failed.
pub fn wait_model_ready(ns: &TestNamespace, name: &str) -> Result<Value> {
    wait_for(NODE_WAIT, &format!("mdep/{name} Ready"), || {
        let md = crate::modeldeployment::get(ns, name)?;
        if md["status"]["phase"] == "Failed" {
            bail!("mdep/{name} failed: {}", md["status"]);
        }
        Ok(crate::cluster::condition_is(&md, "Ready", "True").then_some(md))
    })
    .with_context(|| pods_summary(ns))
}

/// One line per pod (name, node, phase, container states), to explain a timeout.
pub fn pods_summary(ns: &TestNamespace) -> String {
    match ns.kubectl(&["get", "pods", "-o", "wide"]) {
        Ok(s) => format!("pods in {}:\n{s}", ns.name()),
        Err(e) => format!("listing pods: {e}"),
    }
}

/// The serving pods of `name` that are Ready: (pod name, pod IP, node).
pub fn ready_server_pods(ns: &TestNamespace, name: &str) -> Result<Vec<(String, String, String)>> {
    let pods = ns.kubectl_json(&[
        "get",
        "pods",
        "-l",
        &format!("serving.tractor.dev/model={name},serving.tractor.dev/component=server"),
    ])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| crate::cluster::condition_is(p, "Ready", "True"))
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_owned(),
                p["status"]["podIP"].as_str()?.to_owned(),
                p["spec"]["nodeName"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// `http://<ClusterIP>:8080` of the Service `name`, once kube-proxy has programmed at least one endpoint for it.
/// Until then a connection to the ClusterIP is not DNATed and leaves this machine, where the sandbox's network
/// answers 404: CI once saw two minutes of those, with kube-proxy busy after the KWOK tests' churn of Services.
pub fn service_url(ns: &TestNamespace, name: &str) -> Result<String> {
    let svc = ns.kubectl_json(&["get", "service", name])?;
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or_else(|| anyhow!("service {name} has no ClusterIP: {}", svc["spec"]))?;
    wait_for(
        NODE_WAIT,
        &format!("kube-proxy rules for service {name}"),
        || Ok((!programmed_endpoints(ns.name(), name, "http")?.is_empty()).then_some(())),
    )
    .with_context(|| {
        format!(
            "EndpointSlices: {:?}\nkube-proxy: {}",
            ns.kubectl_json(&["get", "endpointslices"]).ok(),
            kube_proxy_sync()
        )
    })?;
    Ok(format!("http://{ip}:8080"))
}

/// kube-proxy's own account of its rule syncs (pending changes, last sync, durations), to explain rules that lag.
fn kube_proxy_sync() -> String {
    let url = format!("http://127.0.0.1:{KUBE_PROXY_METRICS_PORT}/metrics");
    match reqwest::blocking::get(&url).and_then(|response| response.text()) {
        Ok(text) => text
            .lines()
            .filter(|line| line.starts_with("kubeproxy_sync_proxy_rules_"))
            .filter(|line| !line.contains("_bucket{"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(error) => format!("{url}: {error}"),
    }
}

/// kube-proxy's metrics port on loopback (`KUBE_PROXY_METRICS_PORT` in `tests/cluster/node/node.sh`).
const KUBE_PROXY_METRICS_PORT: u16 = 10249;

/// The endpoint IPs kube-proxy has programmed on the real node (this machine) for port `port` of Service
/// `namespace/name`: what new connections to its ClusterIP are spread over now, which can lag behind the
/// Service's EndpointSlices on a loaded node. Read from the iptables nat rules kube-proxy writes.
pub fn programmed_endpoints(namespace: &str, name: &str, port: &str) -> Result<Vec<String>> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .context("running iptables-save")?;
    ensure!(
        out.status.success(),
        "iptables-save failed: {:?}",
        out.status
    );
    let marker = format!("\"{namespace}/{name}:{port} -> ");
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-"))
        .filter_map(|l| {
            let rest = &l[l.find(&marker)? + marker.len()..];
            Some(rest.split(':').next()?.to_owned())
        })
        .collect();
    ips.sort();
    Ok(ips)
}

/// A V2 infer body for rows `rows` of the digits test split.
pub fn infer_body(split: &crate::serve::Split, rows: std::ops::Range<usize>) -> Value {
    let data: Vec<f32> = rows.clone().flat_map(|i| split.row(i).to_vec()).collect();
    json!({"inputs": [{"name": split.input, "shape": [rows.len(), split.features], "datatype": "FP32", "data": data}]})
}

/// Sends rows `rows` to `<base>/v2/models/<model>/infer` and returns the argmax of `probabilities` per row.
pub fn infer_argmax(
    client: &reqwest::blocking::Client,
    base: &str,
    model: &str,
    split: &crate::serve::Split,
    rows: std::ops::Range<usize>,
) -> Result<Vec<usize>> {
    Ok(infer_probabilities(client, base, model, split, rows)?
        .chunks(10)
        .map(crate::serve::argmax)
        .collect())
}

/// Sends rows `rows` to `<base>/v2/models/<model>/infer` and returns `probabilities`, ten per row, flat.
pub fn infer_probabilities(
    client: &reqwest::blocking::Client,
    base: &str,
    model: &str,
    split: &crate::serve::Split,
    rows: std::ops::Range<usize>,
) -> Result<Vec<f64>> {
    let resp = client
        .post(format!("{base}/v2/models/{model}/infer"))
        .json(&infer_body(split, rows.clone()))
        .send()?;
    let status = resp.status();
    let body: Value = resp.json().context("infer response is not JSON")?;
    ensure!(status.is_success(), "infer answered {status}: {body}");
    let out = body["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "probabilities"))
        .ok_or_else(|| anyhow!("no probabilities output: {body}"))?;
    let probs: Vec<f64> = out["data"]
        .as_array()
        .ok_or_else(|| anyhow!("probabilities without data: {out}"))?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ensure!(
        probs.len() == rows.len() * 10,
        "{} values for {} rows",
        probs.len(),
        rows.len()
    );
    Ok(probs)
}

/// Waits until `f` succeeds against the Service (kube-proxy programs a new Service's rules within seconds).
pub fn wait_serving<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    wait_for(DEFAULT_WAIT, what, || f().map(Some))
}

/// Kills the serving process of `pod` with SIGKILL through containerd, as a crash would (the kubelet
/// restarts the container; the pod is not deleted).
pub fn kill_server(c: &Cluster, ns: &TestNamespace, pod: &str) -> Result<()> {
    kill_container(c, ns, pod, "server")
}

/// SIGKILLs container `container` of `pod` through the real node's containerd: a crash, not a graceful stop.
pub fn kill_container(
    cluster: &Cluster,
    ns: &TestNamespace,
    pod: &str,
    container: &str,
) -> Result<()> {
    let pod_json = ns.kubectl_json(&["get", "pod", pod])?;
    let id = pod_json["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container)
        .and_then(|s| s["containerID"].as_str())
        .and_then(|id| id.strip_prefix("containerd://"))
        .ok_or_else(|| {
            anyhow!(
                "pod {pod} has no running {container} container: {}",
                pod_json["status"]
            )
        })?
        .to_owned();
    let sock = cluster
        .kubeconfig()
        .parent()
        .map(|d| d.join("node/containerd/containerd.sock"))
        .ok_or_else(|| anyhow!("no cluster dir"))?;
    run(Command::new("ctr").arg("--address").arg(&sock).args([
        "--namespace",
        "k8s.io",
        "tasks",
        "kill",
        "--signal",
        "SIGKILL",
        &id,
    ]))
}

/// A client behind the Service: infer a row, then post its true label with the answer's receipt, each call
/// on a new connection (so kube-proxy spreads them over the replicas). Calls that fail (pods rolling) are
/// counted and skipped.
pub struct LabelledTraffic {
    stop: Arc<AtomicBool>,
    counted: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl LabelledTraffic {
    /// Starts sending to the Service at `url` (`http://<clusterIP>:8080`), `rate` requests per second.
    pub fn start(url: String, rate: f64) -> Result<Self> {
        let split = crate::serve::Split::load("digits_mlp")?;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counted = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, counted) = (stop.clone(), counted.clone());
            std::thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let row = sent % split.rows();
                    sent += 1;
                    let once = || -> Result<u64> {
                        let resp: Value = client
                            .post(format!("{url}/v2/models/digits/infer"))
                            .json(&infer_body(&split, row..row + 1))
                            .send()?
                            .error_for_status()?
                            .json()?;
                        let receipt = resp["parameters"]["tractor_receipt"]
                            .as_str()
                            .ok_or_else(|| anyhow!("no receipt"))?;
                        let summary: Value = client
                            .post(format!("{url}/v2/models/digits/feedback"))
                            .json(
                                &json!({"feedback": [{"receipt": receipt, "label": split.y[row]}]}),
                            )
                            .send()?
                            .error_for_status()?
                            .json()?;
                        Ok(summary["correct"].as_u64().unwrap_or(0)
                            + summary["incorrect"].as_u64().unwrap_or(0))
                    };
                    if let Ok(pairs) = once() {
                        counted.fetch_add(pairs, Ordering::Relaxed);
                    }
                    // Pacing a load generator, not waiting for a condition.
                    std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
                }
            })
        };
        Ok(Self {
            stop,
            counted,
            handle: Some(handle),
        })
    }
}

impl LabelledTraffic {
    /// Labelled rows the replicas have counted so far (from the feedback summaries).
    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }
}

impl Drop for LabelledTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
