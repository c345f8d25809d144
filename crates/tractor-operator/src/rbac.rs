//! The operator's permissions, derived from its code: every (API group, resource, verb) it calls, why, and the
//! one log line for a call the API server forbids.
//!
//! Each API call names its [`Request`] from this module, and a `Request` is a constant checked against the
//! table when compiled, so code cannot call what the table does not list. A unit test compares the table with
//! the chart's `templates/rbac.yaml` in both directions, so the chart grants exactly what the code calls.
//! Discovery (whether the ServiceMonitor kind is served, `monitor.rs`) reads `/apis/...` paths that every
//! authenticated user may read, so it needs no rule here.

use kube::core::Status;
use kube::runtime::watcher;
use tractor_api::names;

/// One RBAC rule the operator needs: `verbs` on `resource` of `group`, as the chart writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// The resource's plural, with `/subresource` where the rule is for one.
    pub resource: &'static str,
    /// `resourceNames` of the rule; empty: any object.
    pub names: &'static [&'static str],
    /// The verbs granted.
    pub verbs: &'static [&'static str],
    /// The calls that need them.
    pub why: &'static str,
}

/// The name of the leader-election Lease (a Role can narrow get and update to it, not create).
pub const LEADER_LEASE: &str = "tractor-operator";

/// ModelDeployments: the controller's watch, and the start-up check that the CRD is served.
pub const MODELDEPLOYMENTS: Permission = Permission {
    group: names::GROUP,
    resource: "modeldeployments",
    names: &[],
    verbs: &["list", "watch"],
    why: "the controller's watch (list and watch); the start-up check lists one",
};

/// The status subresource, written by server-side apply of an existing object.
pub const MODELDEPLOYMENTS_STATUS: Permission = Permission {
    group: names::GROUP,
    resource: "modeldeployments/status",
    names: &[],
    verbs: &["patch"],
    why: "server-side apply of the status (the object exists: never a create)",
};

/// Optimize Jobs.
pub const JOBS: Permission = Permission {
    group: "batch",
    resource: "jobs",
    names: &[],
    verbs: &["get", "list", "watch", "create", "delete"],
    why: "owned (watched); one Job per revision, created once (its pod template is immutable); old revisions' \
          Jobs listed and deleted once a new one is stable",
};

/// Serving Deployments, stable and canary.
pub const DEPLOYMENTS: Permission = Permission {
    group: "apps",
    resource: "deployments",
    names: &[],
    verbs: &["get", "list", "watch", "create", "patch", "delete"],
    why: "owned (watched); server-side apply (create and patch); replicas scaled and accuracy rollback by \
          merge patch; the canary Deployment deleted at promotion and rollback",
};

/// The ReplicaSets of serving Deployments.
pub const REPLICASETS: Permission = Permission {
    group: "apps",
    resource: "replicasets",
    names: &[],
    verbs: &["list"],
    why: "rollbackOnAccuracyDrop finds the previous revision's pod template in them",
};

/// Model Services.
pub const SERVICES: Permission = Permission {
    group: "",
    resource: "services",
    names: &[],
    verbs: &["get", "list", "watch", "create", "patch"],
    why: "owned (watched); server-side apply (create and patch)",
};

/// PodDisruptionBudgets of serving pods.
pub const PODDISRUPTIONBUDGETS: Permission = Permission {
    group: "policy",
    resource: "poddisruptionbudgets",
    names: &[],
    verbs: &["get", "create", "patch"],
    why: "server-side apply (create and patch), not watched",
};

/// NetworkPolicies of serving pods.
pub const NETWORKPOLICIES: Permission = Permission {
    group: "networking.k8s.io",
    resource: "networkpolicies",
    names: &[],
    verbs: &["get", "create", "patch"],
    why: "server-side apply (create and patch), not watched",
};

/// Pods of optimize Jobs and serving pods.
pub const PODS: Permission = Permission {
    group: "",
    resource: "pods",
    names: &[],
    verbs: &["list", "watch"],
    why: "the optimize Job pod's termination message carries the report; serving pods watched for an init \
          container that fails (a tampered artifact), and listed while replicas are missing",
};

