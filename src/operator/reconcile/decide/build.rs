//! Step 3 (pure, no client): the rendered ConfigMap and Secret and the
//! Deployment fragment certpin applies.
//!
//! Re-encoding is random (salts, IVs, passwords), so the input hash covers
//! what the files are made from, and an unchanged input reuses the previous
//! encoding: re-encoding alone never restarts an app.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::validate::ValidCertificate;
use crate::ca::CaCertificate;
use crate::names::{self, *};
use crate::operator::error::{Error, Result};
use crate::operator::reconcile::act::execute::RenderedWrites;
use crate::operator::reconcile::fragment;
use crate::pkcs12;
use crate::resource::{ClientCertificateSet, RestartStrategy, WorkloadKind};
use crate::settings::{CertificateFile, render};

/// What certpin applies for one set.
///
/// The files are named after their content (`<name>-<hash>.pfx`) and kept
/// in the Secret beside the passwords setting, mounted whole: a pod that
/// started before a rotation keeps the files its environment's passwords
/// open (the previous rendering's files stay in the Secret), and a rotation
/// needs no change of the volume, so Manual leaves the pod template alone.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The ConfigMap and the Secret.
    pub name: String,
    pub config_map: BTreeMap<String, String>,
    /// The passwords setting. Secret: never log.
    pub secret: BTreeMap<String, ByteString>,
    /// This rendering's files, by key (the file name in the pod).
    pub files: BTreeMap<String, ByteString>,
    /// The previous rendering's files, kept for pods that still use them.
    pub retained: BTreeMap<String, ByteString>,
    /// This rendering's file keys, in certificate order.
    pub keys: Vec<String>,
    /// This rendering's CA file keys, in the order of CACertificates.
    pub ca_keys: Vec<String>,
    /// Each CA certificate's path in the pod, by fingerprint.
    pub ca_paths: BTreeMap<String, String>,
    /// Each certificate's path in the pod, by certificate name.
    pub paths: BTreeMap<String, String>,
    pub input_hash: String,
    /// Hash of the rendered content; goes on the pod template.
    pub config_hash: String,
    /// Whether this rendering reused the previous encoding.
    pub reused: bool,
    /// When this content was first rendered (RFC 3339).
    pub rendered_at: String,
}

/// What certpin rendered before, as it is in the cluster: the Secret with
/// the files and their passwords.
#[derive(Clone, Copy, Default)]
pub struct Earlier<'a> {
    pub secret: Option<&'a Secret>,
}

