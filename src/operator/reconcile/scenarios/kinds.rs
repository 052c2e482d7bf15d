//! The other workload kind (a StatefulSet) and workloads another
//! controller owns.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use serde_json::{Value, json};

use super::world::*;

fn stateful_set(w: &World, name: &str, replicas: i32) {
    stateful_set_with(w, name, replicas, json!({}));
}

/// A StatefulSet with `spec` merged into its spec.
fn stateful_set_with(w: &World, name: &str, replicas: i32, spec: Value) {
    let mut s = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "mendix", "image": "example.invalid/m:1"}]}}
        }
    });
    json_patch::merge(&mut s["spec"], &spec);
    let s: StatefulSet = serde_json::from_value(s).expect("a StatefulSet");
    w.input(&s);
}

fn stateful_set_now(w: &World, name: &str) -> StatefulSet {
    w.fake.get(NS, name).expect("the StatefulSet")
}

/// The StatefulSet controller's part: every ordinal on the update revision.
fn roll_out_stateful_set(w: &World, name: &str) {
    let s = stateful_set_now(w, name);
    let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({
        "observedGeneration": s.metadata.generation, "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "currentRevision": "r2", "updateRevision": "r2",
    });
    w.fake
        .with(|st| st.set_status::<StatefulSet>(NS, name, status));
}

fn template_containers(s: &StatefulSet) -> Vec<k8s_openapi::api::core::v1::Container> {
    s.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_stateful_set_is_wired_rolled_out_recorded_and_unwired_on_delete() {
    let w = World::new();
    stateful_set(&w, "app", 2);
    // A Deployment of the same name is another workload: left alone.
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"statefulSet": "app"}}));
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let writes = w.writes_since(mark);
    assert!(
        writes.contains(&"PATCH statefulsets/app apply certpin".to_string()),
        "{writes:?}"
    );
    assert!(
        !writes.iter().any(|w| w.contains("deployments/")),
        "{writes:?}"
    );
    let live = stateful_set_now(&w, "app");
    assert!(template_containers(&live).iter().all(|c| wired_to(
        c,
        "s-certpin",
        "/etc/certpin/client-certificates"
    )));
    assert_eq!(ready(&w.set("s")).1, "RolloutInProgress");
    let recorded: Vec<(String, String)> = w
        .set("s")
        .status
        .iter()
        .flat_map(|s| &s.workloads)
        .map(|r| (r.kind.clone(), r.name.clone()))
        .collect();
    assert_eq!(recorded, [("StatefulSet".to_string(), "app".to_string())]);
    roll_out_stateful_set(&w, "app");
    w.pass_ok("s").await;
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
    assert!(unwired(&w.deployment_now("app")));

    w.delete_set("s");
    w.pass_ok("s").await;
    let live = stateful_set_now(&w, "app");
    assert!(template_containers(&live).iter().all(|c| !wired(c)));
}

#[tokio::test]
async fn stop_start_of_a_stateful_set_goes_through_its_scale_subresource() {
    let w = World::new();
    stateful_set(&w, "app", 3);
    w.pod("app", "app-0");
    w.create_set(
        "s",
        json!({"app": {"statefulSet": "app"}, "restart": "StopStart"}),
    );
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(
        w.writes_since(mark)
            .contains(&"PATCH statefulsets/app/scale merge certpin".to_string()),
        "{:?}",
        w.writes_since(mark)
    );
    let live = stateful_set_now(&w, "app");
    assert_eq!(live.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(ready(&w.set("s")).1, "StopStartInProgress");
    // No pod is left: the next pass applies and starts it at 3 again.
    w.remove_pod("app-0");
    w.pass_ok("s").await;
    let live = stateful_set_now(&w, "app");
    assert_eq!(live.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert!(template_containers(&live).iter().all(wired));
    let annotations = live.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("certpin.dev/stop-start"),
        "{annotations:?}"
    );
}

fn owned(w: &World, owner: Value) {
    w.deployment_from(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": NS, "ownerReferences": [owner]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"containers": [{"name": "mendix", "image": "i"}]}}}
    }));
}

