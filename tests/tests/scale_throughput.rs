//! The autoscaler on real signals: a real `tractor serve` process, scraped by the cluster's Prometheus under
//! the labels its pod would have (a stand-in, so the test can pace the load on one server and read the
//! decision times), and the chart's operator in-cluster. A load step raises the replica count at the
//! first evaluation that sees it; a noisy but flat load inside the tolerance changes nothing; when the load
//! stops the count falls, but only once the scale-down window has passed since the last evaluation that
//! still asked for it (read from the status' timestamps, not from a stopwatch).
//!
//! `make bench-autoscale` runs this test longer and collects its figures: `TRACTOR_NOISE_SECS` sets the flat
//! phase (default 40 s; the measurement is 600), `TRACTOR_SCALE_CYCLES` the number of load steps
//! (default 1), and `TRACTOR_BENCH_OUT` a folder where each figure is appended to `autoscale.jsonl`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tractor_e2e::cluster::{DEFAULT_WAIT, TestNamespace, cluster, wait_for};
use tractor_e2e::operator::Operator;
use tractor_e2e::scale::{
    Evaluated, Load, ScrapeTargets, addr, apply_and_serve, autoscaled, condition,
    deployment_replicas, evaluated, event_count, events, pod_labels, pod_name, unix_now,
};
use tractor_e2e::serve::Serve;

/// Requests per second each replica should carry.
const TARGET: f64 = 5.0;
/// The load: four replicas' worth, so the right count is exactly 4 (ratio 1.0 at 4).
const RPS: f64 = 20.0;
/// The right count for that load.
const REPLICAS: i64 = 4;
/// The spec's tolerance (the default).
const TOLERANCE: f64 = 0.1;
/// Seconds between evaluations.
const INTERVAL: u64 = 5;
/// Scale-down stabilization window, seconds.
const DOWN_WINDOW: u64 = 30;
/// The operator's count of evaluations that changed the count.
const SCALED: &str = "tractor_operator_autoscaler_evaluations_total{result=\"scaled\"}";
/// The operator's event reason for a change of the count.
const SCALING: &str = "Scaling";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Appends one figure to `$TRACTOR_BENCH_OUT/autoscale.jsonl` (when set) and prints it.
fn figure(v: Value) -> Result<()> {
    eprintln!("MEASURED {v}");
    if let Some(dir) = std::env::var_os("TRACTOR_BENCH_OUT") {
        std::fs::create_dir_all(&dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&dir).join("autoscale.jsonl"))?;
        writeln!(f, "{v}")?;
    }
    Ok(())
}

/// Polls the status until `done` holds for the latest evaluation, keeping every distinct one seen.
fn watch(
    ns: &TestNamespace,
    timeout: Duration,
    what: &str,
    seen: &mut Vec<Evaluated>,
    mut done: impl FnMut(&Evaluated) -> bool,
) -> Result<Evaluated> {
    wait_for(timeout, what, || {
        let Some(e) = evaluated(ns, "digits")? else {
            return Ok(None);
        };
        if seen.last() != Some(&e) {
            seen.push(e.clone());
        }
        Ok(done(&e).then_some(e))
    })
}

