//! Step 2b (pure): the CA bundles a set names, judged the way client
//! certificates are: a row per certificate (or per refused bundle), the
//! first failure, and the warnings (an expired CA is one, see `ca`).

use chrono::{DateTime, Utc};

use super::validate::{Failure, time};
use crate::ca::{self, CaCertificate};
use crate::operator::reconcile::observe::CaMaterial;
use crate::operator::reconcile::reason::Reason;
use crate::resource::{CaCertificateSpec, CaCertificateStatus};

#[derive(Default)]
pub struct Trust {
    pub rows: Vec<CaCertificateStatus>,
    /// Every entry's certificates, in order (duplicates across entries
    /// included: the rendering keeps one file each).
    pub valid: Vec<CaCertificate>,
    pub failures: Vec<Failure>,
    /// `entry: kind: detail`.
    pub warnings: Vec<String>,
}

/// At most this many CA certificates per set: they are files in one
/// Secret (1 MiB), and rows of the status.
pub const MAX_CA_CERTIFICATES: usize = 500;

/// Judges every entry. `warn_within`: an unexpired CA that expires within
/// it is valid with an `expiring-soon` warning, as client certificates are.
pub fn check(
    specs: &[CaCertificateSpec],
    materials: &[CaMaterial],
    now: DateTime<Utc>,
    warn_within: chrono::Duration,
) -> Trust {
    let mut t = Trust::default();
    for (spec, material) in specs.iter().zip(materials) {
        let (reason, message) = match material {
            CaMaterial::Missing { reason, message } => (*reason, message.clone()),
            CaMaterial::Invalid { message } => (Reason::InvalidName, message.clone()),
            CaMaterial::Bundle(data) => match ca::parse_bundle(data) {
                Err(e) => (Reason::from(&e), e.to_string()),
                Ok(certs) => {
                    for c in certs {
                        t.trust(spec, c, now, warn_within);
                    }
                    continue;
                }
            },
        };
        t.refuse(spec, reason, message);
    }
    if t.valid.len() > MAX_CA_CERTIFICATES {
        let count = t.valid.len();
        t.rows.truncate(MAX_CA_CERTIFICATES);
        t.failures.push(Failure {
            reason: Reason::TooManyCACertificates,
            message: format!(
                "the CA entries hold {count} certificates, over the {MAX_CA_CERTIFICATES} a set renders \
                 (they are files in one Secret): trust fewer, or the issuing CAs only"
            ),
        });
    }
    t
}

impl Trust {
    /// An entry refused whole: a row saying why, and a failure.
    fn refuse(&mut self, spec: &CaCertificateSpec, reason: Reason, message: String) {
        self.failures.push(Failure {
            reason,
            message: format!("CA certificate {:?}: {message}", spec.name),
        });
        self.rows.push(CaCertificateStatus {
            name: spec.name.clone(),
            state: reason.name(),
            message: Some(message),
            ..Default::default()
        });
    }

    /// One certificate of an entry's bundle, trusted, with its warnings.
    fn trust(
        &mut self,
        spec: &CaCertificateSpec,
        c: CaCertificate,
        now: DateTime<Utc>,
        warn_within: chrono::Duration,
    ) {
        let mut warnings = c.warnings(now);
        let left = c.not_after - now;
        if warnings.is_empty() && left <= warn_within {
            warnings.push(format!(
                "expiring-soon: the CA certificate ({}) expires on {}, in {} days",
                c.subject,
                c.not_after.to_rfc3339(),
                left.num_days()
            ));
        }
        self.warnings
            .extend(warnings.iter().map(|w| format!("{}: {w}", spec.name)));
        self.rows.push(CaCertificateStatus {
            name: spec.name.clone(),
            path: None,
            subject: Some(c.subject.clone()),
            sha256_fingerprint: Some(c.sha256_fingerprint.clone()),
            not_before: time(c.not_before),
            not_after: time(c.not_after),
            state: "Valid".into(),
            message: None,
            warnings,
        });
        self.valid.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> CaCertificateSpec {
        serde_json::from_value(
            serde_json::json!({"name": name, "configMap": {"name": "b", "key": "k"}}),
        )
        .expect("a spec")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/ca/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("a fixture")
    }

    #[test]
    fn rows_per_certificate_failures_per_entry_and_warnings_for_expired_cas() {
        let now = Utc::now();
        let t = check(
            &[spec("partner"), spec("old"), spec("leaky"), spec("later")],
            &[
                CaMaterial::Bundle(fixture("partner-bundle.pem")),
                CaMaterial::Bundle(fixture("expired-ca.crt")),
                CaMaterial::Bundle(fixture("bundle-with-key.pem")),
                CaMaterial::Missing {
                    reason: Reason::ConfigMapNotFound,
                    message: "not yet".into(),
                },
            ],
            now,
            chrono::Duration::days(30),
        );
        let states: Vec<(&str, &str)> = t
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("partner", "Valid"),
                ("partner", "Valid"),
                ("old", "Valid"),
                ("leaky", "PrivateKeyInBundle"),
                ("later", "ConfigMapNotFound"),
            ]
        );
        assert_eq!(t.valid.len(), 3);
        assert_eq!(t.failures[0].reason, Reason::PrivateKeyInBundle);
        assert!(t.failures[0].reason.is_failure());
        assert_eq!(t.failures[1].reason, Reason::ConfigMapNotFound);
        assert!(!t.failures[1].reason.is_failure());
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].starts_with("old: expired:"),
            "{:?}",
            t.warnings
        );
    }
}
