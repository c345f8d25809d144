//! The activator's permissions: every (API group, resource, verbs) it calls, for the chart's ClusterRole and
//! the test that keeps the two equal.

use tractor_api::names;

/// One RBAC rule: `verbs` on `resource` of `group`, as the chart writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// The resource's plural.
    pub resource: &'static str,
    /// The verbs granted.
    pub verbs: &'static [&'static str],
    /// The calls that need them.
    pub why: &'static str,
}

/// Everything the activator calls, cluster-wide (or in `--namespace`); nothing else.
pub const RULES: &[Permission] = &[
    Permission {
        group: names::GROUP,
        resource: "modeldeployments",
        verbs: &["list", "watch", "patch"],
        why: "hold settings (list, watch) and the wake annotation (merge patch)",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
        why: "tractor Services, to route by cluster IP and name",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        why: "serving pods, to forward to the ready ones",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `(group, resource, verbs)` of each rule in the chart's activator ClusterRole, from its flow-style lists.
    fn chart_rules() -> Vec<(String, String, Vec<String>)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/tractor/templates/activator.yaml"
        );
        let text = std::fs::read_to_string(path).expect("the chart's activator.yaml");
        let list = |line: &str, key: &str| -> Option<Vec<String>> {
            let inner = line
                .trim()
                .trim_start_matches("- ")
                .strip_prefix(key)?
                .trim();
            let inner = inner.strip_prefix('[')?.strip_suffix(']')?;
            Some(
                inner
                    .split(',')
                    .map(|item| item.trim().trim_matches('"').to_owned())
                    .collect(),
            )
        };
        let lines: Vec<&str> = text.lines().collect();
        lines
            .windows(3)
            .filter_map(|three| {
                let groups = list(three[0], "apiGroups:")?;
                let resources = list(three[1], "resources:")?;
                let verbs = list(three[2], "verbs:")?;
                Some((groups[0].clone(), resources[0].clone(), verbs))
            })
            .collect()
    }

    #[test]
    fn the_chart_grants_exactly_these_rules() {
        let code: Vec<(String, String, Vec<String>)> = RULES
            .iter()
            .map(|rule| {
                (
                    rule.group.to_owned(),
                    rule.resource.to_owned(),
                    rule.verbs.iter().map(|verb| (*verb).to_owned()).collect(),
                )
            })
            .collect();
        assert_eq!(chart_rules(), code);
    }
}
