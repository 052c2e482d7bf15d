//! Secrets stay secret: a full scenario with known passwords and key
//! material, then everything certpin emitted — the most verbose log, Events,
//! status, ConfigMaps, metrics, error messages — is searched for the
//! passwords, the private keys and their base64 forms.

mod support;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
const PASSWORD: &str = "Canary-Pw-7f3a9c-Ünïcødé";
const WRONG: &str = "Wrong-Canary-c41d88";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn ready(reason: &'static str) -> impl Fn(Option<&ClientCertificateSet>) -> bool {
    move |s| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == reason)
        })
    }
}

#[tokio::test]
async fn no_password_or_key_reaches_logs_events_status_configmaps_or_metrics() {
    let ns = TestNamespace::new("secrets").await;
    install_crd(&ns.client).await;
    let dir = tempfile::tempdir().unwrap();
    let key_pem = fixture("pem/rsa-pkcs8.key");
    let p12 = dir.path().join("canary.p12");
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(format!(
            "{}/tests/fixtures/pem/rsa-pkcs8.key",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("-in")
        .arg(format!(
            "{}/tests/fixtures/pem/rsa-tls.crt",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(["-passout", &format!("pass:{PASSWORD}"), "-out"])
        .arg(&p12)
        .status()
        .unwrap();
    assert!(status.success());
    let p12_bytes = std::fs::read(&p12).unwrap();

    // The most verbose level of every crate, kube's HTTP client included.
    let op = Operator::start_with_env(&ns.name, "-verbose", &[], &[("RUST_LOG", "trace")]);

    put_secret(
        &ns,
        "canary",
        &[
            ("certificate.pfx", &p12_bytes),
            ("password", PASSWORD.as_bytes()),
        ],
        None,
    )
    .await;
    put_secret(
        &ns,
        "canary-tls",
        &[
            ("tls.crt", &fixture("pem/rsa-tls.crt")),
            ("tls.key", &key_pem),
        ],
        Some("kubernetes.io/tls"),
    )
    .await;
    create_deployment(&ns, &deployment("shop", 1, &["mendix"])).await;
    let set: ClientCertificateSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "prod"},
        "spec": {"app": {"deployment": "shop"}, "certificates": [
            {"name": "canary", "pkcs12": {"secretName": "canary", "key": "certificate.pfx"},
             "password": {"secretName": "canary", "key": "password"}, "pinTo": ["a.example"]},
            {"name": "pem", "tls": {"secretName": "canary-tls"}, "pinTo": ["b.example"]}]}
    }))
    .unwrap();
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set).await.unwrap();
    // The non-ASCII password is re-encoded away: valid, with a warning.
    wait_until(&sets, "prod", T, "Ready", ready("ValidWithWarnings")).await;
    let rendered: Secret = ns.api().get("prod-certpin").await.unwrap();
    let rendered = rendered.data.unwrap();
    let canary = rendered
        .clone()
        .into_iter()
        .find(|(k, _)| k.starts_with("canary-"))
        .expect("the rendered canary file")
        .1;
    let generated: Vec<String> =
        String::from_utf8(rendered["ClientCertificatePasswords"].0.clone())
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();

    // Failures that carry messages: a wrong password, base64 text, a missing key.
    put_secret(
        &ns,
        "canary",
        &[
            ("certificate.pfx", &p12_bytes),
            ("password", WRONG.as_bytes()),
        ],
        None,
    )
    .await;
    wait_until(&sets, "prod", T, "WrongPassword", ready("WrongPassword")).await;
    put_secret(
        &ns,
        "canary",
        &[
            ("certificate.pfx", b64(&p12_bytes).as_bytes()),
            ("password", PASSWORD.as_bytes()),
        ],
        None,
    )
    .await;
    wait_until(&sets, "prod", T, "Base64Text", ready("Base64Text")).await;
    put_secret(
        &ns,
        "canary",
        &[
            ("certificate.pfx", &p12_bytes),
            ("password", PASSWORD.as_bytes()),
        ],
        None,
    )
    .await;
    wait_until(&sets, "prod", T, "Ready again", ready("ValidWithWarnings")).await;

    // Collect everything certpin emitted.
    let metrics = http_get(&op.metrics_url());
    let status = serde_json::to_string(&sets.get("prod").await.unwrap().status).unwrap();
    let events = serde_json::to_string(
        &ns.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    let configmaps = serde_json::to_string(
        &ns.api::<ConfigMap>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    sets.delete("prod", &DeleteParams::default()).await.unwrap();
    wait_for(T, "the set to be deleted", || {
        let sets = sets.clone();
        async move { sets.get_opt("prod").await.unwrap().is_none() }
    })
    .await;
    let log = op.log_text();
    assert!(
        log.lines().count() > 50,
        "the trace log is suspiciously short"
    );
    assert!(!log.contains("panicked"), "a panic:\n{log}");

    // The haystacks cover the scenario: the log saw the Secrets being read,
    // the Events and status carry the failures' messages.
    assert!(
        log.contains("secrets/canary"),
        "the trace log does not show the Secret reads"
    );
    assert!(
        events.contains("WrongPassword") && events.contains("Base64Text"),
        "{events}"
    );
    assert!(status.contains("sha256Fingerprint"));
    assert!(configmaps.contains("ClientCertificateUsages"));

    // What must not be found, in every form.
    let key_der = pem::parse(&key_pem).unwrap().contents().to_vec();
    let mut needles: Vec<(String, String)> = vec![
        ("user password".into(), PASSWORD.into()),
        ("wrong password".into(), WRONG.into()),
        ("user password (base64)".into(), b64(PASSWORD.as_bytes())),
        (
            "private key (base64 DER)".into(),
            b64(&key_der)[100..160].to_string(),
        ),
        (
            "private key (PEM line)".into(),
            String::from_utf8_lossy(&key_pem)
                .lines()
                .nth(5)
                .unwrap()
                .to_string(),
        ),
        ("private key (hex)".into(), hex::encode(&key_der[40..72])),
        (
            "user PKCS12 (base64)".into(),
            b64(&p12_bytes)[200..260].to_string(),
        ),
        (
            "rendered PKCS12 (base64)".into(),
            b64(&canary.0)[200..260].to_string(),
        ),
    ];
    for (i, g) in generated.iter().enumerate() {
        needles.push((format!("generated password {i}"), g.clone()));
    }
    for (what, haystack) in [
        ("log", &log),
        ("metrics", &metrics),
        ("status", &status),
        ("events", &events),
        ("configmaps", &configmaps),
    ] {
        for (name, needle) in &needles {
            assert!(
                !haystack.contains(needle.as_str()),
                "{name} found in the {what}"
            );
        }
    }
}
