//! CA bundles on a developer's machine: `certpin validate --ca` judges one,
//! `certpin settings --ca` turns bundles into the runtime's CACertificates
//! (one certificate per file, split into --ca-dir when a bundle holds more).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::UsageError;
use crate::ca::{self, CaCertificate};

/// One certificate of a bundle, as the CLI reports it.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CaReportRow {
    pub subject: String,
    pub sha256_fingerprint: String,
    pub not_before: String,
    pub not_after: String,
    pub warnings: Vec<String>,
}

/// The verdict on one bundle.
#[derive(Serialize, Debug, Clone)]
pub struct CaReport {
    pub file: String,
    pub valid: bool,
    pub reason: Option<&'static str>,
    pub message: String,
    pub certificates: Vec<CaReportRow>,
}

/// Judges a bundle; also returns its certificates when it is valid.
pub fn report(file: &str, data: &[u8]) -> (CaReport, Vec<CaCertificate>) {
    let now = chrono::Utc::now();
    match ca::parse_bundle(data) {
        Ok(certs) => {
            let rows = certs
                .iter()
                .map(|c| CaReportRow {
                    subject: c.subject.clone(),
                    sha256_fingerprint: c.sha256_fingerprint.clone(),
                    not_before: c.not_before.to_rfc3339(),
                    not_after: c.not_after.to_rfc3339(),
                    warnings: c.warnings(now),
                })
                .collect();
            let report = CaReport {
                file: file.into(),
                valid: true,
                reason: None,
                message: format!("valid: {} CA certificate(s)", certs.len()),
                certificates: rows,
            };
            (report, certs)
        }
        Err(e) => (
            CaReport {
                file: file.into(),
                valid: false,
                reason: Some(e.reason()),
                message: e.to_string(),
                certificates: Vec::new(),
            },
            Vec::new(),
        ),
    }
}

pub fn print_report(r: &CaReport) {
    match r.reason {
        None => println!("{}: {}", r.file, r.message),
        Some(code) => println!("{}: invalid ({code}): {}", r.file, r.message),
    }
    for c in &r.certificates {
        println!("  subject:      {}", c.subject);
        println!("  sha256:       {}", c.sha256_fingerprint);
        println!("  not before:   {}", c.not_before);
        println!("  not after:    {}", c.not_after);
        for w in &c.warnings {
            println!("  warning:      {w}");
        }
    }
}

/// Whether a file is already what the runtime reads: one PEM certificate
/// and nothing else.
fn single_pem(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    text.matches("-----BEGIN ").count() == 1 && text.contains("-----BEGIN CERTIFICATE-----")
}

/// The CACertificates paths for these bundles: a file that holds one PEM
/// certificate is used where it is; the certificates of any other bundle
/// are written one per file to `dir`. Each certificate once.
pub fn paths(
    bundles: &[(PathBuf, Vec<u8>, Vec<CaCertificate>)],
    dir: Option<&Path>,
) -> Result<Vec<String>, UsageError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (file, data, certs) in bundles {
        let fresh: Vec<&CaCertificate> = certs
            .iter()
            .filter(|c| !seen.contains(&c.sha256_fingerprint.as_str()))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        if certs.len() == 1 && single_pem(data) {
            out.push(file.display().to_string());
        } else {
            let Some(dir) = dir else {
                return Err(UsageError(format!(
                    "{} holds {} certificate(s) in a form the runtime does not read (it reads one PEM \
                     certificate per file): give --ca-dir DIR to write them there one per file",
                    file.display(),
                    certs.len()
                )));
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
            for c in &fresh {
                let path = dir.join(c.file_name());
                std::fs::write(&path, c.pem())
                    .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
                out.push(path.display().to_string());
            }
        }
        seen.extend(certs.iter().map(|c| c.sha256_fingerprint.as_str()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str) -> (PathBuf, Vec<u8>, Vec<CaCertificate>) {
        let path = PathBuf::from(format!(
            "{}/tests/fixtures/ca/{name}",
            env!("CARGO_MANIFEST_DIR")
        ));
        let data = std::fs::read(&path).expect("a fixture");
        let certs = ca::parse_bundle(&data).expect("a bundle");
        (path, data, certs)
    }

    #[test]
    fn single_certificates_stay_bundles_are_split_and_each_certificate_is_listed_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = bundle("partner-root.crt");
        let both = bundle("partner-bundle.pem");
        let der = bundle("partner-root.der");
        let out =
            paths(&[root.clone(), both.clone(), der.clone()], Some(dir.path())).expect("paths");
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], root.0.display().to_string());
        let written = std::fs::read(&out[1]).expect("the intermediate, written");
        assert_eq!(ca::parse_bundle(&written).expect("one").len(), 1);
        assert!(paths(&[both], None).is_err(), "a bundle needs --ca-dir");
    }
}
