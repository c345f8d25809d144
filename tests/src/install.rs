//! Helpers for the install tests: helm from the cluster's build cache, the chart, a kubeconfig that acts as the
//! chart's ServiceAccount (a TokenRequest token), and the gitops-health helper (Flux kstatus, Argo CD health).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::cluster::{Cluster, TestNamespace, repo_root};

/// `charts/tractor`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/tractor")
}

/// The helm binary built by `tests/cluster/build.sh`.
pub fn helm_binary() -> Result<PathBuf> {
    let out = Command::new(repo_root().join("tests/cluster/build.sh"))
        .arg("--bin-dir")
        .output()
        .context("running tests/cluster/build.sh --bin-dir")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
    ensure!(
        bin.is_file(),
        "{} not found: run tests/cluster/build.sh",
        bin.display()
    );
    Ok(bin)
}

/// Output of one helm run: exit status, stdout, stderr.
pub struct HelmOutput {
    /// True when helm exited 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error (warnings land here, PodSecurity ones included).
    pub stderr: String,
}

/// Runs helm against the test cluster and returns its output whatever the exit status.
pub fn helm_output(cluster: &Cluster, args: &[&str]) -> Result<HelmOutput> {
    let out = Command::new(helm_binary()?)
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        // Helm keeps its caches and repository config under HOME; isolate them per run.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("tractor-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("tractor-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("tractor-helm/data"),
        )
        .stdin(Stdio::null())
        .output()
        .context("running helm")?;
    Ok(HelmOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs helm and fails with its stderr unless it exits 0; returns stdout and stderr.
pub fn helm(cluster: &Cluster, args: &[&str]) -> Result<HelmOutput> {
    let out = helm_output(cluster, args)?;
    if !out.success {
        bail!(
            "helm {} failed: {}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
    }
    Ok(out)
}

/// `helm template` of the chart as release `release` in `namespace`, with `--set` pairs; parsed documents.
pub fn render(
    cluster: &Cluster,
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> Result<Vec<Value>> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("chart path")?,
        "--namespace",
        namespace,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(cluster, &args)?;
    parse_documents(&out.stdout)
}

/// Parses a multi-document YAML stream, skipping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = vec![];
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing YAML document")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The name of the chart's objects for a release (the chart's `tractor.fullname`).
pub fn fullname(release: &str) -> String {
    if release.contains("tractor") {
        release.to_owned()
    } else {
        format!("{release}-tractor")
    }
}

/// An installed release; dropping it runs `helm uninstall`, so a failing test leaves no cluster-scoped
/// ClusterRole behind (deleting the test's namespace removes only the namespaced objects).
pub struct Release {
    cluster: &'static Cluster,
    name: String,
    namespace: String,
    /// helm's output of the install.
    pub output: HelmOutput,
}

impl Release {
    /// The release name (the namespace's).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm_output(
            self.cluster,
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--ignore-not-found",
            ],
        );
    }
}

/// Installs the chart into `ns` as release `ns` (namespaces are unique, so are release names), with the image
/// imported on the real node, and waits for the operator Deployment to be Available (its pod really runs).
/// `sets` come last, so they override.
pub fn install(cluster: &'static Cluster, ns: &TestNamespace, sets: &[&str]) -> Result<Release> {
    crate::node::real_node()?;
    let image = image_values();
    let mut all: Vec<&str> = image.iter().map(String::as_str).collect();
    all.extend(sets);
    install_release(cluster, ns.name(), ns.name(), &all)
}

/// The chart values naming the image the tests import on the real node (`image.repository`, `image.tag`).
pub fn image_values() -> [String; 2] {
    let (repository, tag) = crate::node::E2E_IMAGE
        .rsplit_once(':')
        .unwrap_or((crate::node::E2E_IMAGE, "latest"));
    [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
    ]
}

/// `helm install RELEASE charts/tractor -n NAMESPACE --wait` with `--set` pairs, as given.
pub fn install_release(
    cluster: &'static Cluster,
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> Result<Release> {
    let chart = chart_dir();
    let mut args = vec![
        "install",
        release,
        chart.to_str().context("chart path")?,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "180s",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let output = helm(cluster, &args)?;
    Ok(Release {
        cluster,
        name: release.to_owned(),
        namespace: namespace.to_owned(),
        output,
    })
}

/// A kubeconfig authenticating as ServiceAccount `sa` of `namespace` with a token from the TokenRequest API,
/// so a process using it has exactly the RBAC that ServiceAccount has.
pub struct ServiceAccountKubeconfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ServiceAccountKubeconfig {
    /// Requests a one-hour token for `namespace/sa` and writes the kubeconfig.
    pub fn new(cluster: &Cluster, namespace: &str, sa: &str) -> Result<Self> {
        let token = cluster.kubectl(&["create", "token", sa, "-n", namespace, "--duration=1h"])?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kubeconfig");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": cluster.apiserver_url(),
                "certificate-authority": cluster.ca_cert(),
            }}],
            "users": [{"name": sa, "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "test", "user": sa, "namespace": namespace}}],
            "current-context": "sa",
        });
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(Self { _dir: dir, path })
    }

    /// Path of the kubeconfig file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The gitops-health helper, built (or found in its cache) by `tests/gitops-health/build.sh`.
