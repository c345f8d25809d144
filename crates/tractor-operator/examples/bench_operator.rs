//! `make bench-operator`: N ModelDeployments on KWOK against a baseline of N plain Deployments, measured in
//! the same run. Run by `scripts/bench-operator.sh`, which starts the cluster and the operator.
//!
//! The bench stands in for the kubelet of the optimize pods: when KWOK completes a Job pod, the bench writes
//! a success report into its termination message, as `/dev/termination-log` would on a real node.
//!
//! With `--cache s3://bucket/prefix` (the operator's `--artifact-store`, reached with the `TRACTOR_STORE_*`
//! settings the script gives both), the N ModelDeployments are N tenants of one pinned model, as a platform
//! deploys them: the bench first records that model's report in the shared optimize cache, as the first
//! ModelDeployment's Job would have, so the operator serves every one of them without a Job.

#![allow(clippy::unwrap_used, missing_docs)]
// A client of the cluster, not part of a reconcile: the observe/apply rule does not apply.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tractor_api::ModelDeployment;

struct Args {
    namespace: String,
    count: usize,
    operator_pid: u32,
    admin: String,
    report: String,
    cache: Option<String>,
}

/// Taint key of the test cluster's KWOK nodes (`KWOK_TAINT` in tests/cluster/cluster.sh): the bench's pods
/// must land there, never on the real node, where 1000 pods would really start.
const KWOK_TAINT: &str = "tractor.dev/kwok";

fn kwok_node_selector() -> serde_json::Value {
    json!({"type": "kwok"})
}

fn kwok_tolerations() -> serde_json::Value {
    json!([{"key": KWOK_TAINT, "operator": "Exists", "effect": "NoSchedule"}])
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        a.iter()
            .position(|x| x == flag)
            .and_then(|i| a.get(i + 1))
            .cloned()
    };
    Args {
        namespace: get("--namespace").unwrap_or_else(|| "bench".into()),
        count: get("--count").and_then(|c| c.parse().ok()).unwrap_or(1000),
        operator_pid: get("--operator-pid")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        admin: get("--admin").unwrap_or_else(|| "127.0.0.1:8090".into()),
        report: get("--report").unwrap_or_else(|| "bench-operator.md".into()),
        cache: get("--cache"),
    }
}

