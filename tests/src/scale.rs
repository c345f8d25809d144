//! Helpers for the autoscaling and canary tests: real `tractor serve` processes registered with Prometheus
//! as the pods of a Deployment would be (labels `namespace` and `pod`), paced load, a private Prometheus
//! that a test may stop and restart, and an autoscaled ModelDeployment taken to its serving state on KWOK.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cluster::{DEFAULT_WAIT, TestNamespace, unique_name, wait_for};
use crate::modeldeployment::{apply, finish_job_with_report, success_report, wait_for_new_job};
use crate::serve::{Serve, Split, free_port};

/// A pod name as a Deployment's ReplicaSet would give it (`<deployment>-<hash>-<suffix>`), for the `pod`
/// label of a scrape target; the operator's queries select a Deployment's pods by that shape.
pub fn pod_name(deployment: &str, n: usize) -> String {
    format!("{deployment}-7c9d5b8f6-x{n:04}")
}

/// A scrape target file in a Prometheus `file_sd` folder; removed on drop.
pub struct ScrapeTargets {
    path: PathBuf,
}

impl ScrapeTargets {
    /// Writes `[{"targets": [addr], "labels": labels}, ...]` into `dir` under a unique name.
    pub fn write(dir: &std::path::Path, groups: &[(String, Value)]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let body: Vec<Value> = groups
            .iter()
            .map(|(addr, labels)| json!({"targets": [addr], "labels": labels}))
            .collect();
        let path = dir.join(format!("{}.json", unique_name("scale")));
        // Written beside and renamed, so Prometheus never reads half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&body)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(Self { path })
    }

    /// The shared cluster Prometheus' `file_sd` folder.
    pub fn shared_dir() -> PathBuf {
        let dir = std::env::var_os("TRACTOR_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/tractor/cluster")
            });
        dir.join("prometheus/targets")
    }
}

impl Drop for ScrapeTargets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The labels Kubernetes service discovery would give a serving pod.
pub fn pod_labels(namespace: &str, pod: &str) -> Value {
    json!({"namespace": namespace, "pod": pod})
}

/// `host:port` of a running server's HTTP listener.
pub fn addr(serve: &Serve) -> String {
    serve.http.trim_start_matches("http://").to_owned()
}

/// A Prometheus of the test's own (the cluster's build), scraping every second, which the test may stop and
/// start again with the same data. Killed on drop.
pub struct OwnPrometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnPrometheus {
    /// Starts one that scrapes `groups` (address, labels) and waits until it is ready.
    pub fn start(groups: &[(String, Value)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let static_configs: Vec<Value> = groups
            .iter()
            .map(|(a, l)| json!({"targets": [a], "labels": l}))
            .collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "serve", "static_configs": static_configs}],
        });
        // JSON is YAML.
        std::fs::write(dir.path().join("prometheus.yml"), config.to_string())?;
        let mut p = Self {
            child: None,
            port: free_port()?,
            dir,
        };
        p.restart()?;
        Ok(p)
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until a server of `namespace` has been scraped, so the operator's first read finds data.
    pub fn wait_scraped(&self, namespace: &str) -> Result<()> {
        let info = format!("tractor_model_info{{namespace=\"{namespace}\"}}");
        wait_for(DEFAULT_WAIT, "the first scrape", || {
            Ok((!self.query(&info)?.is_empty()).then_some(()))
        })
    }

    /// Runs an instant query and returns `data.result`.
    pub fn query(&self, query: &str) -> Result<Vec<Value>> {
        let body: Value = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .send()?
            .json()?;
        anyhow::ensure!(body["status"] == "success", "query {query:?}: {body}");
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Kills it (SIGKILL, as a crash or an evicted pod would stop it).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts it (again) on the same port and data, and waits until `/-/ready` answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let log = std::fs::File::create(self.dir.path().join("prometheus.log"))?;
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (tests/cluster/build.sh builds it)")?;
        self.child = Some(child);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/-/ready", self.url());
        wait_for(DEFAULT_WAIT, "own Prometheus ready", || {
            Ok(client
                .get(&url)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        })
    }
}