/// Prometheus Operator ServiceMonitors, written only where their CRD is served.
pub const SERVICEMONITORS: Permission = Permission {
    group: crate::monitor::GROUP,
    resource: "servicemonitors",
    names: &[],
    verbs: &["get", "create", "patch"],
    why: "server-side apply (create and patch) of each model's ServiceMonitor",
};

/// Events about ModelDeployments.
pub const EVENTS: Permission = Permission {
    group: "events.k8s.io",
    resource: "events",
    names: &[],
    verbs: &["create", "patch"],
    why: "one Event per distinct message; a repeat patches its series",
};

/// The leader Lease, by name.
pub const LEADER_LEASE_BY_NAME: Permission = Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    names: &[LEADER_LEASE],
    verbs: &["get", "update"],
    why: "leader election reads and renews (replace) its one Lease",
};

/// Creating the leader Lease: RBAC cannot narrow create by name.
pub const LEADER_LEASE_CREATE: Permission = Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    names: &[],
    verbs: &["create"],
    why: "the first replica creates the Lease",
};

/// Secrets named in a spec's `autoscaling.prometheus.headerSecretRef`. The chart grants them only by name, from
/// the value `rbac.secretNames` (none by default), so this rule is not in [`OPERATOR`].
pub const SECRETS: Permission = Permission {
    group: "",
    resource: "secrets",
    names: &[],
    verbs: &["get"],
    why: "the Prometheus authorization header of a spec that names a Secret",
};

/// EndpointSlices: scale to zero points a model's Service at the activator with a slice of its own.
pub const ENDPOINTSLICES: Permission = Permission {
    group: "discovery.k8s.io",
    resource: "endpointslices",
    names: &[],
    verbs: &["list", "watch", "create", "patch", "delete"],
    why: "scale to zero: the activator's addresses listed (and watched, so a lost replica leaves every \
          slice at once); the slice leading a model's Service to them applied and deleted; the endpoints \
          controller's slices of a Service without its selector deleted (that controller leaves them behind)",
};

/// Endpoints objects: a Service that loses its selector keeps the last one the endpoints controller wrote.
pub const ENDPOINTS: Permission = Permission {
    group: "",
    resource: "endpoints",
    names: &[],
    verbs: &["delete"],
    why: "scale to zero: the Endpoints object of a model Service without its selector deleted (the endpoints \
          controller leaves it behind, and the mirroring controller would copy its gone pods into a slice)",
};

/// The rules of the operator's Role (one watched namespace) or ClusterRole (all namespaces).
pub const OPERATOR: &[Permission] = &[
    MODELDEPLOYMENTS,
    MODELDEPLOYMENTS_STATUS,
    JOBS,
    DEPLOYMENTS,
    REPLICASETS,
    SERVICES,
    PODDISRUPTIONBUDGETS,
    NETWORKPOLICIES,
    PODS,
    SERVICEMONITORS,
    EVENTS,
    ENDPOINTSLICES,
    ENDPOINTS,
];

/// The rules of the leader-election Role, in the release namespace.
pub const LEADER_ELECTION: &[Permission] = &[LEADER_LEASE_BY_NAME, LEADER_LEASE_CREATE];

/// One API request the operator makes: what it does, in words, and the RBAC verb and rule that allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// In words, for error messages: `scale Deployment`.
    pub what: &'static str,
    /// The verb the API server authorizes it as.
    pub verb: &'static str,
    /// A server-side apply: a `patch`, authorized as `create` as well when it creates the object.
    pub apply: bool,
    /// The rule that grants it.
    pub on: &'static Permission,
}

impl Request {
    /// `verb` on `on`'s resource. As a constant, a verb the table does not grant fails the build.
    pub const fn new(what: &'static str, verb: &'static str, on: &'static Permission) -> Request {
        assert!(grants(on, verb), "the RBAC table does not grant this verb");
        Request {
            what,
            verb,
            apply: false,
            on,
        }
    }

    /// A server-side apply, authorized as `patch`, and as `create` when the object is new: both must be
    /// granted.
    pub const fn apply(what: &'static str, on: &'static Permission) -> Request {
        assert!(
            grants(on, "create"),
            "a server-side apply needs create as well as patch"
        );
        Request {
            apply: true,
            ..Request::new(what, "patch", on)
        }
    }

