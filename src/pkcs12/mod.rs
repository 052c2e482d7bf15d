//! The certificate core: decode and validate PKCS12 (or PEM) client
//! certificates, and re-encode them in a profile the app runtime loads.
//!
//! Pure: no I/O, no clock (callers pass `now`).

mod bounds;
mod budget;
mod decode;
mod encode;
mod facts;
mod keys;
mod pbe;
mod reason;
mod scheme;
mod walk;

pub use bounds::{MAX_DECODE_HEAP, PeakMeter, check_decode_bounds};
pub use budget::{Budget, Cancel, MAX_PART_ITERATIONS, MAX_WORK};
pub use decode::{
    Decoded, MAX_INPUT, content_key, decode_pem, decode_pkcs12, decode_pkcs12_with, pem_content_key,
};
pub use encode::{EncodeError, Encoded, Profile, encode, encode_with, generate_password};
pub use facts::{Facts, fingerprint};
pub use keys::KeyKind;
pub use reason::{Problem, Reason, Warning, WarningKind};
pub use scheme::{Encryption, Scheme, inspect};

/// Default threshold for the "expires soon" warning.
pub const DEFAULT_EXPIRY_WARNING_DAYS: i64 = 30;

/// How strictly to judge a file.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub now: chrono::DateTime<chrono::Utc>,
    /// Certificates expiring within this are valid with a warning.
    pub warn_within: chrono::Duration,
    /// Refuse files the JVM would refuse as they are. The CLI does (the
    /// developer's app loads the file itself); the operator does not, because
    /// it re-encodes every file.
    pub jvm_strict: bool,
}

impl Policy {
    pub fn at(now: chrono::DateTime<chrono::Utc>) -> Self {
        Policy {
            now,
            warn_within: chrono::Duration::days(DEFAULT_EXPIRY_WARNING_DAYS),
            jvm_strict: true,
        }
    }
}

/// What is known of a decoded certificate without its key or chain: what
/// a verdict needs, and what a cache of verdicts keeps.
#[derive(Debug, Clone)]
pub struct Summary {
    pub key_kind: KeyKind,
    pub facts: Facts,
    pub jvm_refusals: Vec<String>,
}

impl Decoded {
    pub fn summary(&self) -> Summary {
        Summary {
            key_kind: self.key_kind,
            facts: self.facts.clone(),
            jvm_refusals: self.jvm_refusals.clone(),
        }
    }
}

/// The verdict on an already decoded certificate: warnings when valid.
pub fn judge(decoded: &Decoded, policy: &Policy) -> Result<Vec<Warning>, Problem> {
    verdict(&decoded.summary(), policy)
}

/// `judge`, on what is known of a decoded certificate.
pub fn verdict(decoded: &Summary, policy: &Policy) -> Result<Vec<Warning>, Problem> {
    let mut warnings = Vec::new();
    if !decoded.jvm_refusals.is_empty() {
        if policy.jvm_strict {
            return Err(Problem::new(
                Reason::JvmIncompatible,
                format!(
                    "the app runtime's JVM cannot load this file: {}; re-export it with an ASCII password and \
                     AES-256 (OpenSSL 3 defaults), or let the certpin operator re-encode it",
                    decoded.jvm_refusals.join("; ")
                ),
            ));
        }
        warnings.extend(
            decoded
                .jvm_refusals
                .iter()
                .map(|r| Warning::new(WarningKind::ReEncodedForJvm, r.clone())),
        );
    }
    if let Some(w) = decoded
        .facts
        .check_validity(policy.now, policy.warn_within)?
    {
        warnings.push(w);
    }
    if decoded.key_kind == KeyKind::Ed25519 {
        warnings.push(Warning::new(
            WarningKind::Ed25519Key,
            "Ed25519 client keys need Java 15 or newer in the app runtime",
        ));
    }
    Ok(warnings)
}
