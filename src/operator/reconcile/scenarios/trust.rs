//! CA certificates: rendered one per file, wired as CACertificates; a bad
//! bundle changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::json;

use super::world::*;

fn ca_fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/ca/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bundle_config_map(w: &World, name: &str, file: &str) {
    let text = String::from_utf8(ca_fixture(file)).expect("PEM text");
    w.input(&ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), text)])),
        ..Default::default()
    });
}

fn ca_secret(w: &World, name: &str, file: &str) {
    w.input(&Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "ca.crt".to_string(),
            ByteString(ca_fixture(file)),
        )])),
        ..Default::default()
    });
}

fn env_names(w: &World) -> Vec<String> {
    containers(&w.deployment_now("app"))[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect()
}

#[tokio::test]
async fn ca_certificates_alone_render_one_file_each_once_and_wire_ca_certificates_only() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    bundle_config_map(&w, "partner-bundle", "partner-bundle.pem");
    ca_secret(&w, "issuer", "cert-manager-ca.crt");
    w.create_set_as_is(
        "s",
        json!({"app": {"deployment": "app"}, "caCertificates": [
            {"name": "partner", "configMap": {"name": "partner-bundle", "key": "ca.crt"}},
            {"name": "issuer", "secret": {"secretName": "issuer", "key": "ca.crt"}},
            // The partner's root again: rendered once.
            {"name": "again", "configMap": {"name": "partner-bundle", "key": "ca.crt"}}]}),
    );
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    let s = w.set("s");
    assert!(is_ready(&s), "{:?}", ready(&s));
    let cm = w
        .config_map("s-certpin")
        .expect("rendered")
        .data
        .unwrap_or_default();
    assert_eq!(cm.keys().collect::<Vec<_>>(), ["CACertificates"]);
    let paths: Vec<&str> = cm["CACertificates"].split(',').collect();
    assert_eq!(
        paths.len(),
        3,
        "root, intermediate, cert-manager CA: {paths:?}"
    );
    let data = w
        .secret("s-certpin")
        .expect("rendered")
        .data
        .unwrap_or_default();
    for p in &paths {
        let key = p
            .strip_prefix("/etc/certpin/client-certificates/")
            .expect("under the mount");
        let file = &data[key].0;
        let text = String::from_utf8_lossy(file);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 1, "{key}");
        assert_eq!(crate::ca::parse_bundle(file).map(|c| c.len()), Ok(1));
    }
    assert!(!data.contains_key("ClientCertificatePasswords"));
    assert_eq!(env_names(&w), ["MXRUNTIME_CACertificates"]);
    let rows = s.status.clone().unwrap_or_default().ca_certificates;
    assert_eq!(rows.len(), 5, "a row per certificate of each entry");
    assert!(
        rows.iter()
            .all(|r| r.state == "Valid" && r.path.is_some() && r.not_after.is_some())
    );

    // An idle pass writes nothing but what it must (no status change: nothing).
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
}

#[tokio::test]
async fn a_bundle_with_a_private_key_changes_nothing_and_the_key_is_never_echoed() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.put_cert("openssl-rsa-modern.p12", b"changeit");
    bundle_config_map(&w, "partner-bundle", "partner-root.crt");
    let mut spec = json!({"app": {"deployment": "app"}, "caCertificates": [
        {"name": "partner", "configMap": {"name": "partner-bundle", "key": "ca.crt"}}]});
    spec["certificates"] = json!([{"name": "client",
        "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
        "password": {"secretName": "cert", "key": "password"}}]);
    w.create_set_as_is("s", spec);
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    assert_eq!(
        env_names(&w),
        [
            "MXRUNTIME_ClientCertificates",
            "MXRUNTIME_ClientCertificatePasswords",
            "MXRUNTIME_CACertificates"
        ]
    );
    let before = (
        w.version_of_deployment("app"),
        w.version_of_secret("s-certpin"),
    );

    bundle_config_map(&w, "partner-bundle", "bundle-with-key.pem");
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s).1, "PrivateKeyInBundle");
    assert_eq!(condition(&s, "Stalled").status, "True");
    assert_eq!(
        (
            w.version_of_deployment("app"),
            w.version_of_secret("s-certpin")
        ),
        before,
        "nothing changed"
    );
    let key_text = String::from_utf8(ca_fixture("bundle-with-key.pem")).expect("text");
    let key_line = key_text
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(1)
        .expect("a line of the key");
    let status = serde_json::to_string(&s.status).expect("json");
    assert!(!status.contains(key_line));
    let written = w.fake.since(mark, |log| {
        log.iter().any(|l| l.body_contains(key_line.as_bytes()))
    });
    assert!(!written, "the key reached a write");
    let event = w.warning("PrivateKeyInBundle").expect("an Event");
    assert!(event.contains("block 2"), "{event}");
}
