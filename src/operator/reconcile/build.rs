//! Step 3 (pure, no client): the rendered ConfigMap and Secret and the
//! Deployment fragment certpin applies.
//!
//! Re-encoding is random (salts, IVs, passwords), so the input hash covers
//! what the files are made from, and an unchanged input reuses the previous
//! encoding: re-encoding alone never restarts an app.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::names::{self, *};
use super::validate::ValidCertificate;
use crate::operator::error::{Error, Result};
use crate::pkcs12;
use crate::resource::{ClientCertificateSet, RestartStrategy};
use crate::settings::{CertificateFile, render};

/// What certpin applies for one set.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub name: String,
    pub config_map: BTreeMap<String, String>,
    /// Secret data: the passwords setting and the files. Secret: never log.
    pub secret: BTreeMap<String, ByteString>,
    pub input_hash: String,
    /// Hash of the rendered content; goes on the pod template.
    pub config_hash: String,
    /// Whether this rendering reused the previous encoding.
    pub reused: bool,
    /// When this content was first rendered (RFC 3339).
    pub rendered_at: String,
}

/// Hash of everything the rendered content is derived from.
pub fn input_hash(set: &ClientCertificateSet, valid: &[ValidCertificate]) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(b"certpin-input-v1");
    field(format!("{:?}", set.spec.profile).as_bytes());
    field(set.spec.mount_path.as_bytes());
    for c in valid {
        field(c.name.as_bytes());
        field(&c.input_key);
        for p in &c.pins {
            field(p.as_bytes());
        }
        field(b"\0pins-end");
    }
    for n in &set.spec.no_certificate_for {
        field(n.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Hash of rendered content: what the pods actually see.
pub fn config_hash(
    config_map: &BTreeMap<String, String>,
    secret: &BTreeMap<String, ByteString>,
) -> String {
    let mut h = Sha256::new();
    for (k, v) in config_map {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.update(b"\0secret");
    for (k, ByteString(v)) in secret {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(&h.finalize()[..16])
}

/// Renders the ConfigMap and Secret, reusing `previous` (the rendered Secret
/// as it is in the cluster) when it was made from the same inputs.
pub fn render_objects(
    set: &ClientCertificateSet,
    valid: &[ValidCertificate],
    previous: Option<&Secret>,
    now: &str,
) -> Result<Rendered> {
    let input_hash = input_hash(set, valid);
    let reusable = previous.filter(|s| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_INPUT_HASH))
            == Some(&input_hash)
            && valid.iter().all(|c| {
                s.data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&file_name(&c.name)))
            })
    });
    let mut secret = BTreeMap::new();
    let mut files = Vec::new();
    let reused = reusable.is_some();
    let previous_passwords: Vec<String> = reusable
        .and_then(|s| s.data.as_ref()?.get(KEY_PASSWORDS))
        .map(|ByteString(b)| {
            String::from_utf8_lossy(b)
                .split(',')
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for (i, c) in valid.iter().enumerate() {
        let (pkcs12, password) = match (reusable, previous_passwords.get(i)) {
            (Some(prev), Some(pw)) => {
                let data = prev
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&file_name(&c.name)))
                    .cloned();
                (
                    data.ok_or(Error::MissingField("rendered file"))?,
                    pw.clone(),
                )
            }
            _ => {
                let enc = pkcs12::encode(&c.decoded, &c.name, set.spec.profile)?;
                (ByteString(enc.pkcs12), enc.password.to_string())
            }
        };
        secret.insert(file_name(&c.name), pkcs12);
        files.push(CertificateFile {
            name: c.name.clone(),
            path: names::file_path(set, &c.name),
            password,
            pins: c.pins.clone(),
        });
    }
    let settings = render(&files, &set.spec.no_certificate_for)
        .map_err(|_| Error::MissingField("renderable settings"))?;
    let mut config_map = BTreeMap::new();
    config_map.insert(KEY_CERTIFICATES.to_string(), settings.certificates.clone());
    if let Some(u) = &settings.usages {
        config_map.insert(KEY_USAGES.to_string(), u.clone());
    }
    secret.insert(
        KEY_PASSWORDS.to_string(),
        ByteString(settings.passwords.clone().into_bytes()),
    );
    let config_hash = config_hash(&config_map, &secret);
    let rendered_at = reusable
        .and_then(|s| {
            s.metadata
                .annotations
                .as_ref()?
                .get(ANN_RENDERED_AT)
                .cloned()
        })
        .unwrap_or_else(|| now.to_string());
    Ok(Rendered {
        rendered_at,
        name: names::rendered(set),
        config_map,
        secret,
        input_hash,
        config_hash,
        reused,
    })
}

