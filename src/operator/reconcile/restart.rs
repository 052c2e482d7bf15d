//! Step 5: restarting the app so the new settings take effect, only when
//! the rendered content changed.
//!
//! - Rolling: the pod-template annotation changes; the workload's own
//!   rolling update replaces the pods (a Deployment's surge and
//!   unavailability limits, a StatefulSet's ordinal order and partition).
//! - StopStart: the brief's "stop, then start", through the scale
//!   subresource of either kind. The replica count is recorded in an
//!   annotation on the workload before scaling to zero, so an operator
//!   killed in between restores it when it comes back.
//! - Manual: nothing; status says a restart is due.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kinds::{self, Workload};
use super::names::{ANN_CONFIG_HASH, ANN_STOP_START, LABEL_SET_UID};
use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::operator::faults;
use crate::resource::WorkloadKind;

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

fn manager() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The stop record is applied by a field manager of its own, with the
/// set's claim label: the claim holds while the app is stopped, and
/// clearing the record (an empty apply) leaves certpin's wiring alone.
const RECORD_MANAGER: &str = "certpin-stop-start";

async fn set_record(
    api: &Api<DynamicObject>,
    kind: WorkloadKind,
    name: &str,
    record: Option<(StopStartRecord, &str)>,
    precondition: Option<&str>,
) -> Result<()> {
    let mut body =
        json!({"apiVersion": "apps/v1", "kind": kind.as_str(), "metadata": {"name": name}});
    if let Some((r, uid)) = record {
        body["metadata"]["annotations"] =
            json!({ANN_STOP_START: serde_json::to_string(&r).unwrap_or_default()});
        body["metadata"]["labels"] = json!({LABEL_SET_UID: uid});
    }
    if let Some(rv) = precondition {
        body["metadata"]["resourceVersion"] = json!(rv);
    }
    let params = PatchParams::apply(RECORD_MANAGER).force();
    let written = api.patch(name, &params, &Patch::Apply(&body)).await?;
    // A record written by an earlier version (a merge patch) is not
    // released by the apply: remove it the way it was written.
    let has_record = written
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_STOP_START));
    if record.is_none() && has_record {
        let patch = json!({"metadata": {"annotations": {ANN_STOP_START: null}}});
        api.patch(name, &manager(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

async fn scale(api: &Api<DynamicObject>, name: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &manager(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The workload's pods (metadata only, any phase, terminating included):
/// those its selector matches (labels and expressions) and that it
/// controls, so that another workload's pods with the same labels do not
/// hold a StopStart for ever.
pub async fn pods_of(
    client: &kube::Client,
    ns: &str,
    d: &Workload,
) -> Result<Vec<PartialObjectMeta<Pod>>> {
    let Some(selector) = d
        .selector()
        .and_then(|s| kube::core::Selector::try_from(s.clone()).ok())
    else {
        return Ok(Vec::new());
    };
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels_from(&selector))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| controlled_by(d, p))
        .collect())
}

/// Whether the workload controls the pod: a StatefulSet directly, a
/// Deployment through a ReplicaSet named after it (`<name>-<hash>`). A pod
/// without a controller counts (it was matched by the selector and may
/// belong to it: better waited for than killed under it).
fn controlled_by(d: &Workload, pod: &PartialObjectMeta<Pod>) -> bool {
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return true;
    };
    match d {
        Workload::StatefulSet(_) => {
            owner.kind == "StatefulSet" && d.meta().uid.as_deref() == Some(owner.uid.as_str())
        }
        Workload::Deployment(_) => {
            // `<deployment>-<pod-template-hash>`; the hash has no dash, so
            // `app-b-<hash>` is not app's.
            owner.kind == "ReplicaSet"
                && owner
                    .name
                    .strip_prefix(&format!("{}-", d.name()))
                    .is_some_and(|hash| !hash.is_empty() && !hash.contains('-'))
        }
    }
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

/// Progress of a StopStart.
#[derive(Debug, PartialEq, Eq)]
pub enum StopStart {
    /// Pods are still running or terminating: come back later.
    Waiting { pods: usize },
    /// No pod is left: apply the new wiring, then call `finish`.
    Stopped { replicas: i32 },
}

/// Stops the app (recording its replica count first, with the claim of the
/// set `uid`, conditional on `precondition` when the set does not hold the
/// claim yet), or continues a stop that is already in progress.
pub async fn stop(
    ctx: &Context,
    ns: &str,
    d: &Workload,
    uid: &str,
    precondition: Option<&str>,
) -> Result<StopStart> {
    let (kind, name) = (d.kind(), d.name());
    let api = kinds::api(&ctx.client, ns, kind);
    let record = match record_of(d) {
        Some(r) => r,
        None => {
            let r = StopStartRecord {
                replicas: replicas_of(d),
                phase: Phase::Stopping,
            };
            // Record first: a crash after scaling must not lose the count.
            set_record(&api, kind, name, Some((r, uid)), precondition).await?;
            faults::after("stop-record");
            r
        }
    };
    if record.phase == Phase::Starting {
        return Ok(StopStart::Stopped {
            replicas: record.replicas,
        });
    }
    if replicas_of(d) != 0 {
        scale(&api, name, 0).await?;
        faults::after("scale-zero");
    }
    let pods = pods_of(&ctx.client, ns, d).await?.len();
    if pods > 0 {
        return Ok(StopStart::Waiting { pods });
    }
    let starting = StopStartRecord {
        phase: Phase::Starting,
        ..record
    };
    set_record(&api, kind, name, Some((starting, uid)), None).await?;
    faults::after("stopped");
    Ok(StopStart::Stopped {
        replicas: record.replicas,
    })
}

/// Starts the app again at the recorded replica count and clears the record.
pub async fn start(
    ctx: &Context,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    replicas: i32,
) -> Result<()> {
    let api = kinds::api(&ctx.client, ns, kind);
    scale(&api, name, replicas).await?;
    faults::after("start-scale");
    set_record(&api, kind, name, None, None).await
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
