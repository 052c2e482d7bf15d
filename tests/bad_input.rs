//! Bad input, table-driven, end to end: each case gets its reason on the
//! set's status and in a Warning Event, restarts nothing, keeps the last good
//! rendering and leaves the app's pods alone; restoring the input brings the
//! set back to Ready without a restart. Manifests the API server itself must
//! refuse (schema and CEL) are refused there.

mod support;

use std::time::Duration;

use base64::Engine as _;
use certpin::resource::ClientCertificateSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, rollout_complete, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(60);

fn spec() -> Value {
    json!({
        "app": {"deployment": "shop"},
        "certificates": [
            {"name": "partner-a", "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"},
             "password": {"secretName": "partner-a", "key": "password"}, "pinTo": ["Module.WebService1", "Zoë.Dienst"]},
            {"name": "partner-b", "tls": {"secretName": "partner-b"}, "pinTo": ["api.partner-b.example"]}
        ],
        "noCertificateFor": ["Module.WebService2", "Modül.Straße"],
    })
}

enum Step {
    /// partner-a's PKCS12 and password.
    P12(Vec<u8>, Vec<u8>),
    /// Replace a Secret's data wholesale.
    Secret(&'static str, Vec<(&'static str, Vec<u8>)>),
    DeleteSecret(&'static str),
    /// A JSON merge patch of the set's spec.
    Spec(Value),
}

