//! What a restart is, decided (pure): the StopStart record certpin keeps
//! on a workload, and whether a pod may run settings older than a
//! rendering (what its pods run decides whether a restart is due).

use serde::{Deserialize, Serialize};

use crate::names::{ANN_CONFIG_HASH, ANN_STOP_START};
use crate::operator::reconcile::kinds::Workload;

/// What is recorded on the workload while a StopStart is in progress.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StopStartRecord {
    /// The replica count to restore.
    pub replicas: i32,
    /// `Stopping` until no pod is left, then `Starting`.
    pub phase: Phase,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Stopping,
    Starting,
}

pub fn record_of(d: &Workload) -> Option<StopStartRecord> {
    d.meta()
        .annotations
        .as_ref()?
        .get(ANN_STOP_START)
        .and_then(|v| serde_json::from_str(v).ok())
}

pub fn replicas_of(d: &Workload) -> i32 {
    d.replicas()
}

/// The rendering a Manual set's pods are compared with.
pub struct Rendering<'a> {
    /// When it was rendered (second precision).
    pub at: k8s_openapi::jiff::Timestamp,
    pub config_hash: &'a str,
    /// The resourceVersion of the rendered Secret that holds it, when it
    /// was written before this pass and resourceVersions compare as
    /// numbers (Kubernetes 1.35+).
    pub version: Option<u64>,
}

/// Whether a pod may run settings older than the rendering, which a Manual
/// set leaves to its user to restart. Creation timestamps have second
/// precision, as `at` has: a pod created in an earlier second is stale, one
/// created in a later second is not. In the same second, a pod whose
/// template carries the rendering's hash was created for it; otherwise its
/// resourceVersion tells (every change after the Secret's write has a
/// higher one: a pod changed last before it was created before it), and
/// without one to compare it counts as stale (a restart too many rather
/// than settings silently left old).
pub fn may_run_older_settings(pod: &kube::core::ObjectMeta, r: &Rendering) -> bool {
    if pod.deletion_timestamp.is_some() {
        return false;
    }
    let created_for_it = pod
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_CONFIG_HASH))
        .is_some_and(|h| h == r.config_hash);
    let Some(created) = pod.creation_timestamp.as_ref().map(|t| t.0) else {
        return false;
    };
    if created_for_it || created > r.at {
        return false;
    }
    if created < r.at {
        return true;
    }
    let pod_version = pod
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok());
    match (r.version, pod_version) {
        (Some(secret), Some(pod)) => pod < secret,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::ObjectMeta;

    const RENDERED: &str = "2026-12-01T04:58:54Z";

    fn pod(created: &str, hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            creation_timestamp: Some(Time(created.parse().expect("a time"))),
            annotations: hash.map(|h| [(ANN_CONFIG_HASH.to_string(), h.to_string())].into()),
            resource_version: Some("500".into()),
            ..ObjectMeta::default()
        }
    }

    fn stale_against(p: &ObjectMeta, version: Option<u64>) -> bool {
        let r = Rendering {
            at: RENDERED.parse().expect("a time"),
            config_hash: "new",
            version,
        };
        may_run_older_settings(p, &r)
    }

    fn stale(p: &ObjectMeta) -> bool {
        stale_against(p, None)
    }

    #[test]
    fn a_pod_created_in_an_earlier_second_runs_older_settings() {
        assert!(stale(&pod("2026-12-01T04:58:53Z", Some("old"))));
        assert!(stale(&pod("2026-12-01T04:58:53Z", None)));
        assert!(stale_against(&pod("2026-12-01T04:58:53Z", None), Some(100)));
    }

    #[test]
    fn in_the_second_of_the_rendering_the_hash_then_the_resource_version_tell() {
        // Made for this rendering.
        assert!(!stale(&pod(RENDERED, Some("new"))));
        // Last changed before the Secret's write (version 600): made
        // before it, by the rollout of the previous rendering.
        assert!(stale_against(&pod(RENDERED, Some("old")), Some(600)));
        // Changed after it: a restart right after the rotation.
        assert!(!stale_against(&pod(RENDERED, Some("old")), Some(400)));
        // Nothing to compare (this pass wrote the Secret; an API server
        // before 1.35): counted.
        assert!(stale(&pod(RENDERED, Some("old"))));
        assert!(stale(&pod(RENDERED, None)));
    }

    #[test]
    fn a_pod_created_later_or_made_for_the_rendering_or_going_does_not_count() {
        assert!(!stale(&pod("2026-12-01T04:58:55Z", Some("old"))));
        assert!(!stale(&pod("2026-12-01T04:50:00Z", Some("new"))));
        let mut going = pod("2026-12-01T04:58:00Z", Some("old"));
        going.deletion_timestamp = going.creation_timestamp.clone();
        assert!(!stale(&going));
        assert!(!stale(&ObjectMeta::default()));
    }
}
