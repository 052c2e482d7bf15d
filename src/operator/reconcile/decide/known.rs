//! Step 2, skipped (pure): certificates certpin already validated and
//! rendered. After an operator restart the decode cache is empty, and
//! decoding every file again (key derivation: most of a pass's CPU) would
//! only find what the status already says. When the content keys of the
//! inputs (hashes of each file and password, no decoding) give the input
//! hash the rendered Secret was made from, and the status holds a valid
//! row for each certificate, the rows and the earlier encoding are used as
//! they are. Anything else, and anything time may have changed (a
//! certificate near or past its validity's ends), takes the full path.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;

use super::build::{self, Earlier};
use super::validate::ValidCertificate;
use crate::ca::CaCertificate;
use crate::operator::reconcile::observe::{Inputs, Material};
use crate::pkcs12::{self, Warning, WarningKind};
use crate::resource::{CertificateStatus, ClientCertificateSet};

/// What the earlier pass found: the rows, the certificates (without their
/// decoded content) and their warnings.
pub struct Known {
    pub rows: Vec<CertificateStatus>,
    pub valid: Vec<ValidCertificate>,
    pub warnings: Vec<(String, Warning)>,
}

fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

/// The earlier validation of these inputs, when it still holds at `now`.
pub fn known(
    set: &ClientCertificateSet,
    inputs: &Inputs,
    earlier: Option<&Secret>,
    cas: &[CaCertificate],
    now: DateTime<Utc>,
    warn_within: chrono::Duration,
) -> Option<Known> {
    let earlier = earlier?;
    let status = set.status.as_ref()?;
    status.applied_hash.as_ref()?;
    let mut known = Known {
        rows: Vec::new(),
        valid: Vec::new(),
        warnings: Vec::new(),
    };
    for (spec, material) in set.spec.certificates.iter().zip(&inputs.materials) {
        let input_key = match material {
            Material::Pkcs12 { data, password } => pkcs12::content_key(data, password),
            Material::Pem { crt, key } => pkcs12::pem_content_key(crt, key),
            Material::Missing { .. } | Material::Invalid { .. } => return None,
        };
        let row = status.certificates.iter().find(|r| r.name == spec.name)?;
        if row.state != "Valid" {
            return None;
        }
        let (from, until) = (
            timestamp(row.not_before.as_ref()?)?,
            timestamp(row.not_after.as_ref()?)?,
        );
        // Time may have changed the verdict: judge it again, in full.
        if now < from || until - now <= warn_within {
            return None;
        }
        let mut row = row.clone();
        row.path = None;
        for text in &row.warnings {
            let (code, message) = text.split_once(": ")?;
            let kind = WarningKind::from_code(code)?;
            known
                .warnings
                .push((spec.name.clone(), Warning::new(kind, message)));
        }
        known.rows.push(row);
        known.valid.push(ValidCertificate {
            name: spec.name.clone(),
            decoded: None,
            not_after: until,
            input_key,
            pins: spec.pin_to.clone(),
        });
    }
    let hash = build::input_hash(set, &known.valid, cas);
    let earlier = Earlier {
        secret: Some(earlier),
    };
    build::can_reuse(earlier, &hash, known.valid.len()).then_some(known)
}
