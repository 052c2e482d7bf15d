//! Step 2: decode and judge each certificate (through the decode cache), and
//! check that the pins can be rendered. Every failure has its own reason.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::operator::decoding::DecodeCache;
use crate::operator::reconcile::names;
use crate::operator::reconcile::observe::{Inputs, Material};
use crate::operator::reconcile::reason::Reason as R;
use crate::pkcs12::{self, Decoded, Policy, Reason, Warning, WarningKind};
use crate::resource::{
    CaCertificateStatus, CertificateSpec, CertificateStatus, ClientCertificateSet,
};
use crate::settings::{CertificateFile, render};

/// A certificate that passed.
pub struct ValidCertificate {
    pub name: String,
    /// The decoded file; `None` for a certificate known from the earlier
    /// rendering (see `known`), whose encoding is reused.
    pub decoded: Option<Arc<Decoded>>,
    /// The end of the leaf certificate's validity.
    pub not_after: DateTime<Utc>,
    /// What the decode depended on (content and password), for the input hash.
    pub input_key: [u8; 32],
    pub pins: Vec<String>,
}

/// The first problem, for the Ready condition and the Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: crate::operator::reconcile::reason::Reason,
    pub message: String,
}

pub struct Validation {
    pub rows: Vec<CertificateStatus>,
    /// One row per CA certificate (or refused CA bundle).
    pub ca_rows: Vec<CaCertificateStatus>,
    /// All certificates, when every one (and every CA bundle) passed and
    /// the settings can be rendered.
    pub valid: Option<Vec<ValidCertificate>>,
    /// The CA certificates, in order (meaningful when `valid` is).
    pub cas: Vec<super::trust::ValidCa>,
    /// The CA certificates' warnings, each `entry: kind: detail`.
    pub ca_warnings: Vec<String>,
    /// The certificates were known from the earlier rendering, not decoded.
    pub known: bool,
    pub failure: Option<Failure>,
    /// Each valid certificate's warnings, by certificate name.
    pub warnings: Vec<(String, Warning)>,
}