/// Hash of everything the rendered content is derived from. The CA
/// certificates count too: a change of trust alone is new content, with a
/// new rendering time (Manual's "restart due" compares pods with it).
pub fn input_hash(
    set: &ClientCertificateSet,
    valid: &[ValidCertificate],
    cas: &[CaCertificate],
) -> String {
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
    if !cas.is_empty() {
        field(b"\0ca");
        for c in cas {
            field(&c.der);
        }
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

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a String> {
    s.metadata.annotations.as_ref()?.get(key)
}

/// The file keys the Secret lists under `key` (comma-separated).
fn listed(s: &Secret, key: &str) -> Vec<String> {
    annotation(s, key)
        .map(|v| {
            v.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn data_of(s: &Secret, key: &str) -> Option<ByteString> {
    s.data.as_ref()?.get(key).cloned()
}

/// Whether the earlier rendering was made from these inputs and can be
/// reused whole.
pub fn can_reuse(earlier: Earlier, input_hash: &str, count: usize) -> bool {
    reusable(earlier, input_hash, count).is_some()
}

/// The previous encoding, when it was made from the same inputs and is
/// whole: each certificate's file (in order) with its password.
fn reusable(earlier: Earlier, input_hash: &str, count: usize) -> Option<Vec<Encoded>> {
    let files = earlier.secret?;
    if annotation(files, ANN_INPUT_HASH).map(String::as_str) != Some(input_hash) {
        return None;
    }
    if count == 0 {
        // CA certificates alone: nothing encoded, nothing to reuse but the
        // rendering time.
        return Some(Vec::new());
    }
    let keys = listed(files, ANN_FILES);
    let ByteString(pw) = data_of(files, KEY_PASSWORDS)?;
    let passwords: Vec<String> = String::from_utf8_lossy(&pw)
        .split(',')
        .map(str::to_string)
        .collect();
    if keys.len() != count || passwords.len() != count {
        return None;
    }
    keys.into_iter()
        .zip(passwords)
        .map(|(k, p)| Some((k.clone(), data_of(files, &k)?, p)))
        .collect()
}

/// Renders the settings and the files, reusing the earlier encoding when
/// it was made from the same inputs; the earlier rendering's files are
/// retained (and older ones dropped) when the content changes.
pub fn render_objects(
    set: &ClientCertificateSet,
    valid: &[ValidCertificate],
    cas: &[CaCertificate],
    earlier: Earlier,
    now: &str,
) -> Result<Rendered> {
    let input_hash = input_hash(set, valid, cas);
    let reuse = reusable(earlier, &input_hash, valid.len());
    let reused = reuse.is_some();
    let encoded = encode(set, valid, reuse, earlier)?;
    let client = client_files(set, valid, encoded)?;
    let (mut config_map, secret) = client.settings;
    let mut files = client.files;
    let (ca_keys, ca_paths) = trust_files(set, cas, &mut files);
    if !ca_keys.is_empty() {
        let paths: Vec<String> = ca_keys.iter().map(|k| names::file_path(set, k)).collect();
        config_map.insert(KEY_CA_CERTIFICATES.to_string(), paths.join(","));
    }
    let mut hashed = secret.clone();
    hashed.extend(files.clone());
    let config_hash = config_hash(&config_map, &hashed);
    let retained = retained(earlier, reused, &files);
    let rendered_at = earlier
        .secret
        .filter(|_| reused)
        .and_then(|s| annotation(s, ANN_RENDERED_AT).cloned())
        .unwrap_or_else(|| now.to_string());
    Ok(Rendered {
        rendered_at,
        name: names::rendered(set),
        config_map,
        secret,
        files,
        retained,
        keys: client.keys,
        ca_keys,
        ca_paths,
        paths: client.paths,
        input_hash,
        config_hash,
        reused,
    })
}

/// The client certificates' files, their keys and paths in order, and
/// the settings that name them (ConfigMap, Secret).
struct ClientFiles {
    files: BTreeMap<String, ByteString>,
    keys: Vec<String>,
    paths: BTreeMap<String, String>,
    settings: (BTreeMap<String, String>, BTreeMap<String, ByteString>),
}

fn client_files(
    set: &ClientCertificateSet,
    valid: &[ValidCertificate],
    encoded: Vec<Encoded>,
) -> Result<ClientFiles> {
    let mut out = ClientFiles {
        files: BTreeMap::new(),
        keys: Vec::new(),
        paths: BTreeMap::new(),
        settings: Default::default(),
    };
    let mut certificate_files = Vec::new();
    for (c, (key, data, password)) in valid.iter().zip(encoded) {
        let path = names::file_path(set, &key);
        out.paths.insert(c.name.clone(), path.clone());
        certificate_files.push(CertificateFile {
            name: c.name.clone(),
            path,
            password,
            pins: c.pins.clone(),
        });
        out.keys.push(key.clone());
        out.files.insert(key, data);
    }
    let settings = render(&certificate_files, &set.spec.no_certificate_for).map_err(|p| {
        let messages: Vec<String> = p.into_iter().map(|p| p.message).collect();
        Error::Render(messages.join("; "))
    })?;
    let (config_map, secret) = &mut out.settings;
    // A set of CA certificates alone sets no client certificate setting.
    if !valid.is_empty() {
        config_map.insert(KEY_CERTIFICATES.to_string(), settings.certificates.clone());
        let passwords = ByteString(settings.passwords.clone().into_bytes());
        secret.insert(KEY_PASSWORDS.to_string(), passwords);
    }
    if let Some(u) = &settings.usages {
        config_map.insert(KEY_USAGES.to_string(), u.clone());
    }
    Ok(out)
}

/// The CA certificates' files (one certificate each, each once) added to
/// `files`: their keys in order, and each certificate's path by fingerprint.
fn trust_files(
    set: &ClientCertificateSet,
    cas: &[CaCertificate],
    files: &mut BTreeMap<String, ByteString>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut keys = Vec::new();
    let mut paths = BTreeMap::new();
    for ca in cas {
        let c = ca;
        if paths.contains_key(&c.sha256_fingerprint) {
            continue;
        }
        let key = c.file_name();
        paths.insert(c.sha256_fingerprint.clone(), names::file_path(set, &key));
        files.insert(key.clone(), ByteString(c.pem().into_bytes()));
        keys.push(key);
    }
    (keys, paths)
}

type Encoded = (String, ByteString, String);

/// The password every file of the set is encoded with: the earlier
/// rendering's, so that the password setting stays the same across
/// renderings. The previous rendering's files stay in the Secret, so
/// whichever of the two renderings' file lists a pod reads beside the
/// passwords (the ConfigMap is written after the Secret), its passwords
/// open them.
fn set_password(earlier: Earlier) -> Zeroizing<String> {
    earlier
        .secret
        .and_then(|s| data_of(s, KEY_PASSWORDS))
        .and_then(|ByteString(b)| String::from_utf8(b).ok())
        .and_then(|all| {
            let first = all.split(',').next()?.to_string();
            (!first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric())).then_some(first)
        })
        .map(Zeroizing::new)
        .unwrap_or_else(pkcs12::generate_password)
}

/// Each certificate's file key, file and password: the earlier encoding's
/// when it is reusable, a fresh one (with the set's password) otherwise.
fn encode(
    set: &ClientCertificateSet,
    valid: &[ValidCertificate],
    reuse: Option<Vec<Encoded>>,
    earlier: Earlier,
) -> Result<Vec<Encoded>> {
    let mut encoded = Vec::with_capacity(valid.len());
    for (i, c) in valid.iter().enumerate() {
        match reuse.as_ref().and_then(|r| r.get(i)) {
            Some(e) => encoded.push(e.clone()),
            None => {
                // Known certificates (not decoded again) always reuse.
                let decoded = c.decoded.as_ref().ok_or_else(|| {
                    Error::Render(format!("{}: no decoded content to encode", c.name))
                })?;
                let enc =
                    pkcs12::encode_with(decoded, &c.name, set.spec.profile, set_password(earlier))?;
                let key = names::file_name(&c.name, &enc.pkcs12);
                encoded.push((key, ByteString(enc.pkcs12), enc.password.to_string()));
            }
        }
    }
    Ok(encoded)
}

/// The files kept for running pods: what the earlier rendering used (on a
/// reuse, what it kept itself), but for those this rendering has too.
fn retained(
    earlier: Earlier,
    reused: bool,
    files: &BTreeMap<String, ByteString>,
) -> BTreeMap<String, ByteString> {
    let keep_key = if reused {
        ANN_PREVIOUS_FILES
    } else {
        ANN_FILES
    };
    earlier
        .secret
        .map(|s| {
            // CA files are not encoded, so not reused: the earlier ones are
            // kept whether or not the client certificates were re-encoded.
            listed(s, keep_key)
                .into_iter()
                .chain(listed(s, ANN_CA_FILES))
                .filter(|k| !files.contains_key(k))
                .filter_map(|k| Some((k.clone(), data_of(s, &k)?)))
                .collect()
        })
        .unwrap_or_default()
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

/// Stakater Reloader's annotation (its `--ignore-annotation` default) for
/// "changes here restart nothing": certpin restarts the app itself, by
/// its set's strategy, so an app Reloader watches in `auto` mode would
/// otherwise restart twice per rotation, and a `Manual` set's app once.
/// Metadata only: the template hash (`config_hash`) does not cover it, so
/// an upgrade that adds it rewrites the objects and restarts nothing.
pub const RELOADER_IGNORE: &str = "reloader.stakater.com/ignore";

/// The ConfigMap, as a server-side apply body.
pub fn config_map_object(set: &ClientCertificateSet, ns: &str, r: &Rendered) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": r.name, "namespace": ns, "labels": labels(set),
            "annotations": {RELOADER_IGNORE: "true"},
            "ownerReferences": [owner_reference(set)],
        },
        "data": r.config_map,
    })
}

/// The Secret: the passwords setting and the files (this rendering's and
/// the retained ones), as a server-side apply body; what its annotations
/// list says which files are which.
pub fn secret_object(set: &ClientCertificateSet, ns: &str, r: &Rendered) -> Value {
    let mut data = r.retained.clone();
    data.extend(r.files.clone());
    data.extend(r.secret.clone());
    let retained: Vec<&str> = r.retained.keys().map(String::as_str).collect();
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": r.name, "namespace": ns, "labels": labels(set),
            "annotations": {
                ANN_INPUT_HASH: r.input_hash,
                ANN_RENDERED_AT: r.rendered_at,
                // In certificate order, as ClientCertificatePasswords.
                ANN_FILES: r.keys.join(","),
                ANN_PREVIOUS_FILES: retained.join(","),
                RELOADER_IGNORE: "true",
            },
            "ownerReferences": [owner_reference(set)],
        },
        "data": data,
    });
    // Only with CA certificates: a set without them renders exactly what
    // earlier versions did, so an upgrade writes nothing.
    if !r.ca_keys.is_empty() {
        body["metadata"]["annotations"][ANN_CA_FILES] = json!(r.ca_keys.join(","));
    }
    body
}

