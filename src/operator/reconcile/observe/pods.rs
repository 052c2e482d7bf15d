//! The target's pods, as metadata: what they run decides whether a restart
//! is due, and a StopStart waits for them to go.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;

use crate::operator::error::Result;
use crate::operator::reconcile::kinds::Workload;

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
