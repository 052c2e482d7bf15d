//! The app's own template collides with certpin's wiring: refused, with
//! nothing written anywhere but the set.

use serde_json::{Value, json};

use super::world::*;

/// A Deployment whose container mounts its own volume at `/data` and sets
/// `env` itself.
fn own_template(w: &World, name: &str, env: Value) {
    w.deployment_from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "mendix", "image": "example.invalid/mendix:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}], "env": env}]
            }}
        }
    }));
}

/// Runs a pass of `set` on a Deployment it collides with and returns the
/// Ready condition's message, after checking that only the set was
/// written (finalizer, status, the Warning) and the Deployment is as it was.
async fn refused(w: &World, set: &str, deployment: &str, reason: &str) -> String {
    let before = w.deployment_now(deployment);
    let cm_before = w.config_map(&format!("{set}-certpin"));
    let mark = w.fake.mark();
    w.pass_ok(set).await;
    let s = w.set(set);
    assert_eq!(ready(&s), ("False".into(), reason.into()));
    assert_eq!(condition(&s, "Applied").reason, reason);
    assert_eq!(
        condition(&s, "CertificatesValid").status,
        "True",
        "the certificates are fine"
    );
    let mut writes = w.writes_since(mark);
    writes.sort();
    assert_eq!(
        writes,
        [
            format!("PATCH clientcertificatesets/{set} json-patch -"),
            format!("PATCH clientcertificatesets/{set}/status apply certpin"),
            "POST events json -".to_string(),
        ],
        "something besides the set was written"
    );
    assert_eq!(w.config_map(&format!("{set}-certpin")), cm_before);
    let after = w.deployment_now(deployment);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.spec, before.spec);
    let note = w
        .warning(reason)
        .unwrap_or_else(|| panic!("no {reason} Warning"));
    let message = condition(&s, "Ready").message.clone();
    assert_eq!(note, message);
    // And the set can still be deleted, leaving the Deployment alone.
    w.delete_set(set);
    w.pass_ok(set).await;
    assert!(w.set_opt(set).is_none());
    assert_eq!(w.deployment_now(deployment).spec, before.spec);
    message
}

#[tokio::test]
async fn the_apps_own_mount_at_the_mount_path_is_mount_path_in_use() {
    let w = World::new();
    own_template(&w, "mounted", json!([]));
    w.create_set(
        "m",
        json!({"app": {"deployment": "mounted"}, "mountPath": "/data"}),
    );
    let message = refused(&w, "m", "mounted", "MountPathInUse").await;
    assert!(
        message.contains("\"data\"") && message.contains("/data") && message.contains("mendix"),
        "{message}"
    );
}

#[tokio::test]
async fn the_apps_own_literal_setting_is_setting_set_by_app() {
    let w = World::new();
    own_template(
        &w,
        "literal",
        json!([{"name": "MXRUNTIME_ClientCertificates", "value": "/old/a.pfx"}]),
    );
    w.create_set("l", json!({"app": {"deployment": "literal"}}));
    let message = refused(&w, "l", "literal", "SettingSetByApp").await;
    assert!(
        message.contains("MXRUNTIME_ClientCertificates"),
        "{message}"
    );
}

/// A Secret and a ConfigMap someone else made under the rendered name:
/// the set is refused with a reason, neither object is written to or owned,
/// and deleting the set leaves them.
#[tokio::test]
async fn objects_of_anothers_under_the_rendered_names_are_never_taken_over() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    let theirs = |kind: &str| {
        json!({"apiVersion": "v1", "kind": kind,
               "metadata": {"name": "s-certpin", "namespace": NS},
               "data": {"theirs": if kind == "Secret" { "eA==" } else { "x" }}})
    };
    w.fake
        .insert(&serde_json::from_value::<Secret>(theirs("Secret")).unwrap());
    w.fake
        .insert(&serde_json::from_value::<ConfigMap>(theirs("ConfigMap")).unwrap());
    let before = (
        w.version_of_secret("s-certpin"),
        w.config_map("s-certpin").unwrap().metadata.resource_version,
    );
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    let message = refused(&w, "s", "app", "RenderedNameInUse").await;
    assert!(
        message.contains("Secret \"s-certpin\"") && message.contains("ConfigMap \"s-certpin\""),
        "{message}"
    );
    let secret = w.secret("s-certpin").expect("their Secret is still there");
    let cm = w
        .config_map("s-certpin")
        .expect("their ConfigMap is still there");
    assert_eq!(
        (
            w.version_of_secret("s-certpin"),
            cm.metadata.resource_version.clone()
        ),
        before,
        "written to"
    );
    assert!(secret.metadata.owner_references.is_none());
    assert!(cm.metadata.owner_references.is_none());
    assert!(secret.data.unwrap().contains_key("theirs"));
}
