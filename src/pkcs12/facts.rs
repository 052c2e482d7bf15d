//! Facts about a decoded certificate, for status rows and the CLI, and the
//! validity-period check.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use super::keys;
use super::reason::{Problem, Reason, Warning, WarningKind};
use super::scheme::Scheme;

/// What a user needs to recognise a certificate. Contains no secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub subject: String,
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex.
    pub sha256_fingerprint: String,
    pub key_algorithm: String,
    pub key_size: u32,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Certificates from the end-entity up to the last issuer present.
    pub chain_length: usize,
    /// `modern` (PBES2), `legacy` (PKCS12 PBE), `mixed`, or `pem` for a
    /// kubernetes.io/tls input.
    pub encryption: String,
    /// The schemes in detail, e.g. "keys: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC, 2048 iterations); ...".
    pub encryption_detail: String,
}

fn ts(t: ASN1Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or_default()
}

pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Facts {
    pub(crate) fn extract(
        cert: &X509Certificate<'_>,
        der: &[u8],
        chain_length: usize,
        scheme: Option<&Scheme>,
    ) -> Facts {
        let (key_algorithm, key_size) = keys::describe_certificate_key(cert);
        Facts {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            sha256_fingerprint: fingerprint(der),
            key_algorithm,
            key_size,
            not_before: ts(cert.validity().not_before),
            not_after: ts(cert.validity().not_after),
            chain_length,
            encryption: scheme.map_or("pem", |s| s.profile()).to_string(),
            encryption_detail: scheme
                .map_or_else(|| "PEM (unencrypted)".to_string(), Scheme::describe),
        }
    }

    /// Checks the validity period at `now`. A certificate that expires within
    /// `warn_within` is valid, with a warning.
    pub fn check_validity(
        &self,
        now: DateTime<Utc>,
        warn_within: chrono::Duration,
    ) -> Result<Option<Warning>, Problem> {
        if now < self.not_before {
            return Err(Problem::new(
                Reason::NotYetValid,
                format!(
                    "the certificate ({}) is valid only from {}; servers refuse it until then",
                    self.subject,
                    self.not_before.to_rfc3339()
                ),
            ));
        }
        if now > self.not_after {
            return Err(Problem::new(
                Reason::Expired,
                format!(
                    "the certificate ({}) expired on {}; ask its issuer for a renewed certificate",
                    self.subject,
                    self.not_after.to_rfc3339()
                ),
            ));
        }
        let left = self.not_after - now;
        if left <= warn_within {
            return Ok(Some(Warning::new(
                WarningKind::ExpiringSoon,
                format!(
                    "the certificate ({}) expires on {}, in {} days",
                    self.subject,
                    self.not_after.to_rfc3339(),
                    left.num_days()
                ),
            )));
        }
        Ok(None)
    }
}