/// The rendered objects as server-side apply bodies, each only when the
/// live object does not already hold it (an idle pass writes nothing).
pub fn writes(
    set: &ClientCertificateSet,
    ns: &str,
    r: &Rendered,
    live_cm: Option<&ConfigMap>,
    earlier: Earlier,
) -> RenderedWrites {
    fn unless_held<T: serde::Serialize>(live: Option<&T>, body: Value) -> Option<Value> {
        let held = live
            .and_then(|l| serde_json::to_value(l).ok())
            .is_some_and(|l| fragment::contains(&l, &body));
        (!held).then_some(body)
    }
    // A fresh encoding is written even where the live object looks alike.
    let live_secret = earlier.secret.filter(|_| r.reused);
    RenderedWrites {
        name: r.name.clone(),
        config_map: unless_held(live_cm, config_map_object(set, ns, r)),
        secret: unless_held(live_secret, secret_object(set, ns, r)),
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

/// The settings a rendering sets, as `(env var, key, in the Secret)`:
/// those it has content for (a set may hold only CA certificates).
fn settings_of(r: &Rendered) -> Vec<(&'static str, &'static str, bool)> {
    let mut out = Vec::new();
    if r.config_map.contains_key(KEY_CERTIFICATES) {
        out.push(("MXRUNTIME_ClientCertificates", KEY_CERTIFICATES, false));
        out.push(("MXRUNTIME_ClientCertificatePasswords", KEY_PASSWORDS, true));
    }
    if r.config_map.contains_key(KEY_USAGES) {
        out.push(("MXRUNTIME_ClientCertificateUsages", KEY_USAGES, false));
    }
    if r.config_map.contains_key(KEY_CA_CERTIFICATES) {
        out.push(("MXRUNTIME_CACertificates", KEY_CA_CERTIFICATES, false));
    }
    out
}

/// The environment variables a rendering wires.
pub fn wired_env(r: &Rendered) -> Vec<&'static str> {
    settings_of(r).into_iter().map(|(env, _, _)| env).collect()
}

/// The workload fragment certpin owns: the volume, the read-only mount and
/// the env vars (valueFrom, never literal) on the target containers, the
/// pod-template hash annotation, and the annotation naming the set. The
/// same for every kind: all of it is in the pod template and the metadata.
pub fn workload_fragment(
    set: &ClientCertificateSet,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    r: &Rendered,
    containers: &[String],
    template_hash: &str,
) -> Value {
    let env: Vec<Value> = settings_of(r)
        .into_iter()
        .map(|(env, key, secret)| {
            let source = if secret {
                "secretKeyRef"
            } else {
                "configMapKeyRef"
            };
            json!({"name": env, "valueFrom": {source: {"name": r.name, "key": key}}})
        })
        .collect();
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "env": env,
                "volumeMounts": [{"name": VOLUME, "mountPath": names::mount_path(set), "readOnly": true}],
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": kind.as_str(),
        "metadata": {
            "name": name, "namespace": ns,
            "annotations": {ANN_SET: set_name(set)},
            "labels": {LABEL_SET_UID: set.metadata.uid.as_deref().unwrap_or_default()},
        },
        "spec": {"template": {
            "metadata": {"annotations": {ANN_CONFIG_HASH: template_hash}},
            "spec": {
                // The Secret whole: a rotation adds files without changing
                // the volume. Its passwords file gives a reader of the volume
                // nothing the app's own environment does not hold. 0444: the
                // app may run as any user.
                "volumes": [{"name": VOLUME, "secret": {"secretName": r.name, "defaultMode": 0o444}}],
                "containers": containers,
            }
        }}
    })
}

