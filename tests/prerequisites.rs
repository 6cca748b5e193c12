//! What the tests need outside Rust, checked in one place: files in the checkout, the Python
//! interpreter that runs the checkers in `tests/oracles/` and the PyPI packages they import.
//!
//! Included with `#[path]` by the integration tests (`tests/integration/support`) and the
//! mapping crates' tests, so every test names a missing prerequisite the same way, in one line:
//! `missing prerequisite: Python package 'factur-x' (…)`. A missing file always fails (the
//! checkout is broken). A missing Python package fails in CI (`CI=true`); locally the test
//! prints the same line as `SKIPPED: …` and returns, like a missing server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to install the Python checkers' packages, appended to every Python message.
pub const PYTHON_HINT: &str = "run .ci/run, or: python3 -m venv .venv && \
     .venv/bin/pip install -r tests/requirements.txt";

/// True when running in CI (`CI=true` or `CI=1`): missing prerequisites fail instead of skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The repository root: the nearest ancestor of the crate being tested that holds
/// `tests/prerequisites.rs` (the root crate or a mapping crate two levels down).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|p| p.join("tests/prerequisites.rs").is_file())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// A file in the checkout, by its path relative to the repository root; panics with one line
/// naming it when it is missing.
pub fn repo_file(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    if !path.exists() {
        panic!(
            "missing prerequisite: file {relative} (expected at {}; the repository holds every \
             fixture the tests read)",
            path.display()
        );
    }
    path
}

/// Reads a fixture file (relative to the repository root); one clear line when it is missing.
pub fn read_fixture(relative: &str) -> Vec<u8> {
    let path = repo_file(relative);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("missing prerequisite: file {relative} unreadable: {e}"))
}

/// The Python interpreter for the checkers: `$DREHKREUZ_TEST_PYTHON`, else the checkout's
/// `.venv/bin/python3` (made by `.ci/run`), else `python3` on the `PATH`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DREHKREUZ_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python3");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

/// A command running the test Python.
pub fn python_command() -> Command {
    Command::new(python())
}

/// The one-line message for a missing Python package, or `None` when every module imports.
/// `packages` pairs the PyPI name with the module to import, e.g. `("factur-x", "facturx")`.
pub fn missing_python_packages(packages: &[(&str, &str)]) -> Option<String> {
    let interpreter = python();
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, module)| {
            !python_command()
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(pypi, _)| *pypi)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let names: Vec<String> = missing.iter().map(|m| format!("'{m}'")).collect();
    let noun = if missing.len() == 1 {
        "Python package"
    } else {
        "Python packages"
    };
    Some(format!(
        "missing prerequisite: {noun} {} for {} ({PYTHON_HINT})",
        names.join(", "),
        interpreter.display()
    ))
}

/// True when every package imports. Otherwise panics in CI, and locally prints
/// `SKIPPED: missing prerequisite: …` and returns false (the caller skips).
pub fn python_packages_available(packages: &[(&str, &str)]) -> bool {
    match missing_python_packages(packages) {
        None => true,
        Some(line) if in_ci() => panic!("{line}"),
        Some(line) => {
            eprintln!("SKIPPED: {line}");
            false
        }
    }
}

/// Like [`python_packages_available`] for a checker that must always run (standard library
/// only): panics with one line when the interpreter itself does not start.
pub fn require_python() {
    let interpreter = python();
    let ok = python_command()
        .args([
            "-c",
            "import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        panic!(
            "missing prerequisite: Python ≥ 3.9 at {} (install python3, or set \
             DREHKREUZ_TEST_PYTHON)",
            interpreter.display()
        );
    }
}

/// Runs `tests/oracles/<script>` with the test Python; returns (success, stdout, stderr).
/// Panics with one line when the script is missing or the interpreter does not start.
pub fn run_oracle(
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &Path)],
) -> (bool, String, String) {
    let path = repo_file(&format!("tests/oracles/{script}"));
    let mut command = python_command();
    command.arg(&path).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "missing prerequisite: Python interpreter {} ({e})",
            python().display()
        )
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
