//! Which model a request is for, from its `Host` (HTTP/1) or `:authority` (HTTP/2): the Host-based routing
//! KEDA's HTTP add-on uses, as a pure function of the header and the index of tractor Services.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

/// A model: its ModelDeployment's namespace and name, which its Service shares.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    /// The namespace.
    pub namespace: String,
    /// The ModelDeployment's (and its Service's) name.
    pub name: String,
}

impl ModelKey {
    /// The model `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The tractor Services a host can name: by cluster IP and by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceIndex {
    by_ip: HashMap<IpAddr, ModelKey>,
    /// Name to the namespaces that have a tractor Service of that name; ordered, so messages are stable.
    by_name: HashMap<String, BTreeSet<String>>,
}

impl ServiceIndex {
    /// Adds the Service `model` with its cluster IPs (none for a headless one).
    pub fn insert(&mut self, model: ModelKey, cluster_ips: impl IntoIterator<Item = IpAddr>) {
        for ip in cluster_ips {
            self.by_ip.insert(ip, model.clone());
        }
        self.by_name
            .entry(model.name)
            .or_default()
            .insert(model.namespace);
    }

    /// How many Services it holds.
    pub fn len(&self) -> usize {
        self.by_name.values().map(BTreeSet::len).sum()
    }

    /// Whether it holds no Service.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn contains(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|namespaces| namespaces.contains(namespace))
    }
}

/// Why a host names no one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The request had neither `Host` nor `:authority`.
    NoHost,
    /// The host names no tractor Service.
    Unknown(String),
    /// A bare name that tractor Services in several namespaces have.
    Ambiguous {
        /// The name.
        name: String,
        /// The namespaces that have it.
        namespaces: Vec<String>,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHost => f.write_str(
                "the request names no host: send Host (or :authority) <name>.<namespace> of the model's Service",
            ),
            Self::Unknown(host) => write!(f, "no tractor model is served at {host:?}"),
            Self::Ambiguous { name, namespaces } => write!(
                f,
                "{name:?} is a model in several namespaces ({}): say <name>.<namespace>",
                namespaces.join(", ")
            ),
        }
    }
}

/// The model a request's host (`Host` header or `:authority`, a port allowed) names: a Service's cluster IP;
/// `name.namespace`, `name.namespace.svc` or `name.namespace.svc.<cluster domain>`; or a bare `name` that one
/// namespace alone has. Only tractor Services count.
pub fn route(host: Option<&str>, services: &ServiceIndex) -> Result<ModelKey, RouteError> {
    let raw = host.map(str::trim).filter(|host| !host.is_empty());
    let Some(raw) = raw else {
        return Err(RouteError::NoHost);
    };
    let host = strip_port(raw).trim_end_matches('.').to_ascii_lowercase();
    let unknown = || RouteError::Unknown(raw.to_owned());
    if let Ok(ip) = host.parse::<IpAddr>() {
        return services.by_ip.get(&ip).cloned().ok_or_else(unknown);
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name] => {
            let namespaces = services.by_name.get(*name).ok_or_else(unknown)?;
            let mut only = namespaces.iter();
            match (only.next(), only.next()) {
                (Some(namespace), None) => Ok(ModelKey::new(namespace.clone(), *name)),
                _ => Err(RouteError::Ambiguous {
                    name: (*name).to_owned(),
                    namespaces: namespaces.iter().cloned().collect(),
                }),
            }
        }
        [name, namespace] | [name, namespace, "svc", ..] if services.contains(namespace, name) => {
            Ok(ModelKey::new(*namespace, *name))
        }
        _ => Err(unknown()),
    }
}

