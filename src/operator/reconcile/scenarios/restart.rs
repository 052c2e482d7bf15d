//! An operator restart: the earlier validation stands for inputs that did
//! not change, so nothing is decoded, written or restarted; a changed input,
//! an expiry near, or a status that does not describe the rendering take the
//! full path.

use serde_json::json;

use super::world::*;

async fn ready_set(w: &World) {
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
}

#[tokio::test]
async fn after_a_restart_unchanged_inputs_are_not_decoded_and_nothing_is_written() {
    let mut w = World::new();
    ready_set(&w).await;
    let before = w.set("s").status;
    w.restart_operator();
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(w.decodes(), 0, "known inputs are not decoded again");
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert_eq!(w.set("s").status, before, "the same rows");
}

#[tokio::test]
async fn after_a_restart_a_rotated_file_is_decoded() {
    let mut w = World::new();
    ready_set(&w).await;
    w.restart_operator();
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    assert_eq!(w.decodes(), 1);
    let s = w.set("s");
    let row = &s.status.as_ref().expect("status").certificates[0];
    assert_eq!(row.key_algorithm.as_deref(), Some("EC P-384"));
}

#[tokio::test]
async fn after_a_restart_a_status_that_does_not_describe_the_rendering_is_decoded_again() {
    let mut w = World::new();
    ready_set(&w).await;
    // As if the pass that wrote the Secret was cut short before its status.
    w.fake.with(|st| {
        st.merge::<crate::resource::ClientCertificateSet>(
            NS,
            "s",
            json!({"status": {"appliedHash": "an-older-rendering"}}),
        )
    });
    w.restart_operator();
    w.pass_ok("s").await;
    assert_eq!(w.decodes(), 1, "the status could not be trusted");
}

#[tokio::test]
async fn after_a_restart_a_certificate_near_its_expiry_is_judged_again() {
    let mut w = World::new();
    ready_set(&w).await;
    // The row says the certificate ends tomorrow, within the 30 days' warning.
    let mut rows =
        serde_json::to_value(&w.set("s").status.expect("status").certificates).expect("json");
    let tomorrow =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(24);
    rows[0]["notAfter"] = json!(tomorrow.to_string());
    w.fake.with(|st| {
        st.merge::<crate::resource::ClientCertificateSet>(
            NS,
            "s",
            json!({"status": {"certificates": rows}}),
        )
    });
    w.restart_operator();
    w.pass_ok("s").await;
    assert!(w.decodes() >= 1);
}

#[tokio::test]
async fn an_upgrade_that_adds_reloaders_ignore_annotation_rewrites_the_objects_and_restarts_nothing()
 {
    use crate::operator::reconcile::decide::build::RELOADER_IGNORE;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let mut w = World::new();
    ready_set(&w).await;
    // The ConfigMap and Secret as a version without the annotation left them.
    let without = json!({"metadata": {"annotations": {RELOADER_IGNORE: null}}});
    w.fake.with(|st| {
        st.merge::<ConfigMap>(NS, "s-certpin", without.clone());
        st.merge::<Secret>(NS, "s-certpin", without.clone());
    });
    let (hash, generation) = {
        let d = w.deployment_now("app");
        (template_hash(&d), d.metadata.generation)
    };
    w.restart_operator();
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let mut writes = w.writes_since(mark);
    writes.sort();
    assert_eq!(
        writes,
        [
            "PATCH configmaps/s-certpin apply certpin",
            "PATCH secrets/s-certpin apply certpin",
        ],
        "the workload is not written"
    );
    let ignored = |a: Option<std::collections::BTreeMap<String, String>>| {
        a.unwrap_or_default().get(RELOADER_IGNORE).cloned()
    };
    let cm = w.config_map("s-certpin").expect("the ConfigMap");
    let secret = w.secret("s-certpin").expect("the Secret");
    assert_eq!(ignored(cm.metadata.annotations).as_deref(), Some("true"));
    assert_eq!(
        ignored(secret.metadata.annotations).as_deref(),
        Some("true")
    );
    let d = w.deployment_now("app");
    assert_eq!(
        (template_hash(&d), d.metadata.generation),
        (hash, generation)
    );
    assert_eq!(w.decodes(), 0, "the encoding is reused");
}