#[tokio::test]
async fn a_workload_another_controller_owns_is_refused_untouched_unless_the_set_opts_in() {
    let w = World::new();
    owned(
        &w,
        json!({"apiVersion": "privatecloud.mendix.com/v1alpha1", "kind": "MendixApp",
               "name": "shop", "uid": "u-1", "controller": true}),
    );
    let before = w.version_of_deployment("app");
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(
        !w.writes_since(mark)
            .iter()
            .any(|x| x.contains("deployments/")),
        "{:?}",
        w.writes_since(mark)
    );
    assert_eq!(
        w.version_of_deployment("app"),
        before,
        "nothing written to it"
    );
    let s = w.set("s");
    let (reason, message) = (ready(&s).1, condition(&s, "Ready").message.clone());
    assert_eq!(reason, "OwnedByController");
    assert!(message.contains("MendixApp \"shop\""), "{message}");
    assert!(message.contains("Mendix Operator"), "{message}");
    assert_eq!(condition(&s, "Stalled").status, "True");
    assert!(w.warning("OwnedByController").is_some());

    w.edit_set(
        "s",
        json!({"spec": {"app": {"deployment": "app", "ownerLeavesPodTemplate": true}}}),
    );
    w.pass_ok("s").await;
    let d: Deployment = w.deployment_now("app");
    assert!(containers(&d).iter().all(wired));
}

#[tokio::test]
async fn an_app_that_still_sets_the_buildpacks_certificate_variables_is_warned() {
    let w = World::new();
    w.deployment_from(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"containers": [{"name": "mendix", "image": "i",
                                  "env": [{"name": "CERTIFICATE_AUTHORITIES", "value": "-----BEGIN"}]}]}}}
    }));
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    let s = w.set("s");
    assert_eq!(ready(&s), ("True".into(), "ValidWithWarnings".into()));
    let warnings = s.status.clone().unwrap_or_default().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("CERTIFICATE_AUTHORITIES"),
        "{warnings:?}"
    );
    assert!(!warnings[0].contains("BEGIN"), "the value is not echoed");
    let event = w.warning("BuildpackCertificateSetting").expect("an Event");
    assert!(event.contains("\"mendix\""), "{event}");
}

#[tokio::test]
async fn a_manual_stateful_set_reports_the_restart_due_with_its_own_command() {
    let w = World::new();
    stateful_set(&w, "app", 1);
    w.pod("app", "app-0");
    let a_minute_ago = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(60))
    .to_string();
    w.fake
        .with(|st| st.set_created::<k8s_openapi::api::core::v1::Pod>(NS, "app-0", &a_minute_ago));
    w.create_set(
        "s",
        json!({"app": {"statefulSet": "app"}, "restart": "Manual"}),
    );
    w.pass_ok("s").await;
    roll_out_stateful_set(&w, "app");
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s).1, "RestartDue");
    let message = condition(&s, "RestartDue").message.clone();
    assert!(
        message.contains("kubectl rollout restart statefulset/app"),
        "{message}"
    );
}

#[tokio::test]
async fn stop_start_is_refused_where_scaling_down_deletes_the_stateful_sets_volumes() {
    let w = World::new();
    stateful_set_with(
        &w,
        "app",
        2,
        json!({
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }),
    );
    w.create_set(
        "s",
        json!({"app": {"statefulSet": "app"}, "restart": "StopStart"}),
    );
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(
        !w.writes_since(mark)
            .iter()
            .any(|x| x.contains("statefulsets/")),
        "{:?}",
        w.writes_since(mark)
    );
    let set = w.set("s");
    assert_eq!(ready(&set).1, "StopStartDeletesVolumes");
    assert_eq!(condition(&set, "Stalled").status, "True");
    assert_eq!(
        stateful_set_now(&w, "app").spec.and_then(|s| s.replicas),
        Some(2)
    );
}

#[tokio::test]
async fn a_stateful_set_that_updates_on_delete_is_restart_due_not_reconciling() {
    let w = World::new();
    stateful_set_with(
        &w,
        "app",
        2,
        json!({"updateStrategy": {"type": "OnDelete"}}),
    );
    w.create_set("s", json!({"app": {"statefulSet": "app"}}));
    w.pass_ok("s").await;
    // The controller saw the new template; no pod was replaced.
    let live = stateful_set_now(&w, "app");
    let status = json!({"observedGeneration": live.metadata.generation, "replicas": 2,
        "updatedReplicas": 0, "readyReplicas": 2, "availableReplicas": 2,
        "currentRevision": "r1", "updateRevision": "r2"});
    w.fake
        .with(|st| st.set_status::<StatefulSet>(NS, "app", status));
    w.pass_ok("s").await;
    let set = w.set("s");
    assert_eq!(ready(&set).1, "RestartDue");
    assert!(!has_condition(&set, "Reconciling") && !has_condition(&set, "Stalled"));
    assert!(
        condition(&set, "RestartDue")
            .message
            .contains("updates on delete")
    );
    assert!(
        set.status
            .as_ref()
            .and_then(|s| s.last_restart.as_ref())
            .is_none(),
        "no pod was restarted by certpin"
    );
}
