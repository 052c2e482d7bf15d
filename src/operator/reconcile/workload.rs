//! Reading a live workload (pure): who claims it, what of certpin's wiring
//! it carries, and where the app's own pod template collides with it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::kinds::Workload;
use crate::names::{
    ANN_SET, BUILDPACK_ENV, LABEL_SET_UID, SETTING_ENV, VOLUME, normal_path, set_name,
};
use crate::resource::ClientCertificateSet;

/// The claim a workload carries: the set's uid (label) and name (annotation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claim {
    pub uid: Option<String>,
    pub name: Option<String>,
}

pub fn claim(d: &Workload) -> Option<Claim> {
    let m = d.meta();
    let uid = m
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SET_UID))
        .cloned();
    let name = m.annotations.as_ref().and_then(|a| a.get(ANN_SET)).cloned();
    (uid.is_some() || name.is_some()).then_some(Claim { uid, name })
}

/// Whether `set` holds the claim on `d`: by uid; a claim without a uid
/// (written before uids were recorded) by name.
pub fn claimed_by(set: &ClientCertificateSet, d: &Workload) -> bool {
    match claim(d) {
        Some(Claim { uid: Some(uid), .. }) => set.metadata.uid.as_deref() == Some(uid.as_str()),
        Some(Claim {
            uid: None,
            name: Some(name),
        }) => name == set_name(set),
        _ => false,
    }
}

/// When certpin last rolled the workload's pods, as it recorded on the
/// workload with the template change.
pub fn restarted_at(d: &Workload) -> Option<Time> {
    let at = d
        .meta()
        .annotations
        .as_ref()?
        .get(crate::names::ANN_RESTARTED_AT)?;
    at.parse().ok().map(Time)
}

/// Whether a claim by another set is still in force: that set exists, is
/// the one the uid names, is not being deleted, and still targets `d`. A
/// copied manifest carrying another set's claim is not in force.
pub fn claim_in_force(
    claim: &Claim,
    claimant: Option<&ClientCertificateSet>,
    d: &Workload,
) -> bool {
    let Some(other) = claimant else { return false };
    let uid_matches = claim
        .uid
        .as_deref()
        .is_none_or(|u| other.metadata.uid.as_deref() == Some(u));
    uid_matches
        && other.metadata.deletion_timestamp.is_none()
        && other.spec.app.targets(d.kind(), d.name())
}