impl Drop for OwnPrometheus {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `$TRACTOR_PROMETHEUS`, else the one `tests/cluster/build.sh` built for the cluster, else Debian's.
fn prometheus_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACTOR_PROMETHEUS") {
        return PathBuf::from(p);
    }
    Command::new(crate::cluster::repo_root().join("tests/cluster/build.sh"))
        .arg("--bin-dir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("prometheus"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

/// Paced inference load on one server from a background thread. The pacing sleeps set the request rate;
/// no test decision waits on them.
pub struct Load {
    stop: Arc<AtomicBool>,
    rate_milli: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    /// When the load started.
    pub started: Instant,
}

impl Load {
    /// Sends digits rows to `infer_url` at `rps` requests per second until stopped. With `swing` > 0 the
    /// rate alternates between `rps × (1 - swing)` and `rps × (1 + swing)` every `period`: a noisy but
    /// flat signal.
    pub fn start(infer_url: String, rps: f64, swing: f64, period: Duration) -> Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Self::start_with(client, infer_url, rps, swing, period)
    }

    /// Like [`Load::start`] at a steady `rps`, each request on a new connection: through a Service, a
    /// kept-alive connection stays on the one pod kube-proxy picked for it, and this load must reach them all.
    pub fn start_spread(infer_url: String, rps: f64) -> Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()?;
        Self::start_with(client, infer_url, rps, 0.0, Duration::from_secs(1))
    }

    fn start_with(
        client: reqwest::blocking::Client,
        infer_url: String,
        rps: f64,
        swing: f64,
        period: Duration,
    ) -> Result<Self> {
        let split = Split::load("digits_mlp")?;
        let bodies: Vec<String> = (0..split.rows().min(64))
            .map(|row| {
                json!({"inputs": [{"name": split.input, "shape": [1, 64], "datatype": "FP32", "data": split.row(row)}]})
                    .to_string()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let rate_milli = Arc::new(AtomicU64::new((rps * 1000.0) as u64));
        let sent = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_rate, thread_sent) =
            (stop.clone(), rate_milli.clone(), sent.clone());
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut body_ix = 0usize;
            while !thread_stop.load(Ordering::Relaxed) {
                let base = thread_rate.load(Ordering::Relaxed) as f64 / 1000.0;
                let phase =
                    (started.elapsed().as_secs_f64() / period.as_secs_f64().max(0.001)) as u64 % 2;
                let rate = if swing > 0.0 {
                    base * if phase == 0 { 1.0 - swing } else { 1.0 + swing }
                } else {
                    base
                };
                if rate > 0.0 {
                    let _ = client
                        .post(&infer_url)
                        .header("content-type", "application/json")
                        .body(bodies[body_ix % bodies.len()].clone())
                        .send();
                    thread_sent.fetch_add(1, Ordering::Relaxed);
                    body_ix += 1;
                    next += Duration::from_secs_f64(1.0 / rate);
                } else {
                    next = Instant::now() + Duration::from_millis(50);
                }
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_secs(1) {
                    // Fell behind (a loaded machine): do not burst to catch up.
                    next = now;
                }
            }
        });
        Ok(Self {
            stop,
            rate_milli,
            sent,
            handle: Some(handle),
            started,
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the load and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rate_milli.store(0, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Labelled traffic on one server: requests of `rows` digits rows with an id, then their true labels as
/// feedback, every `every`, from a background thread, so the server's accuracy gauge comes from its own
/// bookkeeping of real predictions. Stops on drop.
pub struct FeedbackLoad {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FeedbackLoad {
    /// Starts it on `serve`.
    pub fn start(serve: &Serve, rows: usize, every: Duration) -> Result<Self> {
        let split = Split::load("digits_mlp")?;
        let (infer, feedback) = (serve.model_url("/infer"), serve.model_url("/feedback"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let handle = std::thread::spawn(move || {
            let mut round = 0usize;
            while !thread_stop.load(Ordering::Relaxed) {
                let picked: Vec<usize> = (0..rows)
                    .map(|k| (rows * round + k) % split.rows())
                    .collect();
                let data: Vec<f32> = picked.iter().flat_map(|r| split.row(*r).to_vec()).collect();
                let id = format!("f-{round}");
                let body = json!({"id": id, "inputs": [{"name": split.input, "shape": [rows, 64], "datatype": "FP32", "data": data}]});
                if client.post(&infer).json(&body).send().is_ok() {
                    let labels: Vec<i64> = picked.iter().map(|r| split.y[*r]).collect();
                    let label = if rows == 1 {
                        json!(labels[0])
                    } else {
                        json!(labels)
                    };
                    let _ = client
                        .post(&feedback)
                        .json(&json!({"feedback": [{"id": id, "label": label}]}))
                        .send();
                }
                round += 1;
                // Pacing only: no test decision waits on it.
                std::thread::sleep(every);
            }
        });
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for FeedbackLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The minimal example's model, with `autoscaling` as given.
pub fn autoscaled(ns: &TestNamespace, name: &str, autoscaling: Value) -> Value {
    json!({
        "apiVersion": "serving.tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns.name()},
        "spec": {
            "model": {
                "uri": "https://models.example.com/digits/mlp.onnx",
                "sha256": "5f8e2b6c1d0a9f7e3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809112",
            },
            "autoscaling": autoscaling,
        },
    })
}

/// Applies `md`, completes its optimize Job with a success report, and waits until its Deployment exists.
pub fn apply_and_serve(ns: &TestNamespace, md: &Value) -> Result<()> {
    apply(ns, md)?;
    let name = md["metadata"]["name"].as_str().context("md without name")?;
    let job = wait_for_new_job(ns, name, &[])?;
    finish_job_with_report(ns, &job, &success_report("f32"))?;
    wait_for(DEFAULT_WAIT, "the serving Deployment", || {
        let out = ns.kubectl_output(&["get", "deployment", name], None)?;
        Ok(out.status.success().then_some(()))
    })
}

/// `status.desiredReplicas`, if set.
pub fn desired(ns: &TestNamespace, name: &str) -> Result<Option<i64>> {
    let md = ns.kubectl_json(&["get", "mdep", name])?;
    Ok(md["status"]["desiredReplicas"].as_i64())
}

/// `spec.replicas` of a Deployment.
pub fn deployment_replicas(ns: &TestNamespace, name: &str) -> Result<Option<i64>> {
    let d = ns.kubectl_json(&["get", "deployment", name])?;
    Ok(d["spec"]["replicas"].as_i64())
}

/// The condition of `type` on the ModelDeployment, as JSON (`Null` when absent).
pub fn condition(ns: &TestNamespace, name: &str, type_: &str) -> Result<Value> {
    let md = ns.kubectl_json(&["get", "mdep", name])?;
    Ok(md["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null))
}

/// Events about the ModelDeployment `name` with `reason`.
pub fn events(ns: &TestNamespace, name: &str, reason: &str) -> Result<Vec<Value>> {
    let list = ns.kubectl_json(&["get", "events.events.k8s.io"])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "ModelDeployment" && e["regarding"]["name"] == name)
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect())
}

/// How many times events about the ModelDeployment `name` with `reason` occurred. The operator folds a
/// repeat of the same message into its Event's `series.count` instead of creating another Event object, so
/// objects alone undercount.
pub fn event_count(ns: &TestNamespace, name: &str, reason: &str) -> Result<u64> {
    Ok(events(ns, name, reason)?
        .iter()
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum())
}

/// One autoscaler evaluation as the status shows it: the count it set and the snapshot it read.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluated {
    /// `status.metrics.time`, Unix seconds.
    pub at: i64,
    /// `status.desiredReplicas`.
    pub desired: i64,
    /// `status.metrics.requestsPerSecond` (all pods together).
    pub rps: Option<f64>,
    /// `status.metrics.latencyP95Millis`.
    pub p95_millis: Option<f64>,
    /// `status.lastScaleTime`, Unix seconds.
    pub last_scale: Option<i64>,
    /// The `ScalingActive` condition's message.
    pub message: String,
}

/// The last evaluation recorded in the status (`None` before the first).
pub fn evaluated(ns: &TestNamespace, name: &str) -> Result<Option<Evaluated>> {
    let md = ns.kubectl_json(&["get", "mdep", name])?;
    let s = &md["status"];
    let (Some(at), Some(desired)) = (
        s["metrics"]["time"].as_str().and_then(unix_seconds),
        s["desiredReplicas"].as_i64(),
    ) else {
        return Ok(None);
    };
    let message = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ScalingActive")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(Some(Evaluated {
        at,
        desired,
        rps: s["metrics"]["requestsPerSecond"].as_f64(),
        p95_millis: s["metrics"]["latencyP95Millis"].as_f64(),
        last_scale: s["lastScaleTime"].as_str().and_then(unix_seconds),
        message,
    }))
}

/// Seconds since the Unix epoch of a Kubernetes timestamp (`2026-11-27T14:45:53Z`, fractions ignored).
pub fn unix_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time
        .split('.')
        .next()?
        .splitn(3, ':')
        .map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's `days_from_civil`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Now, in Unix seconds with fractions, on the clock the operator's timestamps come from (same machine).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::unix_seconds;

    #[test]
    fn kubernetes_timestamps_to_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        // `date -u -d 2026-11-27T14:45:53Z +%s`
        assert_eq!(unix_seconds("2026-11-27T14:45:53Z"), Some(1_795_790_753));
        assert_eq!(
            unix_seconds("2024-02-29T23:59:59.123456Z"),
            Some(1_709_251_199)
        );
        assert_eq!(unix_seconds("2026-11-27 14:45:53"), None);
    }
}
