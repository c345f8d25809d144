//! A Prometheus HTTP API client (instant queries, a timeout on every call, an optional `Authorization`
//! header) and the PromQL the autoscaler and canary analysis run, derived from the server's metrics contract
//! ([`tractor_api::metrics`], whose names and label keys these queries spell).
//!
//! Every way a query can fail to give one finite number is an error, so callers can hold instead of acting
//! on a guess: unreachable, timed out, an HTTP or API error, an empty result, or NaN.
//!
//! Ours, not `prometheus-http-query`: the operator runs instant queries only, and needs exactly this error
//! taxonomy (unreachable apart from empty apart from NaN) to decide between holding and acting.

use std::time::Duration;

use serde_json::Value;
use tractor_api::metrics::{
    ACCURACY, CODE, CORRECT, DRIFT_WINDOW_ROWS, FEATURE, FEEDBACK_WINDOW, INPUT_DRIFT, MODEL,
    MODEL_INFO, PREDICTION_DRIFT, PREDICTIONS_LABELLED, PROCESS_CPU, REQUEST_DURATION,
    REQUESTS_TOTAL, RESULT, REVISION,
};

/// Codes that count as failed requests: server errors and load shedding, over REST and gRPC. Client errors
/// (400, 404, 413) are the caller's, not the model's.
const ERROR_CODES: &str =
    "5..|429|INTERNAL|UNAVAILABLE|UNKNOWN|DEADLINE_EXCEEDED|DATA_LOSS|RESOURCE_EXHAUSTED";

/// Why a query gave no usable value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum QueryError {
    /// No connection (refused, DNS, TLS).
    #[error("Prometheus at {url} is unreachable: {detail}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// The transport's words.
        detail: String,
    },
    /// No answer within the timeout.
    #[error("Prometheus at {url} did not answer within {secs} s")]
    Timeout {
        /// Base URL.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// A non-success HTTP status without an API error body.
    #[error("Prometheus answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// `{"status":"error"}`.
    #[error("Prometheus refused the query ({error_type}): {error}")]
    Api {
        /// `errorType`.
        error_type: String,
        /// `error`.
        error: String,
    },
    /// The body was not the API's JSON.
    #[error("Prometheus answered something that is not its API's JSON: {0}")]
    Decode(String),
    /// The query selected no series.
    #[error("no data for {0}")]
    Empty(String),
    /// The value is NaN or infinite.
    #[error("{query} is not a number ({value})")]
    NotANumber {
        /// The query.
        query: String,
        /// The raw value.
        value: String,
    },
}

impl QueryError {
    /// A bounded label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            QueryError::Unreachable { .. } => "unreachable",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Status { .. } | QueryError::Api { .. } => "error",
            QueryError::Decode(_) => "decode",
            QueryError::Empty(_) => "empty",
            QueryError::NotANumber { .. } => "nan",
        }
    }

    /// True when Prometheus itself could not be read (as opposed to a query that found no data).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            QueryError::Unreachable { .. }
                | QueryError::Timeout { .. }
                | QueryError::Status { .. }
                | QueryError::Decode(_)
        )
    }
}

/// An HTTP client for Prometheus servers; one per operator, shared by every ModelDeployment.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
}

/// One server and how to authenticate to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Value of the `Authorization` header, read from a Secret.
    pub authorization: Option<String>,
}

impl Client {
    /// A client whose every query gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .user_agent("tractor-operator")
            .build()?;
        Ok(Self { http, timeout })
    }

    /// Runs an instant query and returns its single finite value.
    pub async fn value(&self, server: &Server, query: &str) -> Result<f64, QueryError> {
        let (status, body) = self.query(server, query).await?;
        parse_value(status, &body, query)
    }

    /// Runs an instant query and returns each series' value of `label` with its finite value.
    pub async fn values_by(
        &self,
        server: &Server,
        query: &str,
        label: &str,
    ) -> Result<Vec<(String, f64)>, QueryError> {
        let (status, body) = self.query(server, query).await?;
        parse_vector(status, &body, query, label)
    }

    /// The status and body of an instant query's answer.
    async fn query(&self, server: &Server, query: &str) -> Result<(u16, String), QueryError> {
        let base = server.url.trim_end_matches('/');
        let endpoint = format!("{base}/api/v1/query");
        let url = reqwest::Url::parse_with_params(&endpoint, &[("query", query)]).map_err(|e| {
            QueryError::Unreachable {
                url: server.url.clone(),
                detail: format!("bad URL: {e}"),
            }
        })?;
        let mut request = self.http.get(url);
        if let Some(auth) = &server.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.trim());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(server, &e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport(server, &e))?;
        Ok((status.as_u16(), body))
    }

    fn transport(&self, server: &Server, e: &reqwest::Error) -> QueryError {
        if e.is_timeout() {
            QueryError::Timeout {
                url: server.url.clone(),
                secs: self.timeout.as_secs().max(1),
            }
        } else {
            // The chain names the cause (connection refused, DNS); the top level only says "error sending".
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                detail = format!("{detail}: {s}");
                source = s.source();
            }
            QueryError::Unreachable {
                url: server.url.clone(),
                detail,
            }
        }
    }
}

