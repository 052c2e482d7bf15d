//! Running the JVM the app runtime would use: `java` from PATH (Java 17 on
//! these machines) and, where installed, other JDKs under /usr/lib/jvm.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every `java` to test against: the default one first.
pub fn javas() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("java")];
    if let Ok(dir) = std::fs::read_dir("/usr/lib/jvm") {
        let mut extra: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path().join("bin/java"))
            .filter(|p| p.exists() && !p.canonicalize().ok().is_some_and(|c| same_as_default(&c)))
            .collect();
        extra.sort();
        extra.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
        out.extend(extra);
    }
    out
}

fn same_as_default(p: &Path) -> bool {
    which("java")
        .and_then(|d| d.canonicalize().ok())
        .is_some_and(|d| d == p)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.exists())
    })
}

pub fn java_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java"))
}

/// Runs a single-file Java program from tests/java.
pub fn run(
    java: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(java);
    cmd.arg(java_dir().join(program)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {} failed: {e}", java.display()))
}
