//! Where the tests find things: the repository, the committed fixtures, the `tractor` binary under test and
//! the fixtures' Python.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `tests/fixtures`, the committed models and their test splits (`make_models.py`, `make_tabular_models.py`,
/// `make_fine_margins.py`).
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// The running test binary's profile folder: `<target>/debug` for `<target>/debug/deps/<test>`.
pub fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .context("test binary has no target dir")
}

/// The `tractor` binary under test: `$TRACTOR_BIN`, else the one next to the running test binary
/// (`<target>/debug/tractor`), which `scripts/test.sh` builds before the end-to-end tests.
pub fn tractor_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TRACTOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = target_profile_dir()?.join("tractor");
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: run `cargo build -p tractor` first, or set TRACTOR_BIN",
        bin.display()
    );
    Ok(bin)
}

/// The Python of the fixtures venv (`~/.cache/tractor/venv`, or `$TRACTOR_VENV`; `scripts/python-env.sh`).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("TRACTOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tractor/venv")
        });
    venv.join("bin/python")
}
