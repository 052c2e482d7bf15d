//! End-to-end: the workload kinds (a Deployment and a StatefulSet), CA
//! trust checked by a JVM through a private CA, and workloads another
//! controller owns; the operator binary against the local control plane.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
const MOUNT: &str = "/etc/certpin/client-certificates";

async fn setup(prefix: &str) -> (TestNamespace, Operator) {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    let op = Operator::start(&ns.name);
    (ns, op)
}

fn stateful_set(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "mendix", "image": "example.invalid/mendix:1"}]}}
        }
    }))
    .unwrap()
}

/// Every ordinal runs the update revision and is ready.
fn stateful_set_rolled_out(s: Option<&StatefulSet>) -> bool {
    let Some(s) = s else { return false };
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &s.status else { return false };
    st.observed_generation >= s.metadata.generation
        && st.updated_replicas == Some(want)
        && st.ready_replicas == Some(want)
        && st.replicas == want
        && st.current_revision == st.update_revision
}

fn set_for(name: &str, app: serde_json::Value, spec: serde_json::Value) -> ClientCertificateSet {
    let mut spec = spec;
    spec["app"] = app;
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn create_set(ns: &TestNamespace, s: &ClientCertificateSet) {
    ns.api::<ClientCertificateSet>()
        .create(&PostParams::default(), s)
        .await
        .unwrap();
}

async fn wait_ready(ns: &TestNamespace, name: &str) -> ClientCertificateSet {
    wait_until(&ns.api(), name, T, "Ready", ready).await
}

fn env_names(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Vec<String> {
    template
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.env.iter().flatten())
        .map(|e| e.name.clone())
        .collect()
}

fn wired(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> bool {
    let spec = template.spec.as_ref();
    spec.is_some_and(|s| {
        s.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "certpin-client-certificates")
    }) && env_names(template)
        .iter()
        .any(|e| e.starts_with("MXRUNTIME_"))
}

fn sts_template(s: &StatefulSet) -> &k8s_openapi::api::core::v1::PodTemplateSpec {
    &s.spec.as_ref().unwrap().template
}

fn dep_template(d: &Deployment) -> &k8s_openapi::api::core::v1::PodTemplateSpec {
    &d.spec.as_ref().unwrap().template
}

#[tokio::test]
async fn a_stateful_set_is_wired_rolled_out_rotated_stop_started_and_unwired() {
    let (ns, _op) = setup("sts").await;
    put_cert_secret(&ns).await;
    let sts: Api<StatefulSet> = ns.api();
    sts.create(&PostParams::default(), &stateful_set("shop", 2))
        .await
        .unwrap();
    wait_until(&sts, "shop", T, "the pods", stateful_set_rolled_out).await;
    let certs = json!({"certificates": [{"name": "client",
        "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
        "password": {"secretName": "cert", "key": "password"}, "pinTo": ["api.example.com"]}]});
    create_set(&ns, &set_for("s", json!({"statefulSet": "shop"}), certs)).await;
    let s = wait_ready(&ns, "s").await;
    // Ready means rolled out: every ordinal runs the wired template.
    let live = sts.get("shop").await.unwrap();
    assert!(stateful_set_rolled_out(Some(&live)), "{:?}", live.status);
    assert!(wired(sts_template(&live)));
    let records = &s.status.as_ref().unwrap().workloads;
    assert_eq!(
        (records[0].kind.as_str(), records[0].name.as_str()),
        ("StatefulSet", "shop")
    );
    let first_revision = live.status.as_ref().unwrap().update_revision.clone();

    // A rotation rolls the StatefulSet again (its own rolling update).
    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    wait_until(
        &ns.api(),
        "s",
        T,
        "the rotation",
        ready_with_key("EC P-384"),
    )
    .await;
    let live = sts.get("shop").await.unwrap();
    assert_ne!(
        live.status.as_ref().unwrap().update_revision,
        first_revision
    );
    assert!(stateful_set_rolled_out(Some(&live)));

    // StopStart through its scale subresource: to zero, then back to 2.
    ns.api::<ClientCertificateSet>()
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restart": "StopStart"}})),
        )
        .await
        .unwrap();
    wait_ready(&ns, "s").await;
    put_p12(&ns, "cert", "openssl-ec256-modern.p12", b"changeit").await;
    wait_until(
        &ns.api(),
        "s",
        T,
        "the StopStart",
        ready_with_key("EC P-256"),
    )
    .await;
    let live = sts.get("shop").await.unwrap();
    assert_eq!(live.spec.as_ref().unwrap().replicas, Some(2));
    assert!(
        !live
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("certpin.dev/stop-start")
    );
    // The StatefulSet's own Events say why it restarted.
    wait_for(
        T,
        "a ClientCertificatesApplied Event about the StatefulSet",
        || async {
            support::kube::events_about(&ns, "shop")
                .await
                .iter()
                .any(|e| e.starts_with("ClientCertificatesApplied: ") && e.contains("StatefulSet"))
        },
    )
    .await;

    // Deleting the set removes the wiring.
    ns.api::<ClientCertificateSet>()
        .delete("s", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(&sts, "shop", T, "unwired", |s: Option<&StatefulSet>| {
        s.is_some_and(|s| !wired(sts_template(s)))
    })
    .await;
}

/// The rendered settings as the runtime reads them, by setting name, and the
/// files of the volume.
async fn rendered(
    ns: &TestNamespace,
    name: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, Vec<u8>>) {
    let cm: ConfigMap = ns.api().get(name).await.unwrap();
    let secret: Secret = ns.api().get(name).await.unwrap();
    let mut settings = cm.data.unwrap_or_default();
    let mut files = BTreeMap::new();
    for (k, v) in secret.data.unwrap_or_default() {
        if k == "ClientCertificatePasswords" {
            settings.insert(k, String::from_utf8(v.0).unwrap());
        } else {
            files.insert(k, v.0);
        }
    }
    (settings, files)
}

/// A JVM configured from nothing but the rendered settings calls a partner
/// whose server certificate comes from a private CA through an intermediate.
fn call_partner(
    settings: &BTreeMap<String, String>,
    files: &BTreeMap<String, Vec<u8>>,
    with_ca: bool,
) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, vol) = (tmp.path().join("settings"), tmp.path().join("volume"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&vol).unwrap();
    for (k, v) in settings {
        if with_ca || k != "CACertificates" {
            std::fs::write(dir.join(k), v).unwrap();
        }
    }
    for (k, v) in files {
        std::fs::write(vol.join(k), v).unwrap();
    }
    let fx = |p: &str| format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR"));
    let out = support::jvm::run(
        &support::jvm::javas()[0],
        "RuntimeClient.java",
        &[
            dir.to_str().unwrap(),
            MOUNT,
            vol.to_str().unwrap(),
            "localhost",
            &fx("ca/partner-server.p12"),
            &fx("pem/ca-chain.crt"),
        ],
        &[("SERVER_PASSWORD", "changeit")],
    );
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn ca_config_map(ns: &TestNamespace, file: &str) {
    let text = String::from_utf8(fixture(&format!("ca/{file}"))).unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "partner-trust"},
        "data": {"ca.crt": text}
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .patch(
            "partner-trust",
            &PatchParams::apply("certpin-tests").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn ca_trust_lets_a_jvm_reach_a_partner_behind_a_private_ca_for_both_kinds() {
    let (ns, op) = setup("trust").await;
    put_p12(&ns, "cert", "openssl-rsa-modern.p12", b"changeit").await;
    ca_config_map(&ns, "partner-bundle.pem").await;
    create_deployment(&ns, &deployment("shop", 1, &["mendix"])).await;
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &stateful_set("store", 1))
        .await
        .unwrap();
    let spec = json!({
        "certificates": [{"name": "client",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"}, "pinTo": ["localhost"]}],
        "caCertificates": [{"name": "partner", "configMap": {"name": "partner-trust", "key": "ca.crt"}}]
    });
    create_set(
        &ns,
        &set_for("d", json!({"deployment": "shop"}), spec.clone()),
    )
    .await;
    create_set(&ns, &set_for("s", json!({"statefulSet": "store"}), spec)).await;
    for name in ["d", "s"] {
        let set = wait_ready(&ns, name).await;
        let (settings, files) = rendered(&ns, &format!("{name}-certpin")).await;
        // Exactly the settings the runtime needs, and nothing else.
        assert_eq!(
            settings.keys().collect::<Vec<_>>(),
            [
                "CACertificates",
                "ClientCertificatePasswords",
                "ClientCertificateUsages",
                "ClientCertificates"
            ]
        );
        let client = &settings["ClientCertificates"];
        assert!(client.starts_with(&format!("{MOUNT}/client-")) && client.ends_with(".pfx"));
        assert_eq!(
            settings["ClientCertificateUsages"],
            format!(r#"{{ "localhost": "{client}" }}"#)
        );
        let ca_paths: Vec<&str> = settings["CACertificates"].split(',').collect();
        assert_eq!(
            ca_paths.len(),
            2,
            "root and intermediate, the duplicate once"
        );
        for p in &ca_paths {
            let key = p.strip_prefix(&format!("{MOUNT}/")).unwrap();
            assert!(key.starts_with("ca-") && key.ends_with(".crt"), "{key}");
            let text = String::from_utf8(files[key].clone()).unwrap();
            assert_eq!(
                text.matches("-----BEGIN CERTIFICATE-----").count(),
                1,
                "{key}"
            );
            assert_eq!(text.matches("-----BEGIN").count(), 1, "{key}");
        }
        let rows = &set.status.as_ref().unwrap().ca_certificates;
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| r.state == "Valid" && r.path.is_some() && r.not_after.is_some())
        );
        assert!(
            rows[0]
                .subject
                .as_deref()
                .unwrap()
                .contains("partner root CA")
        );

        let (code, out) = call_partner(&settings, &files, true);
        assert_eq!(code, Some(0), "{name}: {out}");
        assert!(out.contains("CN=partner-a client"), "{name}: {out}");
        let (code, out) = call_partner(&settings, &files, false);
        assert_eq!(
            code,
            Some(2),
            "{name}: without CACertificates the JVM must refuse: {out}"
        );
        assert!(out.contains("PKIX"), "{name}: {out}");
    }
    let d: Deployment = ns.api().get("shop").await.unwrap();
    assert!(env_names(dep_template(&d)).contains(&"MXRUNTIME_CACertificates".to_string()));
    let s: StatefulSet = ns.api().get("store").await.unwrap();
    assert!(env_names(sts_template(&s)).contains(&"MXRUNTIME_CACertificates".to_string()));

    // A bundle that carries a private key: refused with the reason, nothing
    // changes (no new revision), and the key is nowhere.
    let generation = d.metadata.generation;
    let revisions = replica_sets(&ns, "shop").await.len();
    let sts_before: StatefulSet = ns.api().get("store").await.unwrap();
    let rendered_before = secret_digest(&ns, "d-certpin").await;
    ca_config_map(&ns, "bundle-with-key.pem").await;
    for name in ["d", "s"] {
        let set = wait_until(
            &ns.api(),
            name,
            T,
            "the refusal",
            not_ready_with("PrivateKeyInBundle"),
        )
        .await;
        let status = serde_json::to_string(&set.status).unwrap();
        assert!(status.contains("block 2"), "{status}");
        assert_key_absent(&status, "status");
    }
    let d: Deployment = ns.api().get("shop").await.unwrap();
    assert_eq!(
        d.metadata.generation, generation,
        "the Deployment is untouched"
    );
    assert_eq!(
        replica_sets(&ns, "shop").await.len(),
        revisions,
        "no new revision"
    );
    let sts_after: StatefulSet = ns.api().get("store").await.unwrap();
    assert_eq!(
        sts_after.metadata.generation,
        sts_before.metadata.generation
    );
    assert_eq!(
        sts_after
            .status
            .as_ref()
            .and_then(|s| s.update_revision.clone()),
        sts_before
            .status
            .as_ref()
            .and_then(|s| s.update_revision.clone()),
        "no new StatefulSet revision"
    );
    assert_eq!(secret_digest(&ns, "d-certpin").await, rendered_before);
    wait_for(T, "a PrivateKeyInBundle Event", || async {
        support::kube::events_in(&ns)
            .await
            .iter()
            .any(|e| e.starts_with("PrivateKeyInBundle: "))
    })
    .await;
    assert_key_absent(&support::kube::events_in(&ns).await.join("\n"), "Events");
    assert_key_absent(&op.log_text(), "the operator's log");
}

/// No line of the bundle's private key in `text`.
fn assert_key_absent(text: &str, what: &str) {
    let bundle = String::from_utf8(fixture("ca/bundle-with-key.pem")).unwrap();
    let key_lines = bundle
        .lines()
        .skip_while(|l| !l.contains("BEGIN PRIVATE KEY"))
        .skip(1)
        .take_while(|l| !l.contains("END PRIVATE KEY"));
    for line in key_lines {
        assert!(!text.contains(line), "a line of the key is in {what}");
    }
}

#[tokio::test]
async fn a_deployment_another_controller_owns_is_refused_untouched_unless_the_set_opts_in() {
    let (ns, _op) = setup("owned").await;
    put_cert_secret(&ns).await;
    // The owner: any object of the namespace (a real one, or the garbage
    // collector would delete the Deployment).
    let owner: ConfigMap = ns
        .api()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "owner-app"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut d = deployment("shop", 1, &["mendix"]);
    d.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner-app",
        "uid": owner.metadata.uid, "controller": true}))
        .unwrap(),
    ]);
    create_deployment(&ns, &d).await;
    let before: Deployment = ns.api().get("shop").await.unwrap();
    let certs = json!({"certificates": [{"name": "client",
        "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
        "password": {"secretName": "cert", "key": "password"}}]});
    create_set(&ns, &set_for("s", json!({"deployment": "shop"}), certs)).await;
    let s = wait_until(
        &ns.api(),
        "s",
        T,
        "the refusal",
        not_ready_with("OwnedByController"),
    )
    .await;
    let message = s.status.as_ref().unwrap().conditions[0].message.clone();
    assert!(message.contains("ConfigMap \"owner-app\""), "{message}");
    assert!(message.contains("ownerLeavesPodTemplate"), "{message}");
    let after: Deployment = ns.api().get("shop").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert!(!wired(dep_template(&after)), "no env, no volume");
    assert_eq!(after.metadata.labels, before.metadata.labels, "no claim");

    ns.api::<ClientCertificateSet>()
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"app": {"ownerLeavesPodTemplate": true}}})),
        )
        .await
        .unwrap();
    wait_ready(&ns, "s").await;
    let after: Deployment = ns.api().get("shop").await.unwrap();
    assert!(wired(dep_template(&after)));
    wait_for(T, "the owner reference kept", || async {
        let d: Deployment = ns.api().get("shop").await.unwrap();
        d.metadata.owner_references.is_some_and(|o| o.len() == 1)
    })
    .await;
}
