//! Progress of `tractor optimize`: a spinner with the current step on a terminal (indicatif), one JSON object per
//! line on stderr otherwise, so a Job's log is machine-readable (`{"progress":"candidate","detail":"Int8",...}`).

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

struct Progress {
    start: Instant,
    bar: Option<ProgressBar>,
}

fn progress() -> &'static Progress {
    static PROGRESS: OnceLock<Progress> = OnceLock::new();
    PROGRESS.get_or_init(|| {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} [{elapsed}] {prefix:>10} {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            start: Instant::now(),
            bar,
        }
    })
}

/// One step begins: `stage` is a fixed word (fetch, load, dataset, prune, candidate, upload), `detail` says on what.
pub fn step(stage: &str, detail: &str) {
    let p = progress();
    match &p.bar {
        Some(bar) => {
            bar.set_prefix(stage.to_owned());
            bar.set_message(detail.to_owned());
        }
        None => {
            let line = serde_json::json!({
                "progress": stage,
                "detail": detail,
                "elapsedMillis": p.start.elapsed().as_millis() as u64,
            });
            // Progress is best effort: a closed stderr must not fail the optimization.
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// The run is over: clear the spinner so the terminal shows only the result.
pub fn finish() {
    if let Some(bar) = &progress().bar {
        bar.finish_and_clear();
    }
}
