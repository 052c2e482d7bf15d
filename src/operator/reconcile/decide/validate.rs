//! Step 2: decode and judge each certificate (through the decode cache), and
//! check that the pins can be rendered. Every failure has its own reason.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::names;
use crate::operator::decoding::DecodeCache;
use crate::operator::reconcile::observe::{Inputs, Material};
use crate::operator::reconcile::reason::Reason as R;
use crate::pkcs12::{self, Decoded, Policy, Reason, Summary, Warning, WarningKind};
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
    pub cas: Vec<crate::ca::CaCertificate>,
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
fn row_with_facts(name: &str, d: &Summary) -> CertificateStatus {
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
    let known = super::known::known(set, inputs, earlier, &trust.valid, now, policy.warn_within);
    let is_known = known.is_some();
    let mut c = match known {
        Some(k) => Certificates {
            rows: k.rows,
            valid: k.valid,
            warnings: k.warnings,
            failures: Vec::new(),
        },
        None => check_all(set, inputs, cache, &policy).await,
    };
    let mut failures = std::mem::take(&mut c.failures);
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
    let whole = failure.is_none() && c.valid.len() == set.spec.certificates.len();
    Validation {
        rows: c.rows,
        ca_rows: trust.rows,
        valid: whole.then_some(c.valid),
        cas: trust.valid,
        ca_warnings: trust.warnings,
        known: is_known,
        failure,
        warnings: c.warnings,
    }
}

/// The client certificates judged: a row each, the valid ones with their
/// warnings, the failures.
#[derive(Default)]
struct Certificates {
    rows: Vec<CertificateStatus>,
    valid: Vec<ValidCertificate>,
    warnings: Vec<(String, Warning)>,
    failures: Vec<Failure>,
}

/// Every certificate decoded (or answered by the cache) and checked.
async fn check_all(
    set: &ClientCertificateSet,
    inputs: &Inputs,
    cache: &DecodeCache,
    policy: &Policy,
) -> Certificates {
    let mut c = Certificates::default();
    for (spec, material) in set.spec.certificates.iter().zip(&inputs.materials) {
        let (row, checked) = check(spec, material, cache, policy).await;
        c.rows.push(row);
        match checked {
            Ok((cert, w)) => {
                c.warnings
                    .extend(w.into_iter().map(|w| (spec.name.clone(), w)));
                c.valid.push(cert);
            }
            Err(f) => c.failures.push(f),
        }
    }
    c
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
            return refused(spec, *reason, *reason, message.clone());
        }
        Material::Invalid { message } => {
            return refused(spec, R::InvalidName, R::InvalidName, message.clone());
        }
        Material::Pkcs12 { data, password } => decode_pkcs12(cache, data, password, false).await,
        Material::Pem { crt, key } => {
            let (result, k) = cache.decode_pem(crt, key, false).await;
            (result.map(|d| (d, None)), k)
        }
    };
    let ((summary, decoded), extra) = match decoded {
        Ok(found) => found,
        Err(problem) => {
            let reason = R::Certificate(problem.reason);
            let mut checked = refused(spec, reason, reason, problem.message);
            checked.0.state = problem.reason.code().to_string();
            return checked;
        }
    };
    match pkcs12::verdict(&summary, policy) {
        Ok(mut w) => {
            w.extend(extra);
            let mut row = row_with_facts(&spec.name, &summary);
            row.warnings = w.iter().map(Warning::to_string).collect();
            let cert = ValidCertificate {
                name: spec.name.clone(),
                not_after: summary.facts.not_after,
                decoded,
                input_key,
                pins: spec.pin_to.clone(),
            };
            (row, Ok((cert, w)))
        }
        Err(problem) => {
            // Show what the certificate is even when it is refused (e.g.
            // expired).
            let mut row = row_with_facts(&spec.name, &summary);
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

/// A certificate refused before or at its decode: a row with `state`
/// and the message, and the failure.
fn refused(
    spec: &CertificateSpec,
    state: R,
    reason: R,
    message: String,
) -> (CertificateStatus, Checked) {
    let row = CertificateStatus {
        name: spec.name.clone(),
        state: state.name(),
        message: Some(message.clone()),
        ..Default::default()
    };
    let failure = Failure {
        reason,
        message: format!("{}: {message}", spec.name),
    };
    (row, Err(failure))
}

type Decoding = (
    Result<((Arc<Summary>, Option<Arc<Decoded>>), Option<Warning>), pkcs12::Problem>,
    [u8; 32],
);

/// Decodes a PKCS12 file (`full`: even when its verdict is known); a
/// password that only fails for a trailing newline (`echo pw > file;
/// kubectl create secret --from-file`) is accepted without it, with a
/// warning.
async fn decode_pkcs12(cache: &DecodeCache, data: &[u8], password: &str, full: bool) -> Decoding {
    let (result, key) = cache.decode_pkcs12(data, password, full).await;
    if matches!(&result, Err(p) if p.reason == Reason::WrongPassword) {
        let trimmed = password.trim_end_matches(['\n', '\r']);
        if trimmed.len() != password.len() {
            let (retry, retry_key) = cache.decode_pkcs12(data, trimmed, full).await;
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

/// Decodes again, whole, the valid certificates a new encoding needs that
/// the cache or the earlier validation answered without their key.
pub async fn decode_whole(
    inputs: &Inputs,
    valid: &mut [ValidCertificate],
    cache: &DecodeCache,
) -> crate::operator::error::Result<()> {
    for (cert, material) in valid.iter_mut().zip(&inputs.materials) {
        if cert.decoded.is_some() {
            continue;
        }
        let decoded = match material {
            Material::Pkcs12 { data, password } => decode_pkcs12(cache, data, password, true)
                .await
                .0
                .map(|((_, d), _)| d),
            Material::Pem { crt, key } => cache.decode_pem(crt, key, true).await.0.map(|(_, d)| d),
            _ => Ok(None),
        };
        cert.decoded = decoded.map_err(|p| {
            crate::operator::error::Error::Render(format!("{}: {}", cert.name, p.message))
        })?;
    }
    Ok(())
}

/// The contents the set's certificates are, as the decode cache keys them
/// (a password with a trailing newline, also without it).
pub fn content_keys(inputs: &Inputs) -> Vec<[u8; 32]> {
    let mut keys = Vec::new();
    for material in &inputs.materials {
        match material {
            Material::Pkcs12 { data, password } => {
                keys.push(pkcs12::content_key(data, password));
                let trimmed = password.trim_end_matches(['\n', '\r']);
                if trimmed.len() != password.len() {
                    keys.push(pkcs12::content_key(data, trimmed));
                }
            }
            Material::Pem { crt, key } => keys.push(pkcs12::pem_content_key(crt, key)),
            Material::Missing { .. } | Material::Invalid { .. } => {}
        }
    }
    keys
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