async fn good_inputs(ns: &TestNamespace) {
    put_secret(
        ns,
        "partner-a",
        &[
            ("certificate.pfx", &fixture("pkcs12/openssl-rsa-legacy.p12")),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    put_secret(
        ns,
        "partner-b",
        &[
            ("tls.crt", &fixture("pem/ec256-tls.crt")),
            ("tls.key", &fixture("pem/ec256-sec1.key")),
        ],
        Some("kubernetes.io/tls"),
    )
    .await;
}

async fn replace_secret(ns: &TestNamespace, name: &str, data: &[(&str, Vec<u8>)]) {
    let api: Api<Secret> = ns.api();
    let mut s = api.get(name).await.unwrap();
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
            .collect(),
    );
    s.metadata.managed_fields = None;
    api.replace(name, &PostParams::default(), &s).await.unwrap();
}

async fn apply(ns: &TestNamespace, step: &Step) {
    match step {
        Step::P12(data, pw) => {
            replace_secret(
                ns,
                "partner-a",
                &[("certificate.pfx", data.clone()), ("password", pw.clone())],
            )
            .await
        }
        Step::Secret(name, data) => replace_secret(ns, name, data).await,
        Step::DeleteSecret(name) => {
            ns.api::<Secret>()
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        }
        Step::Spec(patch) => {
            let sets: Api<ClientCertificateSet> = ns.api();
            sets.patch(
                "prod",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": patch})),
            )
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn every_bad_input_is_named_and_changes_nothing_that_runs() {
    let ns = TestNamespace::new("bad-input").await;
    install_crd(&ns.client).await;
    let _op = Operator::start(&ns.name);
    good_inputs(&ns).await;
    create_deployment(&ns, &deployment("shop", 2, &["mendix"])).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "prod"}, "spec": spec()
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    wait_until(&sets, "prod", T, "Ready", ready).await;
    let deployments = ns.api::<k8s_openapi::api::apps::v1::Deployment>();
    wait_until(&deployments, "shop", T, "rollout", rollout_complete()).await;
    // Non-ASCII in a pin renders as JSON text, unescaped or escaped alike.
    let cm: k8s_openapi::api::core::v1::ConfigMap = ns.api().get("prod-certpin").await.unwrap();
    let usages: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&cm.data.unwrap()["ClientCertificateUsages"]).unwrap();
    assert!(usages.contains_key("Zoë.Dienst"));
    assert_eq!(usages.get("Modül.Straße").map(String::as_str), Some(""));

    let rendered_before = secret_digest(&ns, "prod-certpin").await;
    let rs_before = replica_sets(&ns, "shop").await.len();
    let p12 = |f: &str| fixture(&format!("pkcs12/{f}"));
    let pw = b"changeit".to_vec();
    let big = vec![0x30u8; 1_000_000];
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(p12("openssl-rsa-legacy.p12"))
        .into_bytes();
    let cases: Vec<(&str, Step, &'static str)> = vec![
        (
            "wrong password",
            Step::P12(p12("openssl-rsa-legacy.p12"), b"wrong".to_vec()),
            "WrongPassword",
        ),
        (
            "truncated file",
            Step::P12(p12("truncated.p12"), pw.clone()),
            "Corrupt",
        ),
        (
            "garbage",
            Step::P12(p12("garbage.p12"), pw.clone()),
            "Corrupt",
        ),
        (
            "PEM text in the PKCS12 key",
            Step::P12(p12("pem-text.p12"), pw.clone()),
            "NotPkcs12",
        ),
        (
            "base64 text of the PKCS12",
            Step::P12(b64.clone(), pw.clone()),
            "Base64Text",
        ),
        (
            "no private key",
            Step::P12(p12("openssl-no-private-key.p12"), pw.clone()),
            "NoPrivateKey",
        ),
        (
            "two private keys",
            Step::P12(p12("keytool-two-keys.p12"), pw.clone()),
            "MultiplePrivateKeys",
        ),
        (
            "key does not match",
            Step::P12(p12("python-key-mismatch.p12"), pw.clone()),
            "KeyMismatch",
        ),
        (
            "expired",
            Step::P12(p12("python-expired.p12"), pw.clone()),
            "Expired",
        ),
        (
            "not yet valid",
            Step::P12(p12("python-not-yet-valid.p12"), pw.clone()),
            "NotYetValid",
        ),
        (
            "RC4 encryption",
            Step::P12(p12("openssl-rsa-rc4.p12"), pw.clone()),
            "UnsupportedEncryption",
        ),
        (
            "RC2-128 encryption",
            Step::P12(p12("openssl-rsa-rc2-128.p12"), pw.clone()),
            "UnsupportedEncryption",
        ),
        ("a 1 MB Secret", Step::P12(big, pw.clone()), "TooLarge"),
        ("empty file", Step::P12(Vec::new(), pw.clone()), "Corrupt"),
        (
            "password not UTF-8",
            Step::P12(p12("openssl-rsa-legacy.p12"), vec![0xff, 0xfe]),
            "InvalidPassword",
        ),
        (
            "PKCS12 key missing",
            Step::Secret("partner-a", vec![("password", pw.clone())]),
            "KeyNotFound",
        ),
        (
            "password key missing",
            Step::Secret(
                "partner-a",
                vec![("certificate.pfx", p12("openssl-rsa-legacy.p12"))],
            ),
            "KeyNotFound",
        ),
        (
            "Secret deleted",
            Step::DeleteSecret("partner-a"),
            "SecretNotFound",
        ),
        (
            "TLS key is garbage",
            Step::Secret(
                "partner-b",
                vec![
                    ("tls.crt", fixture("pem/ec256-tls.crt")),
                    (
                        "tls.key",
                        b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
                            .to_vec(),
                    ),
                ],
            ),
            "InvalidPem",
        ),
        (
            "TLS key of another certificate",
            Step::Secret(
                "partner-b",
                vec![
                    ("tls.crt", fixture("pem/ec256-tls.crt")),
                    ("tls.key", fixture("pem/rsa-pkcs1.key")),
                ],
            ),
            "KeyMismatch",
        ),
        (
            // (A URL is refused at admission now: tests/tenancy.rs.)
            "pin with a control character",
            Step::Spec(json!({"certificates": [
            {"name": "partner-a", "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"}, "password": {"secretName": "partner-a", "key": "password"}, "pinTo": ["api.example.com\u{7}"]},
            {"name": "partner-b", "tls": {"secretName": "partner-b"}}]})),
            "InvalidPin",
        ),
        (
            "same endpoint pinned twice",
            Step::Spec(json!({"certificates": [
            {"name": "partner-a", "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"}, "password": {"secretName": "partner-a", "key": "password"}, "pinTo": ["api.example.com"]},
            {"name": "partner-b", "tls": {"secretName": "partner-b"}, "pinTo": ["API.example.com"]}]})),
            "DuplicatePin",
        ),
        (
            "pinned and excluded",
            Step::Spec(json!({"noCertificateFor": ["Module.WebService1"]})),
            "DuplicatePin",
        ),
        (
            "container does not exist",
            Step::Spec(json!({"app": {"deployment": "shop", "containers": ["nope"]}})),
            "ContainerNotFound",
        ),
        (
            "Deployment does not exist",
            Step::Spec(json!({"app": {"deployment": "nope"}})),
            "DeploymentNotFound",
        ),
    ];
    let events: Api<Event> = ns.api();
    let pods = |ns: &TestNamespace| {
        let api: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
        async move {
            let mut v: Vec<String> = api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            v.sort();
            v
        }
    };
    let pods_before = pods(&ns).await;
    let total = cases.len();
    for (name, step, reason) in cases {
        apply(&ns, &step).await;
        let s = wait_until(
            &sets,
            "prod",
            T,
            &format!("{name}: Ready=False {reason}"),
            not_ready_with(reason),
        )
        .await;
        let msg = &s.status.as_ref().unwrap().conditions[0].message;
        assert!(
            !msg.is_empty() && !msg.contains("changeit"),
            "{name}: {msg}"
        );
        wait_for(T, &format!("{name}: a Warning Event {reason}"), || {
            let events = events.clone();
            async move {
                events
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                    })
            }
        })
        .await;
        assert_eq!(
            secret_digest(&ns, "prod-certpin").await,
            rendered_before,
            "{name}: the last good rendering changed"
        );
        assert_eq!(
            replica_sets(&ns, "shop").await.len(),
            rs_before,
            "{name}: the app was restarted"
        );
        assert_eq!(
            pods(&ns).await,
            pods_before,
            "{name}: the app's pods changed"
        );
        // Restore: back to Ready, with the same rendering (no restart).
        if matches!(step, Step::DeleteSecret(_)) {
            put_p12(&ns, "partner-a", "openssl-rsa-legacy.p12", b"changeit").await;
        }
        good_inputs(&ns).await;
        replace_secret(
            &ns,
            "partner-a",
            &[
                ("certificate.pfx", fixture("pkcs12/openssl-rsa-legacy.p12")),
                ("password", pw.clone()),
            ],
        )
        .await;
        replace_secret(
            &ns,
            "partner-b",
            &[
                ("tls.crt", fixture("pem/ec256-tls.crt")),
                ("tls.key", fixture("pem/ec256-sec1.key")),
            ],
        )
        .await;
        let mut restore = spec();
        restore["app"] = json!({"deployment": "shop", "containers": null});
        sets.patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": restore})),
        )
        .await
        .unwrap();
        wait_until(&sets, "prod", T, &format!("{name}: Ready again"), ready).await;
        assert_eq!(
            secret_digest(&ns, "prod-certpin").await,
            rendered_before,
            "{name}: restoring re-rendered"
        );
        assert_eq!(
            replica_sets(&ns, "shop").await.len(),
            rs_before,
            "{name}: restoring restarted the app"
        );
    }
    assert!(total >= 25);
}