pub fn container_names(d: &Workload) -> Vec<String> {
    d.pod_spec()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// An env var or mount is certpin's when it points at the set's rendered objects.
fn env_is_ours(e: &k8s_openapi::api::core::v1::EnvVar, rendered: &str) -> bool {
    let Some(from) = &e.value_from else {
        return false;
    };
    e.value.is_none()
        && (from
            .config_map_key_ref
            .as_ref()
            .is_some_and(|r| r.name == rendered)
            || from
                .secret_key_ref
                .as_ref()
                .is_some_and(|r| r.name == rendered))
}

/// certpin's mount, or one of its settings pointing at the rendered
/// objects: a container's own setting of the same name is the app's.
fn carries_wiring(c: &Container, rendered: &str) -> bool {
    c.volume_mounts.iter().flatten().any(|m| m.name == VOLUME)
        || c.env
            .iter()
            .flatten()
            .any(|e| SETTING_ENV.contains(&e.name.as_str()) && env_is_ours(e, rendered))
}

/// The containers that carry certpin's mount or one of its settings.
pub fn wired_containers(d: &Workload, rendered: &str) -> BTreeSet<String> {
    d.pod_spec()
        .map(|s| {
            s.containers
                .iter()
                .filter(|c| carries_wiring(c, rendered))
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The app's containers (those the set wires) that still pass certificates
/// the Mendix buildpack's old way: the buildpack applies certpin's
/// `MXRUNTIME_*` settings after them, so they are silently replaced. A
/// warning, not a refusal: certpin's settings do take effect.
pub fn buildpack_env_warnings(set: &ClientCertificateSet, d: &Workload) -> Vec<String> {
    let wanted = &set.spec.app.containers;
    d.pod_spec()
        .into_iter()
        .flat_map(|s| &s.containers)
        .filter(|c| wanted.is_empty() || wanted.contains(&c.name))
        .flat_map(|c| {
            c.env
                .iter()
                .flatten()
                .filter(|e| BUILDPACK_ENV.contains(&e.name.as_str()))
                .map(move |e| {
                    format!(
                        "buildpack-setting: container {:?} of {} sets {}; the Mendix buildpack applies \
                         certpin's MXRUNTIME_* settings after it, so it is silently replaced: remove it",
                        c.name,
                        d.describe(),
                        e.name
                    )
                })
        })
        .collect()
}

/// Where the app's own pod template would be overwritten by certpin's
/// wiring. certpin refuses rather than takes over: a server-side apply
/// with force would silently replace the app's volume or setting, and the
/// tool that owns the manifest would put it back on its next sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collision {
    /// A container mounts something else at the set's mountPath.
    MountPath { container: String, volume: String },
    /// The pod has its own volume under certpin's volume name.
    VolumeName,
    /// A container sets one of certpin's settings itself.
    Setting { container: String, env: String },
}

impl Collision {
    pub fn message(&self, set: &ClientCertificateSet, workload: &str) -> String {
        match self {
            Collision::MountPath { container, volume } => format!(
                "container {container:?} of {workload:?} already mounts volume {volume:?} at {:?}; \
                 choose another spec.mountPath (nothing was changed)",
                set.spec.mount_path
            ),
            Collision::VolumeName => format!(
                "{workload:?} has its own volume named {VOLUME:?} (copied from a workload certpin wires?); \
                 remove or rename it (nothing was changed)"
            ),
            Collision::Setting { container, env } => format!(
                "container {container:?} of {workload:?} sets {env} itself; remove it from the manifest \
                 so that certpin can wire it (nothing was changed)"
            ),
        }
    }
}

/// The first collision of certpin's wiring with the app's own template.
/// `rendered` names the ConfigMap and the Secret (the volume's source).
pub fn collision(
    d: &Workload,
    containers: &[String],
    mount_path: &str,
    rendered: &str,
    settings: &[&str],
) -> Option<Collision> {
    let spec = d.pod_spec()?;
    let foreign_volume = spec.volumes.iter().flatten().any(|v| {
        let source = v.secret.as_ref().and_then(|s| s.secret_name.as_deref());
        v.name == VOLUME && source != Some(rendered)
    });
    if foreign_volume {
        return Some(Collision::VolumeName);
    }
    let want = normal_path(mount_path);
    for c in spec
        .containers
        .iter()
        .filter(|c| containers.contains(&c.name))
    {
        if let Some(m) = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| normal_path(&m.mount_path) == want && m.name != VOLUME)
        {
            return Some(Collision::MountPath {
                container: c.name.clone(),
                volume: m.name.clone(),
            });
        }
        if let Some(e) = c
            .env
            .iter()
            .flatten()
            .find(|e| settings.contains(&e.name.as_str()) && !env_is_ours(e, rendered))
        {
            return Some(Collision::Setting {
                container: c.name.clone(),
                env: e.name.clone(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(uid: &str, name: &str, target: &str) -> ClientCertificateSet {
        serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": name, "namespace": "n", "uid": uid},
            "spec": {"app": {"deployment": target}, "certificates": []}
        }))
        .unwrap()
    }

    fn deployment(meta: serde_json::Value, containers: serde_json::Value) -> Workload {
        let mut v = json!({"metadata": {"name": "app"}, "spec": {"selector": {},
            "template": {"spec": {"containers": containers}}}});
        for (k, val) in meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        Workload::from_value(crate::resource::WorkloadKind::Deployment, v).unwrap()
    }

    #[test]
    fn a_claim_is_held_by_uid_and_a_legacy_claim_by_name() {
        let s = set("u1", "s", "app");
        let by_uid = deployment(
            json!({"labels": {LABEL_SET_UID: "u1"}, "annotations": {ANN_SET: "renamed"}}),
            json!([]),
        );
        assert!(claimed_by(&s, &by_uid));
        let other_uid = deployment(
            json!({"labels": {LABEL_SET_UID: "u2"}, "annotations": {ANN_SET: "s"}}),
            json!([]),
        );
        assert!(!claimed_by(&s, &other_uid), "same name, another set's uid");
        let legacy = deployment(json!({"annotations": {ANN_SET: "s"}}), json!([]));
        assert!(claimed_by(&s, &legacy));
        assert!(!claimed_by(&s, &deployment(json!({}), json!([]))));
    }

    #[test]
    fn a_copied_claim_or_a_claim_of_a_set_now_elsewhere_is_not_in_force() {
        let d = deployment(json!({}), json!([]));
        let claim = Claim {
            uid: Some("u2".into()),
            name: Some("other".into()),
        };
        assert!(claim_in_force(&claim, Some(&set("u2", "other", "app")), &d));
        assert!(!claim_in_force(
            &claim,
            Some(&set("u2", "other", "copy-source")),
            &d
        ));
        assert!(!claim_in_force(
            &claim,
            Some(&set("u3", "other", "app")),
            &d
        ));
        assert!(!claim_in_force(&claim, None, &d));
    }

    #[test]
    fn the_apps_own_mount_volume_or_setting_is_a_collision_certpins_own_is_not() {
        let ours = deployment(
            json!({}),
            json!([{"name": "m", "image": "i",
                "volumeMounts": [{"name": VOLUME, "mountPath": "/etc/certpin/client-certificates"}],
                "env": [{"name": "MXRUNTIME_ClientCertificates",
                         "valueFrom": {"configMapKeyRef": {"name": "s-certpin", "key": "ClientCertificates"}}}]}]),
        );
        let m = vec!["m".to_string()];
        assert_eq!(
            collision(
                &ours,
                &m,
                "/etc/certpin/client-certificates/",
                "s-certpin",
                &SETTING_ENV
            ),
            None
        );
        let mount = deployment(
            json!({}),
            json!([{"name": "m", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]),
        );
        assert_eq!(
            collision(&mount, &m, "/data/", "s-certpin", &SETTING_ENV),
            Some(Collision::MountPath {
                container: "m".into(),
                volume: "data".into()
            })
        );
        assert_eq!(
            collision(&mount, &[], "/data", "s-certpin", &SETTING_ENV),
            None
        );
        // The same place spelled otherwise, on either side.
        for spelled in ["/./data", "//data", "/x/../data", "/data/."] {
            assert!(
                matches!(
                    collision(&mount, &m, spelled, "s-certpin", &SETTING_ENV),
                    Some(Collision::MountPath { .. })
                ),
                "{spelled}"
            );
        }
        let odd = deployment(
            json!({}),
            json!([{"name": "m", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/etc//certpin/./client-certificates/"}]}]),
        );
        assert!(matches!(
            collision(
                &odd,
                &m,
                "/etc/certpin/client-certificates",
                "s-certpin",
                &SETTING_ENV
            ),
            Some(Collision::MountPath { .. })
        ));
        let literal = deployment(
            json!({}),
            json!([{"name": "m", "image": "i", "env": [{"name": "MXRUNTIME_ClientCertificates", "value": "/x.pfx"}]}]),
        );
        assert!(matches!(
            collision(&literal, &m, "/etc/c", "s-certpin", &SETTING_ENV),
            Some(Collision::Setting { .. })
        ));
        let mut volume = ours.clone();
        volume.pod_spec_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": VOLUME, "emptyDir": {}})).unwrap(),
        ]);
        assert_eq!(
            collision(&volume, &m, "/etc/c", "s-certpin", &SETTING_ENV),
            Some(Collision::VolumeName)
        );
    }

    #[test]
    fn wired_containers_are_those_with_the_mount_or_one_of_certpins_settings() {
        let d = deployment(
            json!({}),
            json!([{"name": "a", "image": "i", "volumeMounts": [{"name": VOLUME, "mountPath": "/x"}]},
                   {"name": "b", "image": "i", "env": [{"name": "MXRUNTIME_ClientCertificatePasswords",
                       "valueFrom": {"secretKeyRef": {"name": "s-certpin", "key": "ClientCertificatePasswords"}}}]},
                   {"name": "c", "image": "i", "env": [{"name": "MXRUNTIME_CACertificates", "value": "/own.crt"}]},
                   {"name": "d", "image": "i"}]),
        );
        assert_eq!(
            wired_containers(&d, "s-certpin")
                .into_iter()
                .collect::<Vec<_>>(),
            ["a", "b"],
            "c sets a setting of its own"
        );
    }
}