/// Records when certpin rolled the workload's pods (`at`), or keeps the
/// record it has (an apply that leaves out a field certpin owns removes it).
pub fn record_restart(fragment: &mut Value, at: Option<&str>) {
    if let Some(at) = at {
        fragment["metadata"]["annotations"][ANN_RESTARTED_AT] = json!(at);
    }
}

/// The hash to put on the pod template: the new one, except that a wired
/// template stays as it is (no rollout) under Manual, and when its pods
/// already run the rendering (a restart by the user, or by the kubelet).
pub fn template_hash(
    strategy: RestartStrategy,
    live: Option<&str>,
    new: &str,
    pods_run_it: bool,
) -> String {
    match live {
        Some(live) if strategy == RestartStrategy::Manual || pods_run_it => live.to_string(),
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
            decoded: Some(Arc::new(decode_pkcs12(&data, "changeit").unwrap())),
            not_after: chrono::Utc::now() + chrono::Duration::days(365),
            input_key: pkcs12::content_key(&data, "changeit"),
            pins: vec!["x.example".into()],
        }]
    }

    fn as_secret(body: &Value) -> Secret {
        serde_json::from_value(body.clone()).unwrap()
    }

    /// The Secret as the API server would return it after applying.
    fn applied(s: &ClientCertificateSet, r: &Rendered) -> Secret {
        as_secret(&secret_object(s, "shop", r))
    }

    fn earlier(secret: &Secret) -> Earlier<'_> {
        Earlier {
            secret: Some(secret),
        }
    }

    #[test]
    fn unchanged_inputs_reuse_the_encoding_so_the_hash_is_stable() {
        let (s, v) = (set("Modern"), valid());
        let first = render_objects(&s, &v, &[], Earlier::default(), "t0").unwrap();
        assert!(!first.reused);
        let live = applied(&s, &first);
        let again = render_objects(&s, &v, &[], earlier(&live), "t1").unwrap();
        assert!(again.reused);
        assert_eq!(again.config_hash, first.config_hash);
        assert_eq!((&again.secret, &again.files), (&first.secret, &first.files));
        assert!(again.retained.is_empty());
        assert_eq!(again.rendered_at, "t0");
        // A fresh encoding of the same input differs (random salts and password).
        let fresh = render_objects(&s, &v, &[], Earlier::default(), "t2").unwrap();
        assert_ne!(fresh.config_hash, first.config_hash);
        // A changed input is re-encoded.
        let changed = render_objects(&set("Legacy"), &v, &[], earlier(&live), "t3").unwrap();
        assert!(!changed.reused);
        assert_ne!(changed.input_hash, first.input_hash);
    }

    #[test]
    fn new_content_gets_new_file_names_and_the_previous_files_stay_one_rendering() {
        let (s, v) = (set("Modern"), valid());
        let first = render_objects(&s, &v, &[], Earlier::default(), "t0").unwrap();
        let key = |r: &Rendered| r.keys[0].clone();
        assert!(key(&first).starts_with("a-") && key(&first).ends_with(".pfx"));
        let live = applied(&s, &first);
        let second = render_objects(&set("Legacy"), &v, &[], earlier(&live), "t1").unwrap();
        assert_ne!(key(&second), key(&first), "new content, new name");
        assert_eq!(second.retained.keys().collect::<Vec<_>>(), [&key(&first)]);
        assert_eq!(second.retained[&key(&first)], first.files[&key(&first)]);
        // The Secret holds both and the passwords; its annotations say
        // which file is which.
        let body = secret_object(&s, "shop", &second);
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(annotations[ANN_FILES], json!(key(&second)));
        assert_eq!(annotations[ANN_PREVIOUS_FILES], json!(key(&first)));
        let data = body["data"].as_object().unwrap();
        assert_eq!(data.len(), 3);
        assert!(data.contains_key(KEY_PASSWORDS));
        // A third rendering drops the first one's files.
        let live = applied(&set("Legacy"), &second);
        let third = render_objects(&s, &v, &[], earlier(&live), "t2").unwrap();
        assert_eq!(third.retained.keys().collect::<Vec<_>>(), [&key(&second)]);
        // An unchanged pass keeps what is retained.
        let live = applied(&s, &third);
        let same = render_objects(&s, &v, &[], earlier(&live), "t3").unwrap();
        assert!(same.reused);
        assert_eq!(same.retained.keys().collect::<Vec<_>>(), [&key(&second)]);
    }

    #[test]
    fn the_fragment_wires_env_from_references_and_a_read_only_mount() {
        let (s, v) = (set("Modern"), valid());
        let r = render_objects(&s, &v, &[], Earlier::default(), "t0").unwrap();
        let path = format!("/etc/certpin/client-certificates/{}", r.keys[0]);
        assert_eq!(r.config_map["ClientCertificates"], path);
        assert_eq!(
            r.config_map["ClientCertificateUsages"],
            format!(r#"{{ "x.example": "{path}", "M.S": "" }}"#)
        );
        let f = workload_fragment(
            &s,
            "shop",
            WorkloadKind::Deployment,
            "shop",
            &r,
            &["app".into()],
            &r.config_hash,
        );
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
        assert_eq!(
            f["spec"]["template"]["spec"]["volumes"][0]["secret"],
            json!({"secretName": "prod-certpin", "defaultMode": 0o444}),
            "the Secret, whole"
        );
        assert!(r.secret.keys().eq([KEY_PASSWORDS]));
        let body = config_map_object(&s, "shop", &r).to_string();
        assert!(
            !body.contains(&*String::from_utf8_lossy(&r.secret[KEY_PASSWORDS].0)),
            "a password reached the ConfigMap"
        );
    }

    #[test]
    fn reloader_ignores_the_rendered_objects_and_the_hash_ignores_the_annotation() {
        let (s, v) = (set("Modern"), valid());
        let r = render_objects(&s, &v, &[], Earlier::default(), "t0").unwrap();
        for body in [
            config_map_object(&s, "shop", &r),
            secret_object(&s, "shop", &r),
        ] {
            assert_eq!(
                body["metadata"]["annotations"][RELOADER_IGNORE],
                json!("true")
            );
        }
        // A live Secret without it (an earlier version's) is reused as it is:
        // the same content, so the same hash on the pod template.
        let mut live = applied(&s, &r);
        live.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(RELOADER_IGNORE);
        let again = render_objects(&s, &v, &[], earlier(&live), "t1").unwrap();
        assert!(again.reused);
        assert_eq!(again.config_hash, r.config_hash);
    }

    #[test]
    fn manual_keeps_the_live_template_hash() {
        assert_eq!(
            template_hash(RestartStrategy::Manual, Some("old"), "new", false),
            "old"
        );
        assert_eq!(
            template_hash(RestartStrategy::Manual, None, "new", false),
            "new"
        );
        assert_eq!(
            template_hash(RestartStrategy::Rolling, Some("old"), "new", false),
            "new"
        );
    }

    #[test]
    fn a_template_whose_pods_already_run_the_rendering_is_left_as_it_is() {
        for strategy in [RestartStrategy::Rolling, RestartStrategy::StopStart] {
            assert_eq!(template_hash(strategy, Some("old"), "new", true), "old");
            assert_eq!(template_hash(strategy, None, "new", true), "new");
        }
    }
}