    /// The forbidden-call fields when `e` is the API server's 403 for this request.
    pub fn forbidden<'a>(
        &'a self,
        namespace: Option<&'a str>,
        e: &'a kube::Error,
    ) -> Option<Forbidden<'a>> {
        let status = forbidden_status(e)?;
        Some(Forbidden::new(self, namespace, status))
    }

    /// Logs [`FORBIDDEN_LOG`] when `e` is the API server's 403 for this request.
    pub fn log_if_forbidden(&self, namespace: Option<&str>, e: &kube::Error) {
        if let Some(f) = self.forbidden(namespace, e) {
            f.log();
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

/// True when `p` grants `verb`. A `const fn` so that [`Request`] constants are checked when compiled.
const fn grants(p: &Permission, verb: &str) -> bool {
    let mut i = 0;
    while i < p.verbs.len() {
        if str_eq(p.verbs[i], verb) {
            return true;
        }
        i += 1;
    }
    false
}

/// `==` on strings, which is not yet callable in a `const fn`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Start-up: is the CRD served, may the operator list its objects?
pub const LIST_MODELDEPLOYMENTS: Request =
    Request::new("list ModelDeployments", "list", &MODELDEPLOYMENTS);
/// The controller's watch after its initial list.
pub const WATCH_MODELDEPLOYMENTS: Request =
    Request::new("watch ModelDeployments", "watch", &MODELDEPLOYMENTS);
/// Status written by server-side apply.
pub const PATCH_STATUS: Request = Request::new("patch status", "patch", &MODELDEPLOYMENTS_STATUS);
/// The revision's optimize Job, if it exists.
pub const GET_JOB: Request = Request::new("get Job", "get", &JOBS);
/// A revision's optimize Job, created once.
pub const CREATE_JOB: Request = Request::new("create Job", "create", &JOBS);
/// Optimize Jobs of a model (owned-object watch and pruning).
pub const LIST_JOBS: Request = Request::new("list Jobs", "list", &JOBS);
/// The owned-object watch on Jobs.
pub const WATCH_JOBS: Request = Request::new("watch Jobs", "watch", &JOBS);
/// An old revision's optimize Job.
pub const DELETE_JOB: Request = Request::new("delete Job", "delete", &JOBS);
/// The optimize Job's pods, for the report in their termination message.
pub const LIST_JOB_PODS: Request = Request::new("list Job pods", "list", &PODS);
/// A ModelDeployment's serving pods, while replicas are missing: which init container failed and why.
pub const LIST_SERVING_PODS: Request = Request::new("list serving pods", "list", &PODS);
/// The pod watch's initial list (serving pods whose init container fails wake their ModelDeployment).
pub const LIST_PODS: Request = Request::new("list pods", "list", &PODS);
/// The pod watch.
pub const WATCH_PODS: Request = Request::new("watch pods", "watch", &PODS);
/// A serving Deployment, stable or canary.
pub const GET_DEPLOYMENT: Request = Request::new("get Deployment", "get", &DEPLOYMENTS);
/// Serving Deployments (the owned-object watch).
pub const LIST_DEPLOYMENTS: Request = Request::new("list Deployments", "list", &DEPLOYMENTS);
/// The owned-object watch on Deployments.
pub const WATCH_DEPLOYMENTS: Request = Request::new("watch Deployments", "watch", &DEPLOYMENTS);
/// A serving Deployment written by server-side apply.
pub const APPLY_DEPLOYMENT: Request = Request::apply("apply Deployment", &DEPLOYMENTS);
/// The replica count alone, by merge patch.
pub const SCALE_DEPLOYMENT: Request = Request::new("scale Deployment", "patch", &DEPLOYMENTS);
/// rollbackOnAccuracyDrop: the previous revision's pod template, by merge patch.
pub const ROLL_BACK_DEPLOYMENT: Request =
    Request::new("roll back Deployment", "patch", &DEPLOYMENTS);
/// The canary Deployment, at promotion and rollback.
pub const DELETE_DEPLOYMENT: Request = Request::new("delete Deployment", "delete", &DEPLOYMENTS);
/// rollbackOnAccuracyDrop: the serving Deployment's ReplicaSets.
pub const LIST_REPLICASETS: Request = Request::new("list ReplicaSets", "list", &REPLICASETS);
/// A model's Service.
pub const GET_SERVICE: Request = Request::new("get Service", "get", &SERVICES);
/// Services (the owned-object watch).
pub const LIST_SERVICES: Request = Request::new("list Services", "list", &SERVICES);
/// The owned-object watch on Services.
pub const WATCH_SERVICES: Request = Request::new("watch Services", "watch", &SERVICES);
/// A model's Service written by server-side apply.
pub const APPLY_SERVICE: Request = Request::apply("apply Service", &SERVICES);
/// A model's PodDisruptionBudget.
pub const GET_PODDISRUPTIONBUDGET: Request =
    Request::new("get PodDisruptionBudget", "get", &PODDISRUPTIONBUDGETS);
/// A model's PodDisruptionBudget written by server-side apply.
pub const APPLY_PODDISRUPTIONBUDGET: Request =
    Request::apply("apply PodDisruptionBudget", &PODDISRUPTIONBUDGETS);
/// A model's NetworkPolicy.
pub const GET_NETWORKPOLICY: Request = Request::new("get NetworkPolicy", "get", &NETWORKPOLICIES);
/// A model's NetworkPolicy written by server-side apply.
pub const APPLY_NETWORKPOLICY: Request = Request::apply("apply NetworkPolicy", &NETWORKPOLICIES);
/// A model's ServiceMonitor.
pub const GET_SERVICEMONITOR: Request = Request::new("get ServiceMonitor", "get", &SERVICEMONITORS);
/// A model's ServiceMonitor written by server-side apply.
pub const APPLY_SERVICEMONITOR: Request = Request::apply("apply ServiceMonitor", &SERVICEMONITORS);
/// A new Event.
pub const CREATE_EVENT: Request = Request::new("create Event", "create", &EVENTS);
/// One more occurrence in an Event's series.
pub const PATCH_EVENT: Request = Request::new("patch Event series", "patch", &EVENTS);
/// The leader Lease.
pub const GET_LEASE: Request = Request::new("get Lease", "get", &LEADER_LEASE_BY_NAME);
/// The leader Lease, first time.
pub const CREATE_LEASE: Request = Request::new("create Lease", "create", &LEADER_LEASE_CREATE);
/// Renewal or takeover of the leader Lease (a replace, for optimistic concurrency).
pub const RENEW_LEASE: Request = Request::new("renew Lease", "update", &LEADER_LEASE_BY_NAME);
/// The Prometheus authorization header's Secret.
pub const GET_SECRET: Request = Request::new("get Secret", "get", &SECRETS);

/// Scale to zero: the activator's slices and a model Service's.
pub const LIST_ENDPOINTSLICES: Request =
    Request::new("list EndpointSlices", "list", &ENDPOINTSLICES);
/// The watch that moves models at zero off an activator replica that went away.
pub const WATCH_ENDPOINTSLICES: Request =
    Request::new("watch EndpointSlices", "watch", &ENDPOINTSLICES);
/// The slice leading a model's Service to the activator.
pub const APPLY_ENDPOINTSLICE: Request = Request::apply("apply EndpointSlice", &ENDPOINTSLICES);
/// Slices the Service no longer needs.
pub const DELETE_ENDPOINTSLICE: Request =
    Request::new("delete EndpointSlice", "delete", &ENDPOINTSLICES);

/// The Endpoints object of a Service without its selector.
pub const DELETE_ENDPOINTS: Request = Request::new("delete Endpoints", "delete", &ENDPOINTS);

/// Every request above: a verb in the table that none of them makes is one the chart grants for nothing.
pub const REQUESTS: &[Request] = &[
    LIST_MODELDEPLOYMENTS,
    WATCH_MODELDEPLOYMENTS,
    PATCH_STATUS,
    GET_JOB,
    CREATE_JOB,
    LIST_JOBS,
    WATCH_JOBS,
    DELETE_JOB,
    LIST_JOB_PODS,
    LIST_SERVING_PODS,
    LIST_PODS,
    WATCH_PODS,
    GET_DEPLOYMENT,
    LIST_DEPLOYMENTS,
    WATCH_DEPLOYMENTS,
    APPLY_DEPLOYMENT,
    SCALE_DEPLOYMENT,
    ROLL_BACK_DEPLOYMENT,
    DELETE_DEPLOYMENT,
    LIST_REPLICASETS,
    GET_SERVICE,
    LIST_SERVICES,
    WATCH_SERVICES,
    APPLY_SERVICE,
    GET_PODDISRUPTIONBUDGET,
    APPLY_PODDISRUPTIONBUDGET,
    GET_NETWORKPOLICY,
    APPLY_NETWORKPOLICY,
    GET_SERVICEMONITOR,
    APPLY_SERVICEMONITOR,
    CREATE_EVENT,
    PATCH_EVENT,
    GET_LEASE,
    CREATE_LEASE,
    RENEW_LEASE,
    GET_SECRET,
    LIST_ENDPOINTSLICES,
    WATCH_ENDPOINTSLICES,
    APPLY_ENDPOINTSLICE,
    DELETE_ENDPOINTSLICE,
    DELETE_ENDPOINTS,
];

/// The message of the one log line (level WARN) for every API call the API server forbade, with the fields
/// `verb`, `group`, `resource` (as in an RBAC rule), `namespace` (when the call had one) and `error` (the API
/// server's message). A test harness greps operator logs for it.
pub const FORBIDDEN_LOG: &str = "API call forbidden";

/// The fields of a [`FORBIDDEN_LOG`] line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden<'a> {
    /// The RBAC verb of the request.
    pub verb: &'a str,
    /// Its API group (`""`: core).
    pub group: &'a str,
    /// Its resource, with `/subresource` where it is on one.
    pub resource: &'a str,
    /// Its namespace; `None` for a cluster-wide call.
    pub namespace: Option<&'a str>,
    /// The API server's message (it names the user and the verb it refused).
    pub message: &'a str,
}

impl<'a> Forbidden<'a> {
    fn new(request: &'a Request, namespace: Option<&'a str>, status: &'a Status) -> Self {
        Forbidden {
            verb: request.verb,
            group: request.on.group,
            resource: request.on.resource,
            namespace,
            message: &status.message,
        }
    }

    /// Writes the [`FORBIDDEN_LOG`] line.
    pub fn log(&self) {
        tracing::warn!(
            verb = self.verb,
            group = self.group,
            resource = self.resource,
            namespace = self.namespace,
            error = self.message,
            "{FORBIDDEN_LOG}"
        );
    }
}

/// The API server's 403 behind `e`, if that is what it was.
pub fn forbidden_status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) if s.code == 403 => Some(s),
        _ => None,
    }
}