#[tokio::test]
async fn the_api_server_refuses_invalid_manifests() {
    let ns = TestNamespace::new("schema").await;
    install_crd(&ns.client).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let cert = |name: &str| json!({"name": name, "tls": {"secretName": "x"}});
    let cases = [
        (
            "duplicate certificate names",
            json!({"app": {"deployment": "d"}, "certificates": [cert("a"), cert("a")]}),
            "certificate names must be unique",
        ),
        (
            "pkcs12 and tls",
            json!({"app": {"deployment": "d"}, "certificates": [{"name": "a", "tls": {"secretName": "x"}, "pkcs12": {"secretName": "x", "key": "k"}, "password": {"secretName": "x", "key": "p"}}]}),
            "exactly one of pkcs12 or tls",
        ),
        (
            "pkcs12 without password",
            json!({"app": {"deployment": "d"}, "certificates": [{"name": "a", "pkcs12": {"secretName": "x", "key": "k"}}]}),
            "needs a password",
        ),
        (
            "neither",
            json!({"app": {"deployment": "d"}, "certificates": [{"name": "a"}]}),
            "exactly one of pkcs12 or tls",
        ),
        (
            "unknown restart strategy",
            json!({"app": {"deployment": "d"}, "restart": "Sometimes", "certificates": [cert("a")]}),
            "Unsupported value",
        ),
        (
            "upper-case certificate name",
            json!({"app": {"deployment": "d"}, "certificates": [cert("Partner")]}),
            "should match",
        ),
        (
            "non-ASCII certificate name",
            json!({"app": {"deployment": "d"}, "certificates": [cert("zertifikat-ä")]}),
            "should match",
        ),
        (
            "certificate name too long",
            json!({"app": {"deployment": "d"}, "certificates": [cert(&"a".repeat(64))]}),
            "Too long",
        ),
        (
            "no certificates",
            json!({"app": {"deployment": "d"}, "certificates": []}),
            "give at least one certificate or CA certificate",
        ),
        (
            "a Deployment and a StatefulSet",
            json!({"app": {"deployment": "d", "statefulSet": "s"}, "certificates": [cert("a")]}),
            "give exactly one of deployment or statefulSet",
        ),
        (
            "no workload",
            json!({"app": {}, "certificates": [cert("a")]}),
            "give exactly one of deployment or statefulSet",
        ),
        (
            "a CA entry from a Secret and a ConfigMap",
            json!({"app": {"deployment": "d"}, "caCertificates": [{"name": "ca",
                "secret": {"secretName": "s", "key": "ca.crt"}, "configMap": {"name": "c", "key": "ca.crt"}}]}),
            "give exactly one of secret or configMap",
        ),
        (
            "CA entries named twice",
            json!({"app": {"deployment": "d"}, "caCertificates": [
                {"name": "ca", "configMap": {"name": "c", "key": "ca.crt"}},
                {"name": "ca", "configMap": {"name": "d", "key": "ca.crt"}}]}),
            "caCertificates names must be unique",
        ),
        (
            "relative mount path",
            json!({"app": {"deployment": "d"}, "mountPath": "certs", "certificates": [cert("a")]}),
            "absolute path",
        ),
        (
            "a mount path with an empty segment",
            json!({"app": {"deployment": "d"}, "mountPath": "/etc//certpin", "certificates": [cert("a")]}),
            "normalized path",
        ),
        (
            "a mount path with a dot segment",
            json!({"app": {"deployment": "d"}, "mountPath": "/etc/certpin/./client-certificates", "certificates": [cert("a")]}),
            "normalized path",
        ),
        (
            "a mount path that goes up",
            json!({"app": {"deployment": "d"}, "mountPath": "/data/..", "certificates": [cert("a")]}),
            "normalized path",
        ),
        (
            "no app",
            json!({"certificates": [cert("a")]}),
            "Required value",
        ),
    ];
    for (name, spec, expect) in cases {
        let obj = json!({"apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "bad"}, "spec": spec});
        let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &kube::api::ApiResource::erase::<ClientCertificateSet>(&()),
        );
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => panic!("{name}: the API server accepted it"),
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{name}: {e:?}");
                assert!(e.message.contains(expect), "{name}: {}", e.message);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(
        sets.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn names_at_the_kubernetes_length_limits_work() {
    let ns = TestNamespace::new("limits").await;
    install_crd(&ns.client).await;
    let _op = Operator::start(&ns.name);
    let secret = "s".repeat(253);
    put_secret(
        &ns,
        &secret,
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec256-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    let dname = "d".repeat(63);
    create_deployment(&ns, &deployment(&dname, 1, &["c".repeat(63).as_str()])).await;
    let set_name = "n".repeat(253);
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": set_name},
        "spec": {"app": {"deployment": dname}, "certificates": [{"name": "x".repeat(63),
            "pkcs12": {"secretName": secret, "key": "certificate.pfx"}, "password": {"secretName": secret, "key": "password"},
            "pinTo": [format!("{}.example", "h".repeat(50))]}]}
    }))
    .unwrap();
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set).await.unwrap();
    wait_until(&sets, &set_name, T, "Ready", ready).await;
}