fn owner_reference(set: &ClientCertificateSet) -> Value {
    json!({
        "apiVersion": "certpin.dev/v1alpha1",
        "kind": "ClientCertificateSet",
        "name": set_name(set),
        "uid": set.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn labels(set: &ClientCertificateSet) -> Value {
    json!({ LABEL_SET: names::label_value(set_name(set)), LABEL_MANAGED_BY: "certpin" })
}

/// The ConfigMap, as a server-side apply body.
pub fn config_map_object(set: &ClientCertificateSet, ns: &str, r: &Rendered) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": r.name, "namespace": ns, "labels": labels(set),
            "ownerReferences": [owner_reference(set)],
        },
        "data": r.config_map,
    })
}

/// The Secret, as a server-side apply body.
pub fn secret_object(set: &ClientCertificateSet, ns: &str, r: &Rendered) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": r.name, "namespace": ns, "labels": labels(set),
            "annotations": { ANN_INPUT_HASH: r.input_hash, ANN_RENDERED_AT: r.rendered_at },
            "ownerReferences": [owner_reference(set)],
        },
        "data": r.secret,
    })
}

/// The rendered objects as server-side apply bodies, each only when the
/// live object does not already hold it (an idle pass writes nothing).
pub fn writes(
    set: &ClientCertificateSet,
    ns: &str,
    r: &Rendered,
    live_cm: Option<&k8s_openapi::api::core::v1::ConfigMap>,
    live_secret: Option<&Secret>,
) -> super::execute::RenderedWrites {
    let holds =
        |live: Option<Value>, body: &Value| live.is_some_and(|l| super::apply::contains(&l, body));
    let cm = config_map_object(set, ns, r);
    let secret = secret_object(set, ns, r);
    let cm_written = holds(live_cm.and_then(|c| serde_json::to_value(c).ok()), &cm);
    let secret_written = r.reused
        && holds(
            live_secret.and_then(|s| serde_json::to_value(s).ok()),
            &secret,
        );
    super::execute::RenderedWrites {
        name: r.name.clone(),
        config_map: (!cm_written).then_some(cm),
        secret: (!secret_written).then_some(secret),
    }
}

/// The containers certpin wires: the named ones, or all.
pub fn target_containers(
    set: &ClientCertificateSet,
    existing: &[String],
) -> std::result::Result<Vec<String>, String> {
    if set.spec.app.containers.is_empty() {
        return Ok(existing.to_vec());
    }
    for c in &set.spec.app.containers {
        if !existing.contains(c) {
            return Err(c.clone());
        }
    }
    Ok(set.spec.app.containers.clone())
}

/// The Deployment fragment certpin owns: the volume, the read-only mount and
/// the env vars (valueFrom, never literal) on the target containers, the
/// pod-template hash annotation, and the annotation naming the set.
pub fn deployment_fragment(
    set: &ClientCertificateSet,
    ns: &str,
    deployment: &str,
    r: &Rendered,
    containers: &[String],
    template_hash: &str,
) -> Value {
    let mut env = vec![
        json!({"name": "MXRUNTIME_ClientCertificates",
               "valueFrom": {"configMapKeyRef": {"name": r.name, "key": KEY_CERTIFICATES}}}),
        json!({"name": "MXRUNTIME_ClientCertificatePasswords",
               "valueFrom": {"secretKeyRef": {"name": r.name, "key": KEY_PASSWORDS}}}),
    ];
    if r.config_map.contains_key(KEY_USAGES) {
        env.push(json!({"name": "MXRUNTIME_ClientCertificateUsages",
                        "valueFrom": {"configMapKeyRef": {"name": r.name, "key": KEY_USAGES}}}));
    }
    let items: Vec<Value> = r
        .secret
        .keys()
        .filter(|k| k.ends_with(".pfx"))
        .map(|k| json!({"key": k, "path": k}))
        .collect();
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "env": env,
                "volumeMounts": [{"name": VOLUME, "mountPath": set.spec.mount_path, "readOnly": true}],
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment, "namespace": ns,
            "annotations": {ANN_SET: set_name(set)},
            "labels": {LABEL_SET_UID: set.metadata.uid.as_deref().unwrap_or_default()},
        },
        "spec": {"template": {
            "metadata": {"annotations": {ANN_CONFIG_HASH: template_hash}},
            "spec": {
                // 0444: the files are encrypted, and the app may run as any
                // user; its password is only in the app's environment.
                "volumes": [{"name": VOLUME, "secret": {"secretName": r.name, "items": items, "defaultMode": 0o444}}],
                "containers": containers,
            }
        }}
    })
}