/// The `data` of a successful API answer.
fn parse_data(status: u16, body: &str) -> Result<Value, QueryError> {
    let answer: Value = match serde_json::from_str(body) {
        Ok(answer) => answer,
        Err(_) if !(200..300).contains(&status) => {
            return Err(QueryError::Status {
                status,
                body: body.chars().take(200).collect(),
            });
        }
        Err(e) => return Err(QueryError::Decode(e.to_string())),
    };
    if answer["status"] == "error" {
        return Err(QueryError::Api {
            error_type: answer["errorType"].as_str().unwrap_or("unknown").to_owned(),
            error: answer["error"].as_str().unwrap_or_default().to_owned(),
        });
    }
    if answer["status"] != "success" {
        return Err(QueryError::Decode(format!(
            "status {:?}, HTTP {status}",
            answer["status"]
        )));
    }
    Ok(answer["data"].clone())
}

/// A sample's value, parsed; NaN and infinities are an error.
fn sample(raw: &Value, query: &str) -> Result<f64, QueryError> {
    let text = raw
        .as_str()
        .ok_or_else(|| QueryError::Decode(format!("sample value {raw} is not a string")))?;
    // Prometheus writes NaN, +Inf and -Inf as such; Rust parses them, and they are no basis for a decision.
    let value: f64 = text
        .parse()
        .map_err(|_| QueryError::Decode(format!("sample value {text:?}")))?;
    if !value.is_finite() {
        return Err(QueryError::NotANumber {
            query: query.to_owned(),
            value: text.to_owned(),
        });
    }
    Ok(value)
}

/// Reads each series' `label` and finite value out of an instant-query vector answer, sorted by label. Series
/// whose value is not finite are left out; none left is [`QueryError::Empty`].
pub fn parse_vector(
    status: u16,
    body: &str,
    query: &str,
    label: &str,
) -> Result<Vec<(String, f64)>, QueryError> {
    let data = parse_data(status, body)?;
    if data["resultType"].as_str() != Some("vector") {
        return Err(QueryError::Decode(format!(
            "result type {:?}, expected vector",
            data["resultType"]
        )));
    }
    let result = data["result"]
        .as_array()
        .ok_or_else(|| QueryError::Decode("vector without result".into()))?;
    let mut values: Vec<(String, f64)> = result
        .iter()
        .filter_map(|series| {
            let name = series["metric"][label].as_str()?.to_owned();
            let value = sample(&series["value"][1], query).ok()?;
            Some((name, value))
        })
        .collect();
    if values.is_empty() {
        return Err(QueryError::Empty(query.to_owned()));
    }
    values.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(values)
}

/// Reads one finite value out of an instant-query answer (vector of one sample, or a scalar).
pub fn parse_value(status: u16, body: &str, query: &str) -> Result<f64, QueryError> {
    let data = parse_data(status, body)?;
    let raw = match data["resultType"].as_str() {
        Some("vector") => {
            let result = data["result"]
                .as_array()
                .ok_or_else(|| QueryError::Decode("vector without result".into()))?;
            match result.as_slice() {
                [] => return Err(QueryError::Empty(query.to_owned())),
                [one] => one["value"][1].clone(),
                many => {
                    return Err(QueryError::Decode(format!(
                        "{} series where one was expected: aggregate the query",
                        many.len()
                    )));
                }
            }
        }
        Some("scalar") => data["result"][1].clone(),
        other => {
            return Err(QueryError::Decode(format!(
                "result type {other:?}, expected vector or scalar"
            )));
        }
    };
    sample(&raw, query)
}

