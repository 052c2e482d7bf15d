//! The reconcile request on a set (Flux's `requestedAt` convention): an
//! annotation whose new value asks for a pass now, echoed to
//! status.lastHandledReconcileAt once a pass has handled it.

use chrono::{DateTime, Utc};

use crate::names::{ANN_FLUX_REQUESTED_AT, ANN_RECONCILE_REQUESTED};
use crate::resource::ClientCertificateSet;

/// The request the set carries. With both annotations, the later one by
/// their values (RFC 3339 or Unix seconds, as `date +%s` writes) is the
/// request, else certpin's own: one value, so passes never alternate
/// between echoing the one and the other.
pub fn requested(set: &ClientCertificateSet) -> Option<String> {
    let annotations = set.metadata.annotations.as_ref()?;
    let value = |key| annotations.get(key).filter(|v: &&String| !v.is_empty());
    let (ours, flux) = (value(ANN_RECONCILE_REQUESTED), value(ANN_FLUX_REQUESTED_AT));
    let chosen = match (ours, flux) {
        (Some(o), Some(f)) if later(f, o) => f,
        (Some(o), _) => o,
        (None, f) => f?,
    };
    Some(chosen.clone())
}

fn later(a: &str, b: &str) -> bool {
    matches!((instant(a), instant(b)), (Some(a), Some(b)) if a > b)
}

fn instant(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    DateTime::from_timestamp(v.trim().parse().ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(annotations: &[(&str, &str)]) -> ClientCertificateSet {
        let mut s: ClientCertificateSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "s"}, "spec": {"app": {"deployment": "app"}}
        }))
        .expect("a set");
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    #[test]
    fn either_annotation_alone_is_the_request() {
        assert_eq!(requested(&set(&[])), None);
        let ours = set(&[(ANN_RECONCILE_REQUESTED, "2026-01-02T03:04:05Z")]);
        assert_eq!(requested(&ours).as_deref(), Some("2026-01-02T03:04:05Z"));
        let flux = set(&[(ANN_FLUX_REQUESTED_AT, "anything")]);
        assert_eq!(requested(&flux).as_deref(), Some("anything"));
        assert_eq!(requested(&set(&[(ANN_FLUX_REQUESTED_AT, "")])), None);
    }

    #[test]
    fn with_both_the_later_wins_and_otherwise_certpins_own() {
        let both = |ours, flux| {
            requested(&set(&[
                (ANN_RECONCILE_REQUESTED, ours),
                (ANN_FLUX_REQUESTED_AT, flux),
            ]))
        };
        // 1767323045 is 2026-01-02T03:04:05Z.
        let later_flux = both("2026-01-02T03:04:05Z", "1767323046");
        assert_eq!(later_flux.as_deref(), Some("1767323046"));
        let later_ours = both("2026-01-02T03:04:06+00:00", "1767323045");
        assert_eq!(later_ours.as_deref(), Some("2026-01-02T03:04:06+00:00"));
        assert_eq!(both("x", "y").as_deref(), Some("x"), "not comparable");
    }
}