/// The hash to put on the pod template: the new one, except that Manual
/// leaves a wired Deployment's template as it is (no rollout).
pub fn template_hash(strategy: RestartStrategy, live: Option<&str>, new: &str) -> String {
    match (strategy, live) {
        (RestartStrategy::Manual, Some(live)) => live.to_string(),
        _ => new.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkcs12::decode_pkcs12;
    use std::sync::Arc;

    fn set(profile: &str) -> ClientCertificateSet {
        let mut s: ClientCertificateSet = serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "prod", "namespace": "shop", "uid": "u-1"},
            "spec": {"app": {"deployment": "shop"}, "profile": profile,
                     "certificates": [{"name": "a", "tls": {"secretName": "a"}, "pinTo": ["x.example"]}],
                     "noCertificateFor": ["M.S"]}
        }))
        .unwrap();
        s.metadata.namespace = Some("shop".into());
        s
    }

    fn valid() -> Vec<ValidCertificate> {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pkcs12/openssl-ec256-modern.p12"
        ))
        .unwrap();
        vec![ValidCertificate {
            name: "a".into(),
            decoded: Arc::new(decode_pkcs12(&data, "changeit").unwrap()),
            input_key: pkcs12::content_key(&data, "changeit"),
            pins: vec!["x.example".into()],
        }]
    }

    fn as_secret(body: &Value) -> Secret {
        serde_json::from_value(body.clone()).unwrap()
    }

    #[test]
    fn unchanged_inputs_reuse_the_encoding_so_the_hash_is_stable() {
        let (s, v) = (set("Modern"), valid());
        let first = render_objects(&s, &v, None, "t0").unwrap();
        assert!(!first.reused);
        let again = render_objects(
            &s,
            &v,
            Some(&as_secret(&secret_object(&s, "shop", &first))),
            "t1",
        )
        .unwrap();
        assert!(again.reused);
        assert_eq!(again.config_hash, first.config_hash);
        assert_eq!(again.secret, first.secret);
        assert_eq!(again.rendered_at, "t0");
        // A fresh encoding of the same input differs (random salts and password).
        let fresh = render_objects(&s, &v, None, "t2").unwrap();
        assert_ne!(fresh.config_hash, first.config_hash);
        // A changed input is re-encoded.
        let changed = render_objects(
            &set("Legacy"),
            &v,
            Some(&as_secret(&secret_object(&s, "shop", &first))),
            "t3",
        )
        .unwrap();
        assert!(!changed.reused);
        assert_ne!(changed.input_hash, first.input_hash);
    }

    #[test]
    fn the_fragment_wires_env_from_references_and_a_read_only_mount() {
        let (s, v) = (set("Modern"), valid());
        let r = render_objects(&s, &v, None, "t0").unwrap();
        assert_eq!(
            r.config_map["ClientCertificates"],
            "/etc/certpin/client-certificates/a.pfx"
        );
        assert_eq!(
            r.config_map["ClientCertificateUsages"],
            r#"{ "x.example": "/etc/certpin/client-certificates/a.pfx", "M.S": "" }"#
        );
        let f = deployment_fragment(&s, "shop", "shop", &r, &["app".into()], &r.config_hash);
        let c = &f["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["volumeMounts"][0]["readOnly"], json!(true));
        for e in c["env"].as_array().unwrap() {
            assert!(
                e.get("value").is_none() && e.get("valueFrom").is_some(),
                "{e}"
            );
        }
        assert_eq!(
            f["spec"]["template"]["metadata"]["annotations"][ANN_CONFIG_HASH],
            json!(r.config_hash)
        );
        let items = &f["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"];
        assert_eq!(
            items,
            &json!([{"key": "a.pfx", "path": "a.pfx"}]),
            "the passwords key is not mounted"
        );
        let body = config_map_object(&s, "shop", &r).to_string();
        assert!(
            !body.contains(&*String::from_utf8_lossy(&r.secret[KEY_PASSWORDS].0)),
            "a password reached the ConfigMap"
        );
    }

    #[test]
    fn manual_keeps_the_live_template_hash() {
        assert_eq!(
            template_hash(RestartStrategy::Manual, Some("old"), "new"),
            "old"
        );
        assert_eq!(template_hash(RestartStrategy::Manual, None, "new"), "new");
        assert_eq!(
            template_hash(RestartStrategy::Rolling, Some("old"), "new"),
            "new"
        );
    }
}