#[test]
fn load_step_scales_up_noise_changes_nothing_and_scale_down_waits_for_the_window() -> Result<()> {
    let noise_secs = env_u64("TRACTOR_NOISE_SECS", 40);
    let cycles = env_u64("TRACTOR_SCALE_CYCLES", 1).max(1);
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("scale-rps")?;
    let serve = Serve::start("digits_mlp.onnx", "digits", &[])?;
    let _targets = ScrapeTargets::write(
        &ScrapeTargets::shared_dir(),
        &[(addr(&serve), pod_labels(ns.name(), &pod_name("digits", 0)))],
    )?;
    let op = Operator::start(cluster, ns.name())?;
    op.wait_ready()?;
    let md = autoscaled(
        &ns,
        "digits",
        json!({
            "minReplicas": 1,
            "maxReplicas": 8,
            "interval": format!("{INTERVAL}s"),
            "tolerance": TOLERANCE,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": DOWN_WINDOW}},
            "metrics": [{"type": "Throughput", "throughput": {"targetPerReplica": TARGET}}],
        }),
    );
    apply_and_serve(&ns, &md)?;

    // Idle but scraped: the autoscaler reads 0 requests/s and keeps the minimum.
    wait_for(DEFAULT_WAIT, "ScalingActive=True", || {
        Ok((condition(&ns, "digits", "ScalingActive")?["status"] == "True").then_some(()))
    })?;
    ensure!(evaluated(&ns, "digits")?.map(|e| e.desired) == Some(1));

    for cycle in 0..cycles {
        // The load step.
        let scaled_before = op.metric(SCALED)?;
        let load = Load::start(serve.model_url("/infer"), RPS, 0.0, Duration::from_secs(1))?;
        let step = unix_now();
        let mut seen = Vec::new();
        let rise = watch(
            &ns,
            DEFAULT_WAIT,
            "desiredReplicas above 1",
            &mut seen,
            |e| e.desired > 1,
        )?;
        let decided_after = load.started.elapsed();
        // The first evaluation whose reading is over the tolerance scales (no scale-up window): no status may
        // show such a reading with the count still at 1. (The margin covers the snapshot and the scaling
        // metric being two queries a scrape apart.)
        let missed: Vec<&Evaluated> = seen
            .iter()
            .filter(|evaluation| {
                evaluation.desired == 1
                    && evaluation
                        .rps
                        .is_some_and(|r| r > TARGET * (1.0 + TOLERANCE) * 1.2)
            })
            .collect();
        ensure!(
            missed.is_empty(),
            "evaluations saw the load and did not scale: {missed:?}"
        );
        let evaluations = seen.iter().filter(|e| e.at as f64 >= step.floor()).count();
        let full = watch(
            &ns,
            DEFAULT_WAIT,
            "desiredReplicas 4",
            &mut seen,
            |evaluation| evaluation.desired == REPLICAS,
        )?;
        wait_for(DEFAULT_WAIT, "the Deployment at 4", || {
            Ok((deployment_replicas(&ns, "digits")? == Some(REPLICAS)).then_some(()))
        })?;
        // 1 -> 4 is at most three scale-ups. More means a step was undone and redone: a reconcile that read
        // the status from before the last scale and wrote it back (the store lags the operator's own write).
        let scaled = op.metric(SCALED)? - scaled_before;
        ensure!(
            scaled <= (REPLICAS - 1) as f64,
            "{scaled} scale-ups to go from 1 to {REPLICAS}; statuses seen: {seen:?}"
        );
        figure(json!({
            "figure": "reaction",
            "cycle": cycle,
            "interval_s": INTERVAL,
            "scrape_s": 5,
            "step_to_decision_s": decided_after.as_secs_f64(),
            "step_to_decision_status_s": rise.last_scale.map(|t| t as f64 - step),
            "evaluations_until_decision": evaluations,
            "first_count": rise.desired,
            "step_to_full_s": full.last_scale.map(|t| t as f64 - step),
        }))?;
        let mdep = ns.kubectl_json(&["get", "mdep", "digits"])?;
        ensure!(
            mdep["status"]["metrics"]["requestsPerSecond"]
                .as_f64()
                .is_some_and(|r| r > RPS / 2.0),
            "snapshot: {}",
            mdep["status"]["metrics"]
        );
        drop(load);

        // Noisy but flat: ±5 % around four replicas' worth, swinging every 20 s. Inside the 10 % tolerance
        // nothing may move: not the count, not lastScaleTime, no Scaling event.
        let mut noisy = Load::start(
            serve.model_url("/infer"),
            RPS,
            0.05,
            Duration::from_secs(20),
        )?;
        let noise = if cycle == 0 { noise_secs } else { 0 };
        let before = evaluated(&ns, "digits")?.context("no evaluation")?;
        let events_before = event_count(&ns, "digits", SCALING)?;
        let flat_until = Instant::now() + Duration::from_secs(noise);
        let mut flat = Vec::new();
        watch(
            &ns,
            Duration::from_secs(noise + 60),
            "the end of the flat phase",
            &mut flat,
            |_| Instant::now() >= flat_until,
        )?;
        let moved: Vec<&Evaluated> = flat
            .iter()
            .filter(|e| e.desired != REPLICAS || e.last_scale != before.last_scale)
            .collect();
        let scale_events = event_count(&ns, "digits", SCALING)? - events_before;
        if noise > 0 {
            figure(json!({
                "figure": "noisy_flat",
                "seconds": noise,
                "rps": RPS,
                "swing": 0.05,
                "tolerance": TOLERANCE,
                "evaluations": flat.len(),
                "scale_changes": moved.len(),
                "scale_events": scale_events,
                "requests": noisy.sent(),
            }))?;
        }
        ensure!(
            moved.is_empty() && scale_events == 0,
            "a signal inside the tolerance moved the count: {moved:?}, {scale_events} Scaling events"
        );

        // Load stops. Evaluations soon read a load that asks for fewer replicas, and the window holds the
        // count; it falls only once no recommendation of 4 is left in the window. The last one was made at
        // most one interval before the stop, so the fall comes at least window - interval after it.
        noisy.stop();
        let stopped = unix_now();
        let mut down = Vec::new();
        let held = watch(
            &ns,
            DEFAULT_WAIT,
            "an evaluation asking for fewer replicas, held by the window",
            &mut down,
            |evaluation| {
                evaluation.at as f64 > stopped
                    // ceil(4 × ratio) ≤ 3: at most three replicas' worth, with a margin.
                    && evaluation.rps.is_some_and(|r| r < TARGET * (REPLICAS - 1) as f64 * 0.9)
            },
        )?;
        ensure!(
            held.desired == REPLICAS && held.message.contains("stabilized to 4 by the window"),
            "not held by the window: {held:?}"
        );
        let fell = watch(
            &ns,
            DEFAULT_WAIT + Duration::from_secs(DOWN_WINDOW),
            "desiredReplicas below 4",
            &mut down,
            |e| e.desired < REPLICAS,
        )?;
        let fell_at = fell
            .last_scale
            .context("a scale-down without lastScaleTime")?;
        // Whole seconds in the status: one second of slack.
        let earliest = stopped + (DOWN_WINDOW - INTERVAL) as f64 - 1.0;
        ensure!(
            fell_at as f64 >= earliest,
            "scaled down {:.1} s after the load stopped, inside the {DOWN_WINDOW} s window: {fell:?}",
            fell_at as f64 - stopped
        );
        figure(json!({
            "figure": "scale_down",
            "cycle": cycle,
            "window_s": DOWN_WINDOW,
            "stop_to_first_fall_s": fell_at as f64 - stopped,
        }))?;
        watch(
            &ns,
            DEFAULT_WAIT,
            "back to minReplicas",
            &mut down,
            |evaluation| evaluation.desired == 1,
        )?;
    }
    // Each change has its own message in `kubectl describe`: the way up and the way down are separate
    // Events, not repeats folded under the first change's note.
    let notes: Vec<String> = events(&ns, "digits", SCALING)?
        .iter()
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        notes.iter().any(|n| n.starts_with("replicas 1 -> "))
            && notes.iter().any(|n| n.contains(" -> 1: ")),
        "the Scaling events do not show both the scale-up and the scale-down: {notes:?}"
    );
    Ok(())
}
