//! The workload kinds certpin wires, behind one type. Everything else
//! (claims, collisions, the plan, the writes) works on the pod template,
//! the replica count and the metadata, which every kind has; what differs
//! per kind is here, in how its rollout is read (`rollout.rs`) and in the
//! watch of the kind (`operator/mod.rs`). A third kind (a DaemonSet, an
//! Argo Rollout) is a variant here, a rollout reader and one more watch.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use crate::operator::error::Result;
use crate::resource::WorkloadKind;

/// A live workload of one of the kinds certpin wires.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

/// The API of a kind, untyped, for writes: certpin's are server-side apply
/// bodies and scale patches, the same for every kind (reads are typed,
/// `get_opt`).
pub fn api(client: &Client, ns: &str, kind: WorkloadKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource(kind))
}

pub fn resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
    }
}

impl Workload {
    /// A workload written as JSON (tests).
    #[cfg(test)]
    pub fn from_value(kind: WorkloadKind, v: Value) -> serde_json::Result<Workload> {
        Ok(match kind {
            WorkloadKind::Deployment => Workload::Deployment(serde_json::from_value(v)?),
            WorkloadKind::StatefulSet => Workload::StatefulSet(serde_json::from_value(v)?),
        })
    }

    /// A workload known by its metadata only (a claim and a stop record
    /// are all a release needs).
    pub fn metadata_only(kind: WorkloadKind, metadata: ObjectMeta) -> Workload {
        match kind {
            WorkloadKind::Deployment => Workload::Deployment(Deployment {
                metadata,
                ..Deployment::default()
            }),
            WorkloadKind::StatefulSet => Workload::StatefulSet(StatefulSet {
                metadata,
                ..StatefulSet::default()
            }),
        }
    }

    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Workload::Deployment(d) => &mut d.metadata,
            Workload::StatefulSet(s) => &mut s.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// `Kind "name"`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {:?}", self.kind(), self.name())
    }

    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
        }
    }

    pub fn pod_spec(&self) -> Option<&PodSpec> {
        self.template()?.spec.as_ref()
    }

    #[cfg(test)]
    pub fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_mut()?.template.spec.as_mut(),
            Workload::StatefulSet(s) => s.spec.as_mut()?.template.spec.as_mut(),
        }
    }

    /// The replica count the spec asks for (both kinds default to 1).
    pub fn replicas(&self) -> i32 {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Workload::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas),
        }
        .unwrap_or(1)
    }

    /// Whether the workload's controller counts any pod of it (terminating
    /// ones aside).
    pub fn has_pods(&self) -> bool {
        match self {
            Workload::Deployment(d) => d.status.as_ref().and_then(|s| s.replicas),
            Workload::StatefulSet(s) => s.status.as_ref().map(|s| s.replicas),
        }
        .unwrap_or(0)
            > 0
    }

    pub fn selector(&self) -> Option<&LabelSelector> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
        }
    }

    /// Whether scaling it to zero deletes its data: a StatefulSet whose
    /// claims are deleted when it is scaled down
    /// (`persistentVolumeClaimRetentionPolicy.whenScaled: Delete`).
    pub fn scale_down_deletes_volumes(&self) -> bool {
        match self {
            Workload::Deployment(_) => false,
            Workload::StatefulSet(s) => s.spec.as_ref().is_some_and(|s| {
                let policy = s.persistent_volume_claim_retention_policy.as_ref();
                policy.and_then(|p| p.when_scaled.as_deref()) == Some("Delete")
                    && s.volume_claim_templates
                        .as_ref()
                        .is_some_and(|v| !v.is_empty())
            }),
        }
    }

    /// Whether a change of the pod template replaces its pods by itself (a
    /// StatefulSet with `OnDelete` waits for someone to delete them).
    pub fn rolls_on_template_change(&self) -> bool {
        !self.updates_on_delete()
    }

    fn updates_on_delete(&self) -> bool {
        match self {
            Workload::Deployment(_) => false,
            Workload::StatefulSet(s) => {
                let strategy = s.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
                strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete")
            }
        }
    }

    /// How a user restarts it by hand.
    pub fn restart_hint(&self) -> String {
        if self.updates_on_delete() {
            format!(
                "delete the pods of StatefulSet {:?}, one ordinal at a time: it updates on delete",
                self.name()
            )
        } else {
            format!(
                "kubectl rollout restart {}/{}",
                self.kind().kubectl_name(),
                self.name()
            )
        }
    }

    /// The owner that controls this workload, if another controller does.
    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.meta()
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
    }

    pub fn to_value(&self) -> Value {
        match self {
            Workload::Deployment(d) => serde_json::to_value(d),
            Workload::StatefulSet(s) => serde_json::to_value(s),
        }
        .unwrap_or(Value::Null)
    }
}

/// Reads a workload through the kind's typed API: the answer is parsed
/// once, into its own type.
pub async fn get_opt(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Option<Workload>> {
    Ok(match kind {
        WorkloadKind::Deployment => {
            let api = Api::<Deployment>::namespaced(client.clone(), ns);
            api.get_opt(name).await?.map(Workload::Deployment)
        }
        WorkloadKind::StatefulSet => {
            let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
            api.get_opt(name).await?.map(Workload::StatefulSet)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_kinds_expose_template_replicas_selector_and_owner() {
        for kind in WorkloadKind::ALL {
            let w = Workload::from_value(
                kind,
                json!({"metadata": {"name": "app", "ownerReferences": [
                        {"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"},
                        {"apiVersion": "privatecloud.mendix.com/v1alpha1", "kind": "MendixApp",
                         "name": "shop", "uid": "u2", "controller": true}]},
                       "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "a"}},
                                "template": {"spec": {"containers": [{"name": "m"}]}}}}),
            )
            .expect("a workload");
            assert_eq!(w.kind(), kind);
            assert_eq!(w.replicas(), 3);
            assert_eq!(w.pod_spec().map(|p| p.containers.len()), Some(1));
            assert!(w.selector().is_some());
            assert_eq!(
                w.controller_owner().map(|o| o.kind.as_str()),
                Some("MendixApp")
            );
            assert_eq!(w.describe(), format!("{kind} \"app\""));
        }
    }
}