pub fn gitops_health_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo_root().join("tests/gitops-health/build.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running tests/gitops-health/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/gitops-health/build.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// What Flux (kstatus) and Argo CD (gitops-engine, with the chart's Lua check for ModelDeployments) say of
/// one live object.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// kstatus: `InProgress`, `Current`, `Failed`, `Terminating`, `NotFound` or `Unknown`.
    pub kstatus: String,
    /// Argo CD: `Progressing`, `Healthy`, `Degraded`, `Suspended`, `Missing`, `Unknown`, or empty when Argo CD
    /// has no check for the kind.
    pub argo: String,
    /// Both messages, for failure output.
    pub messages: String,
}

/// Assesses `kind/name` in `ns` as it is live now.
pub fn health(ns: &TestNamespace, kind: &str, name: &str) -> Result<Health> {
    let object = ns.kubectl(&["get", kind, name, "-o", "json"])?;
    let lua = chart_dir().join("files/argocd-health.lua");
    let mut child = Command::new(gitops_health_binary()?)
        .arg(format!(
            "--lua=serving.tractor.dev/ModelDeployment={}",
            lua.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gitops-health")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(object.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "gitops-health failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value =
        serde_json::from_slice(&out.stdout).context("parsing gitops-health output")?;
    let field = |tool: &str, f: &str| line[tool][f].as_str().unwrap_or_default().to_owned();
    Ok(Health {
        kstatus: field("kstatus", "status"),
        argo: field("argo", "status"),
        messages: format!(
            "kstatus: {:?}; argo: {:?}",
            field("kstatus", "message"),
            field("argo", "message")
        ),
    })
}

/// Every RBAC rule of the rendered Roles and ClusterRoles, as (kind/name, rule).
pub fn rbac_rules(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| {
            let who = format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            d["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (who.clone(), r))
        })
        .collect()
}

/// Applies the minimal example as `name` in `ns`, stands in for its optimize Job, and waits until it is Ready:
/// what an operator must be allowed to do for one model, end to end.
pub fn reconcile_example(ns: &TestNamespace, name: &str) -> Result<()> {
    use crate::modeldeployment::{
        apply_example, finish_job_with_report, success_report, wait_for_new_job,
    };
    apply_example(ns, "minimal.yaml", name)?;
    let job = wait_for_new_job(ns, name, &[])?;
    finish_job_with_report(ns, &job, &success_report("f32"))?;
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("mdep/{name}"),
        "--timeout=120s",
    ])?;
    crate::modeldeployment::ensure_one_of_each_child(ns, name)?;
    // The event recorder's writes are best effort in the operator, so check them here: a missing RBAC verb
    // would only show as a log line.
    let events = ns.kubectl_json(&["get", "events.events.k8s.io"])?;
    let ours = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name && e["reportingController"] == "tractor")
        .count();
    ensure!(
        ours > 0,
        "no event from the operator about {name}: {events}"
    );
    Ok(())
}

/// Fails unless nothing labelled `selector` is left in `namespace` (namespaced kinds) or in the cluster
/// (ClusterRoles and their bindings).
pub fn ensure_nothing_left(cluster: &Cluster, namespace: &str, selector: &str) -> Result<()> {
    crate::cluster::wait_for(
        crate::cluster::DEFAULT_WAIT,
        "every installed object to go",
        || {
            let left = cluster.kubectl(&[
            "get",
            "deployments,replicasets,pods,services,serviceaccounts,configmaps,poddisruptionbudgets,roles,rolebindings,leases",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "name",
        ])?;
            let cluster_wide = cluster.kubectl(&[
                "get",
                "clusterroles,clusterrolebindings",
                "-l",
                selector,
                "-o",
                "name",
            ])?;
            let all = format!("{left}{cluster_wide}");
            if all.trim().is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow!("still there: {all}"))
            }
        },
    )
}