/// The host without its port: `[::1]:8080` is `::1`, `a.b:80` is `a.b`; an unbracketed IPv6 address is kept whole.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':') && port.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ServiceIndex {
        let mut index = ServiceIndex::default();
        index.insert(
            ModelKey::new("team-a", "digits"),
            [
                "10.96.0.10".parse().expect("ip"),
                "fd00::10".parse().expect("ip"),
            ],
        );
        index.insert(
            ModelKey::new("team-a", "iris"),
            ["10.96.0.11".parse().expect("ip")],
        );
        index.insert(
            ModelKey::new("team-b", "iris"),
            ["10.96.0.12".parse().expect("ip")],
        );
        index.insert(ModelKey::new("team-b", "headless"), []);
        index
    }

    #[test]
    fn hosts_route_to_the_model_their_service_names() {
        let index = index();
        let digits = Ok(ModelKey::new("team-a", "digits"));
        let cases: Vec<(Option<&str>, Result<ModelKey, RouteError>)> = vec![
            (Some("10.96.0.10"), digits.clone()),
            (Some("10.96.0.10:8080"), digits.clone()),
            (Some("[fd00::10]:8081"), digits.clone()),
            (Some("[fd00::10]"), digits.clone()),
            (Some("fd00::10"), digits.clone()),
            (Some("digits.team-a"), digits.clone()),
            (Some("digits.team-a:8080"), digits.clone()),
            (Some("digits.team-a.svc"), digits.clone()),
            (Some("digits.team-a.svc.cluster.local"), digits.clone()),
            (
                Some("digits.team-a.svc.cluster.local.:8081"),
                digits.clone(),
            ),
            (Some("Digits.Team-A.SVC"), digits.clone()),
            (Some("digits"), digits.clone()),
            (Some("digits:8080"), digits),
            (Some("10.96.0.12"), Ok(ModelKey::new("team-b", "iris"))),
            (Some("iris.team-b"), Ok(ModelKey::new("team-b", "iris"))),
            (
                Some("headless.team-b.svc"),
                Ok(ModelKey::new("team-b", "headless")),
            ),
            (
                Some("iris"),
                Err(RouteError::Ambiguous {
                    name: "iris".into(),
                    namespaces: vec!["team-a".into(), "team-b".into()],
                }),
            ),
            (
                Some("iris:8080"),
                Err(RouteError::Ambiguous {
                    name: "iris".into(),
                    namespaces: vec!["team-a".into(), "team-b".into()],
                }),
            ),
            (None, Err(RouteError::NoHost)),
            (Some(""), Err(RouteError::NoHost)),
            (
                Some("10.96.0.99"),
                Err(RouteError::Unknown("10.96.0.99".into())),
            ),
            (
                Some("digits.team-b"),
                Err(RouteError::Unknown("digits.team-b".into())),
            ),
            (Some("nope"), Err(RouteError::Unknown("nope".into()))),
            // Not a Service's DNS name: a third label other than `svc`.
            (
                Some("digits.team-a.example.com"),
                Err(RouteError::Unknown("digits.team-a.example.com".into())),
            ),
            (
                Some("digits.team-a.pod"),
                Err(RouteError::Unknown("digits.team-a.pod".into())),
            ),
        ];
        for (host, want) in cases {
            assert_eq!(route(host, &index), want, "{host:?}");
        }
    }

    #[test]
    fn ports_are_stripped_only_where_they_are_ports() {
        for (authority, want) in [
            ("a.b:8080", "a.b"),
            ("a.b", "a.b"),
            ("[::1]:80", "::1"),
            ("::1", "::1"),
            ("10.0.0.1:1", "10.0.0.1"),
            ("a:b", "a:b"),
        ] {
            assert_eq!(strip_port(authority), want, "{authority}");
        }
    }

    #[test]
    fn messages_say_how_to_name_the_model() {
        let ambiguous = RouteError::Ambiguous {
            name: "iris".into(),
            namespaces: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            ambiguous.to_string(),
            "\"iris\" is a model in several namespaces (a, b): say <name>.<namespace>"
        );
        assert!(
            RouteError::Unknown("x".into())
                .to_string()
                .contains("\"x\"")
        );
    }

    #[test]
    fn the_index_counts_services_not_addresses() {
        let index = index();
        assert_eq!(index.len(), 4);
        assert!(!index.is_empty());
        assert!(ServiceIndex::default().is_empty());
    }
}
