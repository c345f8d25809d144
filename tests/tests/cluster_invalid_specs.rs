//! Every spec in `tests/specs/invalid/` is refused by the API server with the message its first line expects
//! (`# expect: <fragment>`), so bad specs fail at `kubectl apply`, not later in the operator.

use anyhow::{Context, Result, bail, ensure};
use tractor_e2e::cluster::{cluster, yaml_files};

/// The issue asks for at least this many invalid cases.
const MIN_CASES: usize = 10;

#[test]
fn every_invalid_spec_is_refused_with_its_message() -> Result<()> {
    let cluster = cluster()?;
    cluster.install_crd()?;
    let ns = cluster.namespace("invalid")?;
    let files = yaml_files("tests/specs/invalid")?;
    ensure!(
        files.len() >= MIN_CASES,
        "only {} invalid specs, want >= {MIN_CASES}",
        files.len()
    );
    let mut wrong = Vec::new();
    for path in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let fragment = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .with_context(|| {
                format!(
                    "{}: first line must be `# expect: <fragment>`",
                    path.display()
                )
            })?;
        let out = ns.kubectl_output(
            &[
                "apply".as_ref(),
                "--dry-run=server".as_ref(),
                "-f".as_ref(),
                path.as_os_str(),
            ],
            None,
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            wrong.push(format!(
                "{}: accepted, expected refusal with {fragment:?}",
                path.display()
            ));
        } else if !stderr.contains(fragment) {
            wrong.push(format!(
                "{}: refused without {fragment:?}: {}",
                path.display(),
                stderr.trim()
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{} of {} invalid specs misjudged:\n{}",
            wrong.len(),
            files.len(),
            wrong.join("\n")
        );
    }
    Ok(())
}