/// The forbidden-call fields of a watch's error: its initial list is `list`, the rest `watch`.
pub fn watch_forbidden<'a>(
    list: &'a Request,
    watch: &'a Request,
    namespace: Option<&'a str>,
    e: &'a watcher::Error,
) -> Option<Forbidden<'a>> {
    match e {
        watcher::Error::InitialListFailed(e) => list.forbidden(namespace, e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            watch.forbidden(namespace, e)
        }
        watcher::Error::WatchError(s) if s.code == 403 => Some(Forbidden::new(watch, namespace, s)),
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A (group, resource, verb) a rule grants, with the rule's resourceNames (empty: any).
    type Grant = (String, String, String, Vec<String>);

    fn grants_of(rules: &[Permission]) -> BTreeSet<Grant> {
        rules
            .iter()
            .flat_map(|p| {
                p.verbs.iter().map(|v| {
                    (
                        p.group.to_owned(),
                        p.resource.to_owned(),
                        (*v).to_owned(),
                        p.names.iter().map(|n| (*n).to_owned()).collect(),
                    )
                })
            })
            .collect()
    }

    /// `[a, "b", c]` → its items, unquoted.
    fn flow_list(s: &str) -> Vec<String> {
        let inner = s
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or_else(|| panic!("not a [..] list: {s:?}"));
        if inner.trim().is_empty() {
            return vec![];
        }
        inner
            .split(',')
            .map(|i| i.trim().trim_matches('"').to_owned())
            .collect()
    }

    /// The rules in the chart's rbac.yaml, read as text (it is a Helm template, not YAML).
    #[derive(Debug, Default)]
    struct ChartRules {
        /// The Role/ClusterRole's plain rules.
        operator: BTreeSet<Grant>,
        /// The leader-election Role's.
        leader_election: BTreeSet<Grant>,
        /// The lines of the value-driven Secrets rule (`{{- with $secretNames }}`).
        secrets: Vec<String>,
    }

    fn chart_rules(text: &str) -> ChartRules {
        let mut out = ChartRules::default();
        for doc in text.split("\n---\n") {
            let is_operator = doc.lines().any(|l| l.trim() == "kind: {{ $kind }}");
            let is_leader = doc.lines().any(|l| l.trim() == "kind: Role")
                && doc.lines().any(|l| l.trim().ends_with("-leader-election"));
            if !is_operator && !is_leader {
                continue;
            }
            let Some((_, rules)) = doc.split_once("\nrules:\n") else {
                continue;
            };
            let mut grants = BTreeSet::new();
            let mut rule: Vec<(String, Vec<String>)> = vec![];
            let mut in_secrets = false;
            let mut flush = |rule: &mut Vec<(String, Vec<String>)>| {
                if rule.is_empty() {
                    return;
                }
                let field = |wanted: &str| {
                    rule.iter()
                        .find(|(key, _)| key == wanted)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let keys: Vec<&str> = rule.iter().map(|(k, _)| k.as_str()).collect();
                for key in &keys {
                    assert!(
                        ["apiGroups", "resources", "resourceNames", "verbs"].contains(key),
                        "rbac.yaml: a rule with {key}, which this test does not read: {rule:?}"
                    );
                }
                for group in field("apiGroups") {
                    for resource in field("resources") {
                        for verb in field("verbs") {
                            grants.insert((
                                group.clone(),
                                resource.clone(),
                                verb,
                                field("resourceNames"),
                            ));
                        }
                    }
                }
                rule.clear();
            };
            for line in rules.lines() {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                // `rbac.secretNames`, plus the artifact store's Secret when one is configured.
                if trimmed.starts_with("{{- with $secretNames") {
                    in_secrets = true;
                    continue;
                }
                if in_secrets {
                    if trimmed == "{{- end }}" {
                        in_secrets = false;
                    } else {
                        out.secrets.push(trimmed.to_owned());
                    }
                    continue;
                }
                if trimmed.starts_with("{{") {
                    // The template's closing `{{- end }}` lines after the last rule.
                    flush(&mut rule);
                    continue;
                }
                let trimmed = match trimmed.strip_prefix("- ") {
                    Some(first) => {
                        flush(&mut rule);
                        first
                    }
                    None => trimmed,
                };
                let (key, value) = trimmed
                    .split_once(':')
                    .unwrap_or_else(|| panic!("rbac.yaml: unexpected line in rules: {line:?}"));
                rule.push((key.trim().to_owned(), flow_list(value)));
            }
            flush(&mut rule);
            if is_operator {
                out.operator = grants;
            } else {
                out.leader_election = grants;
            }
        }
        out
    }

    /// The difference, both ways, as lines a reader can act on.
    fn drift(what: &str, code: &BTreeSet<Grant>, chart: &BTreeSet<Grant>) -> Vec<String> {
        let show = |(g, r, v, n): &Grant| {
            let group = if g.is_empty() { "\"\"" } else { g };
            let names = if n.is_empty() {
                String::new()
            } else {
                format!(" (resourceNames {n:?})")
            };
            format!("({group}, {r}, {v}){names}")
        };
        let mut out = vec![];
        for g in code.difference(chart) {
            out.push(format!(
                "{what}: missing from the chart (the code calls it): {}",
                show(g)
            ));
        }
        for g in chart.difference(code) {
            out.push(format!(
                "{what}: extra in the chart (no code calls it): {}",
                show(g)
            ));
        }
        out
    }

    #[test]
    fn chart_grants_exactly_what_the_code_calls() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/tractor/templates/rbac.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let chart = chart_rules(&text);
        let mut problems = drift("Role/ClusterRole", &grants_of(OPERATOR), &chart.operator);
        problems.extend(drift(
            "leader-election Role",
            &grants_of(LEADER_ELECTION),
            &chart.leader_election,
        ));
        // Secrets stay value-driven: readable only by the names rbac.secretNames lists, and only read.
        let secrets_rule = [
            "- apiGroups: [\"\"]",
            "resources: [secrets]",
            "resourceNames: {{ toJson . }}",
            "verbs: [get]",
        ];
        if chart.secrets != secrets_rule {
            problems.push(format!(
                "the rbac.secretNames rule must stay {secrets_rule:?}, is {:?}",
                chart.secrets
            ));
        }
        assert!(
            problems.is_empty(),
            "charts/tractor/templates/rbac.yaml and crates/tractor-operator/src/rbac.rs differ:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_secrets_rule_matches_the_chart_s_and_the_autoscaler_s_request() {
        assert_eq!((SECRETS.group, SECRETS.resource), ("", "secrets"));
        assert_eq!(SECRETS.verbs, ["get"]);
        assert!(
            !OPERATOR
                .iter()
                .chain(LEADER_ELECTION)
                .any(|p| p.resource == "secrets")
        );
    }

    #[test]
    fn every_granted_verb_is_requested_and_nothing_is_a_wildcard() {
        let requested: BTreeSet<(&str, &str, &str)> = REQUESTS
            .iter()
            .map(|r| (r.on.group, r.on.resource, r.verb))
            .collect();
        for p in OPERATOR.iter().chain(LEADER_ELECTION).chain([&SECRETS]) {
            for v in p.verbs {
                // A server-side apply is requested as patch and authorized as create too.
                let applied = *v == "create" && REQUESTS.iter().any(|r| r.on == p && r.apply);
                assert!(
                    requested.contains(&(p.group, p.resource, v)) || applied,
                    "{} {} {v}: granted, but no request makes it",
                    p.group,
                    p.resource
                );
            }
            for s in [p.group, p.resource].iter().chain(p.verbs).chain(p.names) {
                assert!(!s.contains('*'), "wildcard in {p:?}");
            }
        }
    }

    fn status(code: u16, message: &str) -> Box<Status> {
        Status::failure(message, "Forbidden")
            .with_code(code)
            .boxed()
    }

    #[test]
    fn a_403_maps_to_the_forbidden_log_fields() {
        let msg = "deployments.apps \"m-canary\" is forbidden: User \"system:serviceaccount:t:tractor\" cannot \
                   delete resource \"deployments\" in API group \"apps\" in the namespace \"models\"";
        let forbidden = kube::Error::Api(status(403, msg));
        assert_eq!(
            DELETE_DEPLOYMENT.forbidden(Some("models"), &forbidden),
            Some(Forbidden {
                verb: "delete",
                group: "apps",
                resource: "deployments",
                namespace: Some("models"),
                message: msg,
            })
        );
        for other in [
            kube::Error::Api(status(404, "not found")),
            kube::Error::Api(status(409, "conflict")),
            kube::Error::Service(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        ] {
            assert_eq!(DELETE_DEPLOYMENT.forbidden(None, &other), None, "{other}");
        }
    }

    #[test]
    fn a_watch_s_403_names_list_or_watch() {
        let list = LIST_DEPLOYMENTS;
        let watch = WATCH_DEPLOYMENTS;
        let cases: Vec<(watcher::Error, Option<&str>)> = vec![
            (
                watcher::Error::InitialListFailed(kube::Error::Api(status(403, "no"))),
                Some("list"),
            ),
            (
                watcher::Error::WatchStartFailed(kube::Error::Api(status(403, "no"))),
                Some("watch"),
            ),
            (
                watcher::Error::WatchFailed(kube::Error::Api(status(403, "no"))),
                Some("watch"),
            ),
            (watcher::Error::WatchError(status(403, "no")), Some("watch")),
            (watcher::Error::WatchError(status(410, "gone")), None),
            (
                watcher::Error::InitialListFailed(kube::Error::Api(status(500, "oops"))),
                None,
            ),
            (watcher::Error::NoResourceVersion, None),
        ];
        for (error, verb) in &cases {
            let forbidden = watch_forbidden(&list, &watch, None, error);
            assert_eq!(forbidden.as_ref().map(|f| f.verb), *verb, "{error}");
            if let Some(forbidden) = forbidden {
                assert_eq!(
                    (forbidden.group, forbidden.resource),
                    ("apps", "deployments")
                );
            }
        }
    }
}
