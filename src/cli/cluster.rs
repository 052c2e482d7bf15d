//! What the cluster-side commands (`status`, `reconcile`) share: the
//! kubeconfig as kubectl reads it, the namespace, and times for people.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A failure talking to the cluster: exit code 1, as kubectl's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

impl From<kube::Error> for ClusterError {
    fn from(e: kube::Error) -> Self {
        match &e {
            // A 404 that is no object's NotFound: the kind is not served.
            kube::Error::Api(s) if s.code == 404 && s.reason != "NotFound" => ClusterError(
                "the cluster serves no ClientCertificateSets: is certpin's CRD installed \
                 (kubectl apply --server-side -f crds/)?"
                    .into(),
            ),
            _ => ClusterError(e.to_string()),
        }
    }
}

/// Runs a command's async body on a runtime of its own; prints its error.
pub fn block_on(body: impl std::future::Future<Output = Result<i32, ClusterError>>) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match rt {
        Ok(rt) => rt.block_on(body),
        Err(e) => Err(ClusterError(e.to_string())),
    };
    result.unwrap_or_else(|e| {
        eprintln!("certpin: {e}");
        1
    })
}

/// The client and the namespace kubectl would use: KUBECONFIG or
/// ~/.kube/config (in a pod, its ServiceAccount), and the context's
/// namespace unless `-n` gives one.
pub async fn connect(namespace: Option<&str>) -> Result<(kube::Client, String), ClusterError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| ClusterError(format!("no cluster to talk to: {e}")))?;
    let ns = namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    Ok((client, ns))
}

pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

/// `2027-03-01T00:00:00Z (in 120d)` or `... (5m ago)`.
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let stamp = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let d = t.signed_duration_since(now);
    let span = span(d.num_seconds().unsigned_abs());
    // Compared whole: a restart a fraction of a second ago is past.
    if d > chrono::Duration::zero() {
        format!("{stamp} (in {span})")
    } else {
        format!("{stamp} ({span} ago)")
    }
}

/// A span as kubectl prints ages: its largest unit, and the next below
/// it while the first is small.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m}m"),
        (1..=9, _, _) => format!("{d}d{h}h"),
        _ => format!("{d}d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_stamp_and_a_span_either_way() {
        let now: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().expect("time");
        let later = now + chrono::Duration::days(120);
        assert_eq!(when(later, now), "2026-05-02T03:04:05Z (in 120d)");
        let earlier = now - chrono::Duration::seconds(3 * 3600 + 125);
        assert_eq!(when(earlier, now), "2026-01-02T00:02:00Z (3h2m ago)");
        let just = now - chrono::Duration::milliseconds(300);
        assert_eq!(when(just, now), "2026-01-02T03:04:04Z (0s ago)");
        assert_eq!(span(0), "0s");
        assert_eq!(span(59 * 60 + 59), "59m");
        assert_eq!(span(2 * 86400 + 5 * 3600), "2d5h");
    }
}