/// Total apiserver requests by `verb resource[/subresource]`, from its own metrics.
async fn apiserver_requests(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    let label = |line: &str, name: &str| {
        line.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    let mut by_key = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let sub = label(line, "subresource");
        let key = format!(
            "{} {}{}",
            label(line, "verb"),
            label(line, "resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *by_key.entry(key).or_insert(0.0) += value;
    }
    by_key
}

fn is_write(key: &str) -> bool {
    ["POST ", "PUT ", "PATCH ", "DELETE ", "APPLY "]
        .iter()
        .any(|v| key.starts_with(v))
}

fn writes(m: &BTreeMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| is_write(k)).map(|(_, v)| v).sum()
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

/// The writes between two readings, largest first, per object: where the API server's work went.
fn write_breakdown(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    n: usize,
) -> String {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.iter()
        .take(12)
        .map(|(k, d)| format!("| {k} | {:.2} |\n", d / n as f64))
        .collect()
}

/// An operator metric (sum over labels), read from its admin port.
async fn operator_metric(admin: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return f64::NAN;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (RSS high-water mark in MiB, CPU seconds) of a process, from /proc.
fn process_usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    (hwm, ticks / 100.0)
}

async fn wait_all<F: Fn() -> Fut, Fut: std::future::Future<Output = usize>>(
    what: &str,
    n: usize,
    count: F,
) -> Duration {
    let start = Instant::now();
    loop {
        let done = count().await;
        if done >= n {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(900) {
            panic!("{what}: only {done}/{n} after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes a success report into every completed optimize pod that has none, until told to stop.
async fn report_writer(client: Client, ns: String) {
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let report = json!({
        "sourceDigest": format!("sha256:{}", "5f".repeat(32)),
        "artifactDigest": format!("sha256:{}", "a1".repeat(32)),
        "sizeBytes": 23456, "format": "onnx", "precision": "f32",
    })
    .to_string();
    let cfg = watcher::Config::default().labels("serving.tractor.dev/component=optimize");
    let mut stream = watcher::watcher(pods.clone(), cfg).boxed();
    while let Some(Ok(event)) = stream.next().await {
        let (watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
            continue;
        };
        let done = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
        let has_message = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .any(|container| {
                container
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.message.as_ref())
                    .is_some()
            });
        if done && !has_message {
            let patch = json!({"status": {"containerStatuses": [{"name": "optimize", "state": {"terminated": {"message": report}}}]}});
            let name = pod.metadata.name.clone().unwrap_or_default();
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
        }
    }
}

/// The one model every ModelDeployment of the run serves (its uri differs per object; its bytes do not).
fn model_deployment(index: usize) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "serving.tractor.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": format!("m-{index}")},
        "spec": {"model": {"uri": format!("https://models.example.com/m-{index}.onnx"), "sha256": "5f".repeat(32)},
                 "serving": {"pod": {"nodeSelector": kwok_node_selector(), "tolerations": kwok_tolerations()}}}
    }))
    .unwrap()
}

/// Records the model's report in the shared optimize cache of the store `uri`, where its Job would have.
async fn seed_cache(uri: &str) {
    use object_store::ObjectStore;
    let key = tractor_api::revision::cache_key(&model_deployment(0).spec).expect("a pinned model");
    let (bucket, prefix) = tractor_store::bucket_and_prefix(uri).expect("s3://bucket/prefix");
    let hex = "a1".repeat(32);
    let artifact = if prefix.is_empty() {
        format!("s3://{bucket}/sha256/{hex}")
    } else {
        format!("s3://{bucket}/{prefix}/sha256/{hex}")
    };
    let report = json!({
        "sourceDigest": format!("sha256:{}", "5f".repeat(32)),
        "artifactDigest": format!("sha256:{hex}"),
        "artifactUri": artifact,
        "sizeBytes": 23456, "format": "onnx", "precision": "f32",
    });
    let client = tractor_store::client(bucket, || panic!("TRACTOR_STORE_* settings")).unwrap();
    let entry = tractor_store::cache_entry(prefix, &key);
    client
        .put(
            &object_store::path::Path::from(entry.as_str()),
            report.to_string().into_bytes().into(),
        )
        .await
        .unwrap();
    let read = tractor_store::read_cache(uri, &key).await.unwrap();
    assert!(read.is_some(), "the seeded entry {entry} reads back");
}

#[tokio::main]
async fn main() {
    let args = args();
    let client = Client::try_default().await.unwrap();
    let ns = args.namespace.clone();
    let count = args.count;

    // Baseline: N plain one-replica Deployments straight to Available.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let base_before = apiserver_requests(&client).await;
    let start = Instant::now();
    for index in 0..count {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("base-{index}"), "labels": {"bench": "baseline"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("base-{index}")}},
                     "template": {"metadata": {"labels": {"app": format!("base-{index}")}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}],
                                           "nodeSelector": kwok_node_selector(), "tolerations": kwok_tolerations()}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    }
    wait_all("baseline Deployments", count, || async {
        deployments
            .list(&ListParams::default().labels("bench=baseline"))
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
                    .count()
            })
            .unwrap_or(0)
    })
    .await;
    let base_time = start.elapsed();
    let base_after = apiserver_requests(&client).await;
    let base_requests = total(&base_after) - total(&base_before);
    deployments
        .delete_collection(
            &Default::default(),
            &ListParams::default().labels("bench=baseline"),
        )
        .await
        .unwrap();

    // ModelDeployments: created, optimized (reports written as pods finish), rolled out, Ready.
    let writer = tokio::spawn(report_writer(client.clone(), ns.clone()));
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns);
    let md_before = apiserver_requests(&client).await;
    let (_, cpu_before) = process_usage(args.operator_pid);
    let op_rollout_before = operator_metric(&args.admin, "tractor_operator_status_writes_total")
        .await
        + operator_metric(&args.admin, "tractor_operator_child_applies_total").await;
    if let Some(uri) = &args.cache {
        seed_cache(uri).await;
    }
    let start = Instant::now();
    for index in 0..count {
        mds.create(&PostParams::default(), &model_deployment(index))
            .await
            .unwrap();
    }
    let created = start.elapsed();
    wait_all("ModelDeployments Ready", count, || async {
        mds.list(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|model| {
                        model.status.as_ref().is_some_and(|status| {
                            tractor_api::conditions::is_true(&status.conditions, "Ready")
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    })
    .await;
    let md_time = start.elapsed();
    writer.abort();
    let md_after = apiserver_requests(&client).await;
    let (rss_peak, cpu_after) = process_usage(args.operator_pid);
    let op_rollout_after = operator_metric(&args.admin, "tractor_operator_status_writes_total")
        .await
        + operator_metric(&args.admin, "tractor_operator_child_applies_total").await;

    // Steady state: a minute with nothing changing.
    let op_writes_before = operator_metric(&args.admin, "tractor_operator_status_writes_total")
        .await
        + operator_metric(&args.admin, "tractor_operator_child_applies_total").await;
    let steady_before = apiserver_requests(&client).await;
    let (_, cpu_steady_before) = process_usage(args.operator_pid);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let steady_after = apiserver_requests(&client).await;
    let op_writes_after = operator_metric(&args.admin, "tractor_operator_status_writes_total")
        .await
        + operator_metric(&args.admin, "tractor_operator_child_applies_total").await;
    let (rss_end, cpu_steady_after) = process_usage(args.operator_pid);

    let per_obj = |x: f64| x / count as f64;
    let report = format!(
        "# bench-operator\n\n{count} ModelDeployments on KWOK nodes, operator as a process (release build), \
         against a baseline of {count} plain one-replica Deployments in the same run and cluster. {how}\n\n\
         | measure | value | target |\n| --- | --- | --- |\n\
         | time until all Ready | {md:.1} s (creating them took {cr:.1} s) | ≤ 60 s |\n\
         | baseline: {count} Deployments Available | {base:.1} s | |\n\
         | ratio ModelDeployments / baseline | {ratio:.2}× | |\n\
         | operator RSS peak | {rss:.1} MiB (at the end: {rss_end:.1} MiB) | ≤ 64 MB |\n\
         | operator CPU during rollout | {cpu:.1} s | |\n\
         | API requests per ModelDeployment, all clients (creation to Ready) | {req:.1} ({w:.1} writes) | |\n\
         | API requests per plain Deployment, all clients (baseline) | {breq:.1} | |\n\
         | operator's own writes per ModelDeployment (Job, children, status) | {opw:.1} | |\n\
         | operator writes in 60 s of steady state | {ow} | 0 |\n\
         | apiserver writes in 60 s of steady state, all clients | {sw} | |\n\
         | operator CPU in 60 s of steady state | {scpu:.2} s | |\n\n\
         Writes per ModelDeployment by verb and resource, all clients (creation to Ready):\n\n\
         | write | per ModelDeployment |\n| --- | --- |\n{breakdown}\n\
         Writes per plain Deployment (baseline):\n\n\
         | write | per Deployment |\n| --- | --- |\n{base_breakdown}",
        how = match &args.cache {
            Some(uri) => format!(
                "One pinned model for all of them, its report already in the shared optimize cache ({uri}), as \
                 after the first one's Job: no Job runs."
            ),
            None =>
                "No artifact store: one optimize Job (and its pod) per ModelDeployment.".to_owned(),
        },
        md = md_time.as_secs_f64(),
        cr = created.as_secs_f64(),
        base = base_time.as_secs_f64(),
        ratio = md_time.as_secs_f64() / base_time.as_secs_f64(),
        rss = rss_peak,
        rss_end = rss_end,
        cpu = cpu_after - cpu_before,
        req = per_obj(total(&md_after) - total(&md_before)),
        w = per_obj(writes(&md_after) - writes(&md_before)),
        breq = per_obj(base_requests),
        opw = per_obj(op_rollout_after - op_rollout_before),
        ow = op_writes_after - op_writes_before,
        sw = writes(&steady_after) - writes(&steady_before),
        scpu = cpu_steady_after - cpu_steady_before,
        breakdown = write_breakdown(&md_before, &md_after, count),
        base_breakdown = write_breakdown(&base_before, &base_after, count),
    );
    std::fs::write(&args.report, &report).unwrap();
    print!("{report}");
}