/// Which serving pods a query covers: all of a ModelDeployment's, or one Deployment's (stable or canary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Namespace of the pods (Prometheus' `namespace` label).
    pub namespace: String,
    /// Served model name (the server's `model` label): the ModelDeployment's name.
    pub model: String,
    /// Name of one Deployment whose pods alone count (`pod` = `<deployment>-<hash>-<suffix>`).
    pub deployment: Option<String>,
    /// The model revision whose predictions count, for signals that follow a prediction wherever its
    /// feedback lands (accuracy from receipts); `None` for none.
    pub revision: Option<String>,
}

impl Selector {
    fn matchers(&self, extra: &str) -> String {
        let mut m = format!(
            "namespace=\"{}\",{MODEL}=\"{}\"",
            escape(&self.namespace),
            escape(&self.model)
        );
        if let Some(d) = &self.deployment {
            // A Deployment's pods are named <deployment>-<pod-template-hash>-<5 chars>; the anchored regex
            // keeps `m` from matching `m-canary`'s pods.
            m.push_str(&format!(",pod=~\"{}-[a-z0-9]+-[a-z0-9]+\"", escape(d)));
        }
        if !extra.is_empty() {
            m.push(',');
            m.push_str(extra);
        }
        format!("{{{m}}}")
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A rate window in PromQL duration syntax (whole seconds).
pub fn window(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// 0 while Prometheus scrapes the selected servers, nothing otherwise: the fallback that makes an idle model
/// (whose request series do not exist before its first request) read as 0 rather than as no data.
fn idle(sel: &Selector) -> String {
    format!("sum({MODEL_INFO}{}) * 0", sel.matchers(""))
}

/// The `quantile` latency in seconds over `w`; 0 when no request came in (an idle model is not slow).
pub fn latency(sel: &Selector, quantile: f64, w: &str) -> String {
    let all = sel.matchers("");
    format!(
        "histogram_quantile({quantile}, sum by (le) (rate({REQUEST_DURATION}_bucket{all}[{w}]))) >= 0 \
         or sum(rate({REQUEST_DURATION}_count{all}[{w}])) == 0 or {}",
        idle(sel)
    )
}

/// Requests per second over `w`, all selected pods together.
pub fn requests_per_second(sel: &Selector, w: &str) -> String {
    format!(
        "sum(rate({REQUESTS_TOTAL}{}[{w}])) or {}",
        sel.matchers(""),
        idle(sel)
    )
}

/// Requests answered over `w`, all selected pods together; 0 while Prometheus scrapes them and none came in.
/// No value (an error) when no selected server is scraped: no evidence of idleness.
pub fn requests_over(sel: &Selector, w: &str) -> String {
    format!(
        "sum(increase({REQUESTS_TOTAL}{}[{w}])) or {}",
        sel.matchers(""),
        idle(sel)
    )
}

/// CPU cores the selected servers use together, averaged over `w`. No idle fallback: the counter exists from
/// a server's first scrape, so no value means no server scraped twice yet, and the autoscaler holds.
pub fn cpu_seconds_per_second(sel: &Selector, w: &str) -> String {
    format!("sum(rate({PROCESS_CPU}{}[{w}]))", sel.matchers(""))
}

/// Share of failed requests over `w`; 0 when no request came in.
pub fn error_rate(sel: &Selector, w: &str) -> String {
    let all = sel.matchers("");
    let failed = sel.matchers(&format!("{CODE}=~\"{ERROR_CODES}\""));
    format!(
        "((sum(rate({REQUESTS_TOTAL}{failed}[{w}])) or vector(0)) / sum(rate({REQUESTS_TOTAL}{all}[{w}]))) >= 0 \
         or sum(rate({REQUESTS_TOTAL}{all}[{w}])) == 0 or {}",
        idle(sel)
    )
}

/// Online accuracy; NaN or no data (so an error) until some feedback arrived. With a revision: that revision's
/// labelled predictions, summed over every replica that scored them (receipts let any replica score any
/// prediction, so the replica does not say whose prediction it was). Otherwise, and while no replica
/// exports those counters yet (servers not told their revision), the selected pods' rolling-window gauges,
/// each weighted by the labelled predictions it has seen.
pub fn accuracy(sel: &Selector) -> String {
    let (by_revision, windows) = feedback_sources(sel);
    match by_revision {
        Some(r) => format!(
            "(sum({PREDICTIONS_LABELLED}{{{r},{RESULT}=\"{CORRECT}\"}}) or sum({PREDICTIONS_LABELLED}{{{r}}}) * 0) \
             / sum({PREDICTIONS_LABELLED}{{{r}}}) or sum({ACCURACY}{windows} * {FEEDBACK_WINDOW}{windows}) \
             / sum({FEEDBACK_WINDOW}{windows})"
        ),
        None => format!(
            "sum({ACCURACY}{windows} * {FEEDBACK_WINDOW}{windows}) / sum({FEEDBACK_WINDOW}{windows})"
        ),
    }
}

/// The labelled predictions [`accuracy`] stands on, from the same sources in the same order: the revision's
/// counters, else the pods' window sizes.
pub fn labelled(sel: &Selector) -> String {
    let (by_revision, windows) = feedback_sources(sel);
    match by_revision {
        Some(r) => format!("sum({PREDICTIONS_LABELLED}{{{r}}}) or sum({FEEDBACK_WINDOW}{windows})"),
        None => format!("sum({FEEDBACK_WINDOW}{windows})"),
    }
}

/// The matchers of one revision's drift series: every pod that serves it, stable or canary.
fn drift_matchers(sel: &Selector) -> String {
    let revision = sel
        .revision
        .as_ref()
        .map(|r| format!("{REVISION}=\"{}\"", escape(r)))
        .unwrap_or_default();
    sel.matchers(&revision)
}

/// Rows the selected pods' drift windows hold, all together; no data while no pod has a drift reference.
pub fn drift_rows(sel: &Selector) -> String {
    format!("sum({DRIFT_WINDOW_ROWS}{})", drift_matchers(sel))
}

/// Each feature's drift score, the pods' scores weighted by the rows each window holds (a pod's score over
/// few rows counts little), one series per `feature`.
pub fn input_drift(sel: &Selector) -> String {
    let m = drift_matchers(sel);
    format!(
        "sum by ({FEATURE}) ({INPUT_DRIFT}{m} * ignoring({FEATURE}) group_left {DRIFT_WINDOW_ROWS}{m}) \
         / ignoring({FEATURE}) group_left sum({DRIFT_WINDOW_ROWS}{m})"
    )
}

/// The predictions' drift score, weighted like [`input_drift`].
pub fn prediction_drift(sel: &Selector) -> String {
    let m = drift_matchers(sel);
    format!("sum({PREDICTION_DRIFT}{m} * {DRIFT_WINDOW_ROWS}{m}) / sum({DRIFT_WINDOW_ROWS}{m})")
}

/// The matchers of a revision's labelled-prediction counters (without braces), if a revision is selected,
/// and the selected pods' matchers for their window gauges.
fn feedback_sources(sel: &Selector) -> (Option<String>, String) {
    let by_revision = sel.revision.as_ref().map(|r| {
        format!(
            "namespace=\"{}\",{MODEL}=\"{}\",{REVISION}=\"{}\"",
            escape(&sel.namespace),
            escape(&sel.model),
            escape(r)
        )
    });
    (by_revision, sel.matchers(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_by_label_sorted_without_non_finite_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"feature":"x[2]"},"value":[1,"0.5"]},
            {"metric":{"feature":"x[0]"},"value":[1,"0.25"]},
            {"metric":{"feature":"x[1]"},"value":[1,"NaN"]},
            {"metric":{},"value":[1,"7"]}]}}"#;
        assert_eq!(
            parse_vector(200, body, "q", "feature"),
            Ok(vec![("x[0]".to_owned(), 0.25), ("x[2]".to_owned(), 0.5)])
        );
        let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            parse_vector(200, none, "q", "feature").map_err(|e| e.category()),
            Err("empty")
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(
            parse_vector(200, scalar, "q", "feature").map_err(|e| e.category()),
            Err("decode")
        );
    }

    #[test]
    fn drift_queries_select_one_revision_and_weigh_pods_by_rows() {
        let sel = Selector {
            namespace: "ns".into(),
            model: "m".into(),
            deployment: None,
            revision: Some("r1".into()),
        };
        let m = r#"{namespace="ns",model="m",revision="r1"}"#;
        assert_eq!(
            drift_rows(&sel),
            format!("sum(tractor_model_drift_window_rows{m})")
        );
        assert_eq!(
            input_drift(&sel),
            format!(
                "sum by (feature) (tractor_model_input_drift{m} * ignoring(feature) group_left \
                 tractor_model_drift_window_rows{m}) / ignoring(feature) group_left \
                 sum(tractor_model_drift_window_rows{m})"
            )
        );
        assert_eq!(
            prediction_drift(&sel),
            format!(
                "sum(tractor_model_prediction_drift{m} * tractor_model_drift_window_rows{m}) / \
                 sum(tractor_model_drift_window_rows{m})"
            )
        );
    }

    #[test]
    fn values_and_every_way_to_have_none() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795763795.586,"12.5"]}]}}"#;
        assert_eq!(parse_value(200, ok, "q"), Ok(12.5));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1795763795.586,"3"]}}"#;
        assert_eq!(parse_value(200, scalar, "q"), Ok(3.0));
        let cases = [
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "empty",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                "nan",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
                "nan",
            ),
            (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
                "error",
            ),
            (503, "Service Unavailable", "error"),
            (200, "<html>", "decode"),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#,
                "decode",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "decode",
            ),
        ];
        for (status, body, want) in cases {
            let got = parse_value(status, body, "q");
            assert_eq!(
                got.as_ref().map_err(QueryError::category),
                Err(want),
                "{body}"
            );
        }
    }

    #[test]
    fn queries_select_the_model_and_optionally_one_deployment() {
        let all = Selector {
            namespace: "ns".into(),
            model: "digits".into(),
            deployment: None,
            revision: None,
        };
        assert_eq!(
            requests_per_second(&all, "20s"),
            r#"sum(rate(tractor_inference_requests_total{namespace="ns",model="digits"}[20s])) or sum(tractor_model_info{namespace="ns",model="digits"}) * 0"#
        );
        let canary = Selector {
            deployment: Some("digits-canary".into()),
            ..all.clone()
        };
        let q = latency(&canary, 0.95, "1m");
        assert!(q.starts_with("histogram_quantile(0.95, sum by (le) (rate(tractor_inference_request_duration_seconds_bucket{namespace=\"ns\",model=\"digits\",pod=~\"digits-canary-[a-z0-9]+-[a-z0-9]+\"}[1m])))"), "{q}");
        assert!(error_rate(&all, "1m").contains(r#"code=~"5..|429|"#));
        assert_eq!(window(Duration::from_millis(500)), "1s");
    }

    /// A revision's accuracy comes from the confusion counters of every replica, whatever pod scored it; the
    /// pods' window gauges stand in where no counter exists.
    #[test]
    fn accuracy_is_per_revision_with_the_gauges_as_fallback() {
        let pods = Selector {
            namespace: "ns".into(),
            model: "digits".into(),
            deployment: Some("digits-canary".into()),
            revision: None,
        };
        let windows = r#"sum(tractor_model_accuracy{namespace="ns",model="digits",pod=~"digits-canary-[a-z0-9]+-[a-z0-9]+"} * tractor_model_feedback_window{namespace="ns",model="digits",pod=~"digits-canary-[a-z0-9]+-[a-z0-9]+"}) / sum(tractor_model_feedback_window{namespace="ns",model="digits",pod=~"digits-canary-[a-z0-9]+-[a-z0-9]+"})"#;
        assert_eq!(accuracy(&pods), windows);
        let revision = Selector {
            revision: Some("3f9a1c0b7e".into()),
            ..pods.clone()
        };
        let r = r#"namespace="ns",model="digits",revision="3f9a1c0b7e""#;
        assert_eq!(
            accuracy(&revision),
            format!(
                "(sum(tractor_model_predictions_labelled_total{{{r},result=\"correct\"}}) or sum(tractor_model_predictions_labelled_total{{{r}}}) * 0) / sum(tractor_model_predictions_labelled_total{{{r}}}) or {windows}"
            )
        );
        let window_sizes = r#"sum(tractor_model_feedback_window{namespace="ns",model="digits",pod=~"digits-canary-[a-z0-9]+-[a-z0-9]+"})"#;
        assert_eq!(
            labelled(&revision),
            format!("sum(tractor_model_predictions_labelled_total{{{r}}}) or {window_sizes}")
        );
        assert_eq!(labelled(&pods), window_sizes);
    }
}