pub(super) fn time(
    t: DateTime<Utc>,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// A row of facts; its path is known once the file is rendered.
fn row_with_facts(name: &str, d: &Decoded) -> CertificateStatus {
    let f = &d.facts;
    CertificateStatus {
        name: name.into(),
        path: None,
        subject: Some(f.subject.clone()),
        issuer: Some(f.issuer.clone()),
        serial: Some(f.serial.clone()),
        sha256_fingerprint: Some(f.sha256_fingerprint.clone()),
        key_algorithm: Some(if f.key_algorithm == "RSA" {
            format!("RSA {}", f.key_size)
        } else {
            f.key_algorithm.clone()
        }),
        not_before: time(f.not_before),
        not_after: time(f.not_after),
        chain_length: Some(f.chain_length as i32),
        input_encryption: Some(f.encryption.clone()),
        state: "Valid".into(),
        message: None,
        warnings: Vec::new(),
    }
}

/// `earlier`: certpin's own rendered Secret, when the earlier validation
/// may be used (see `known`).
pub async fn validate(
    set: &ClientCertificateSet,
    inputs: &Inputs,
    earlier: Option<&k8s_openapi::api::core::v1::Secret>,
    cache: &DecodeCache,
    now: DateTime<Utc>,
) -> Validation {
    let policy = Policy {
        now,
        warn_within: chrono::Duration::days(i64::from(set.spec.expiry_warning_days.max(0))),
        // Every file is re-encoded, so what the JVM would refuse as it is
        // still reaches the app in a form it loads.
        jvm_strict: false,
    };
    let trust = super::trust::check(
        &set.spec.ca_certificates,
        &inputs.ca_materials,
        now,
        policy.warn_within,
    );
    let mut rows = Vec::new();
    let mut valid = Vec::new();
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let known = super::known::known(set, inputs, earlier, &trust.valid, now, policy.warn_within);
    let is_known = known.is_some();
    let to_decode = match known {
        Some(k) => {
            (rows, valid, warnings) = (k.rows, k.valid, k.warnings);
            &[][..]
        }
        None => &set.spec.certificates[..],
    };
    for (spec, material) in to_decode.iter().zip(&inputs.materials) {
        let (row, checked) = check(spec, material, cache, &policy).await;
        rows.push(row);
        match checked {
            Ok((cert, w)) => {
                warnings.extend(w.into_iter().map(|w| (spec.name.clone(), w)));
                valid.push(cert);
            }
            Err(f) => failures.push(f),
        }
    }
    let (kind, name) = set.spec.app.target();
    if !names::is_dns_subdomain(name) {
        failures.push(Failure {
            reason: R::InvalidName,
            message: format!("{name:?} is not a {kind} name (a DNS subdomain)"),
        });
    }
    failures.extend(pin_failures(set));
    failures.extend(trust.failures);
    let failure = failures.into_iter().next();
    let valid = (failure.is_none() && valid.len() == set.spec.certificates.len()).then_some(valid);
    Validation {
        rows,
        ca_rows: trust.rows,
        valid,
        cas: trust.valid,
        ca_warnings: trust.warnings,
        known: is_known,
        failure,
        warnings,
    }
}

type Checked = Result<(ValidCertificate, Vec<Warning>), Failure>;

/// One certificate: its status row, and the certificate with its warnings
/// or why it is refused.
async fn check(
    spec: &CertificateSpec,
    material: &Material,
    cache: &DecodeCache,
    policy: &Policy,
) -> (CertificateStatus, Checked) {
    let (decoded, input_key) = match material {
        Material::Missing { reason, message } => {
            let row = CertificateStatus {
                name: spec.name.clone(),
                state: reason.name(),
                message: Some(message.clone()),
                ..Default::default()
            };
            let failure = Failure {
                reason: *reason,
                message: format!("{}: {message}", spec.name),
            };
            return (row, Err(failure));
        }
        Material::Invalid { message } => {
            let row = CertificateStatus {
                name: spec.name.clone(),
                state: R::InvalidName.name(),
                message: Some(message.clone()),
                ..Default::default()
            };
            let failure = Failure {
                reason: R::InvalidName,
                message: format!("{}: {message}", spec.name),
            };
            return (row, Err(failure));
        }
        Material::Pkcs12 { data, password } => decode_pkcs12(cache, data, password).await,
        Material::Pem { crt, key } => {
            let (result, k) = cache.decode_pem(crt, key).await;
            (result.map(|d| (d, None)), k)
        }
    };
    let judged = decoded.and_then(|(d, extra)| {
        pkcs12::judge(&d, policy).map(|mut w| {
            w.extend(extra);
            (d, w)
        })
    });
    match judged {
        Ok((d, w)) => {
            let mut row = row_with_facts(&spec.name, &d);
            row.warnings = w.iter().map(Warning::to_string).collect();
            let cert = ValidCertificate {
                name: spec.name.clone(),
                not_after: d.facts.not_after,
                decoded: Some(d),
                input_key,
                pins: spec.pin_to.clone(),
            };
            (row, Ok((cert, w)))
        }
        Err(problem) => {
            let mut row = match material {
                // Show what the certificate is even when it is refused
                // (e.g. expired), when it could be decoded.
                Material::Pkcs12 { data, password } => cache
                    .decode_pkcs12(data, password)
                    .await
                    .0
                    .map(|d| row_with_facts(&spec.name, &d))
                    .unwrap_or_default(),
                _ => CertificateStatus::default(),
            };
            row.name = spec.name.clone();
            row.path = None;
            row.state = problem.reason.code().to_string();
            row.message = Some(problem.message.clone());
            let failure = Failure {
                reason: R::Certificate(problem.reason),
                message: format!("{}: {}", spec.name, problem.message),
            };
            (row, Err(failure))
        }
    }
}

type Decoding = (
    Result<(Arc<Decoded>, Option<Warning>), pkcs12::Problem>,
    [u8; 32],
);

/// Decodes a PKCS12 file; a password that only fails for a trailing
/// newline (`echo pw > file; kubectl create secret --from-file`) is
/// accepted without it, with a warning.
async fn decode_pkcs12(cache: &DecodeCache, data: &[u8], password: &str) -> Decoding {
    let (result, key) = cache.decode_pkcs12(data, password).await;
    if matches!(&result, Err(p) if p.reason == Reason::WrongPassword) {
        let trimmed = password.trim_end_matches(['\n', '\r']);
        if trimmed.len() != password.len() {
            let (retry, retry_key) = cache.decode_pkcs12(data, trimmed).await;
            if let Ok(d) = retry {
                let w = Warning::new(
                    WarningKind::PasswordNewline,
                    "the password in the Secret ends with a newline, which certpin ignored",
                );
                return (Ok((d, Some(w))), retry_key);
            }
        }
    }
    (result.map(|d| (d, None)), key)
}

/// The pins and names must render: checked with placeholder passwords (the
/// real ones are generated, ASCII alphanumerics).
fn pin_failures(set: &ClientCertificateSet) -> Vec<Failure> {
    let files: Vec<CertificateFile> = set
        .spec
        .certificates
        .iter()
        .map(|c| CertificateFile {
            name: format!("certificate {:?}", c.name),
            // As long as a real file key (the hash adds 11 characters).
            path: names::file_path(set, &names::file_name(&c.name, b"")),
            password: "x".into(),
            pins: c.pin_to.clone(),
        })
        .collect();
    match render(&files, &set.spec.no_certificate_for) {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .into_iter()
            .map(|p| Failure {
                reason: R::Certificate(p.reason),
                message: p.message,
            })
            .collect(),
    }
}
