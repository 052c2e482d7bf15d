//! A set waiting for its rollout: short passes that read only the workload,
//! and the changes that send it back to full passes.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::world::*;

/// Every request of a pass, as `describe` names them.
fn requests_since(w: &World, mark: usize) -> Vec<String> {
    w.fake.since(mark, |log| log.iter().map(describe).collect())
}

#[tokio::test]
async fn a_pass_while_the_rollout_runs_reads_only_the_workload_and_leaves_what_a_full_pass_would() {
    let mut w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert_eq!(ready(&w.set("s")).1, "RolloutInProgress");

    // The Deployment controller has not seen the new template yet (a late
    // status update of the old one): nothing new to report, nothing
    // written, no Secret read.
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(requests_since(&w, mark), ["GET deployments/app - -"]);

    let mark = w.fake.mark();
    w.pass_rolled_out("s", "app").await;
    assert_eq!(
        requests_since(&w, mark),
        [
            "GET deployments/app - -",
            "PATCH clientcertificatesets/s/status apply certpin",
        ]
    );
    let s = w.set("s");
    assert!(is_ready(&s), "{:?}", ready(&s));
    assert_eq!(records(&s), ["app"]);

    // A full pass (nothing remembered) finds the same status: it writes
    // nothing and decodes nothing more.
    let decodes = w.decodes();
    w.restart_operator();
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert!(
        requests_since(&w, mark)
            .iter()
            .any(|r| r.starts_with("GET secrets/cert")),
        "a full pass reads the Secrets"
    );
    assert_eq!(
        w.decodes(),
        0,
        "known from the rendering ({decodes} before)"
    );
}

#[tokio::test]
async fn a_rotation_during_the_rollout_is_applied_by_a_full_pass() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let first = w.set("s").status.unwrap().applied_hash.unwrap();
    let (secret, template) = (
        w.version_of_secret("s-certpin"),
        template_hash(&w.deployment_now("app")),
    );

    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_ne!(s.status.unwrap().applied_hash.unwrap(), first);
    assert_ne!(w.version_of_secret("s-certpin"), secret);
    assert_ne!(template_hash(&w.deployment_now("app")), template);
    w.rolls_then_ready("s", "app").await;
}

#[tokio::test]
async fn an_edit_of_the_workload_during_the_rollout_gets_a_full_pass() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(
        !reads_secrets(&w, mark),
        "waiting: {:?}",
        requests_since(&w, mark)
    );

    // Someone else's annotation (the claim and the StopStart record live
    // among them): whatever certpin's wiring rests on is read again.
    let mut d = w.deployment_now("app");
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("team.example/owner".into(), "payments".into());
    w.fake.insert(&d);
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(reads_secrets(&w, mark), "{:?}", requests_since(&w, mark));
    assert!(wired(&containers(&w.deployment_now("app"))[0]));
    w.rolls_then_ready("s", "app").await;
}

/// The writes since `mark`, in name order (concurrent ones come in any).
fn sorted_writes_since(w: &World, mark: usize) -> Vec<String> {
    let mut writes = w.writes_since(mark);
    writes.sort();
    writes
}

fn reads_secrets(w: &World, mark: usize) -> bool {
    requests_since(w, mark)
        .iter()
        .any(|r| r.starts_with("GET secrets/cert"))
}

#[tokio::test]
async fn a_workload_gone_during_the_rollout_gets_a_full_pass() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.fake.with(|st| st.remove::<Deployment>(NS, "app"));
    w.pass_ok("s").await;
    assert_eq!(ready(&w.set("s")).1, "DeploymentNotFound");
}

#[tokio::test]
async fn the_pass_that_starts_a_rollout_leaves_the_status_to_the_controllers_first_look() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(
        sorted_writes_since(&w, mark),
        [
            "PATCH clientcertificatesets/s json-patch -",
            "PATCH configmaps/s-certpin apply certpin",
            "PATCH deployments/app apply certpin",
            "PATCH secrets/s-certpin apply certpin",
        ],
        "no status and no Event before the controller has seen the template"
    );
    assert!(w.set("s").status.is_none());

    // A late status update of the older template says nothing new: the
    // status waits still.
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(requests_since(&w, mark), ["GET deployments/app - -"]);

    // The controller's first look: one status write, and the Events of the
    // pass that restarted the app.
    w.controller_sees(crate::resource::WorkloadKind::Deployment, "app");
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(
        sorted_writes_since(&w, mark),
        [
            "PATCH clientcertificatesets/s/status apply certpin",
            "POST events json -",
            "POST events json -",
        ]
    );
    let s = w.set("s");
    assert_eq!(ready(&s).1, "RolloutInProgress");
    let st = s.status.clone().unwrap();
    assert!(st.applied_hash.is_some());
    assert!(
        st.last_restart.is_some(),
        "the deferred status says it restarted"
    );
    w.rolls_then_ready("s", "app").await;
}

#[tokio::test]
async fn an_app_of_zero_replicas_is_ready_with_one_status_write() {
    let w = World::new();
    w.deployment("app", 0, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_alone_ok("s").await;
    w.controller_sees(crate::resource::WorkloadKind::Deployment, "app");
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    let status_writes = w
        .writes_since(mark)
        .into_iter()
        .filter(|r| r.contains("/status"))
        .count();
    assert_eq!(status_writes, 1);
    let s = w.set("s");
    assert!(is_ready(&s), "{:?}", ready(&s));
}

#[tokio::test]
async fn a_deferred_status_is_written_by_a_full_pass_when_an_input_changes_first() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_alone_ok("s").await;
    assert!(w.set("s").status.is_none());
    // A rotation before the controller looked: the full pass writes the
    // status for the newer rendering (it starts a rollout too, and defers).
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s).1, "RolloutInProgress");
    assert_eq!(
        s.status.unwrap().applied_hash,
        w.deployment_now("app")
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a
                .get(crate::operator::reconcile::names::ANN_CONFIG_HASH)
                .cloned()),
        "the status describes what the template carries"
    );
}

#[tokio::test]
async fn a_full_pass_before_the_first_look_still_records_the_restart() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_alone_ok("s").await;
    // A watch event of an input with the same content (certpin's own write
    // of a Secret the set names, a relist): the next pass is a full one,
    // and it has nothing to write but the status.
    w.put_cert("openssl-ec256-modern.p12", PASSWORD);
    w.controller_sees(crate::resource::WorkloadKind::Deployment, "app");
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(
        sorted_writes_since(&w, mark),
        [
            "PATCH clientcertificatesets/s/status apply certpin",
            "POST events json -",
            "POST events json -",
        ],
        "the status and both Events of the restart the first pass made"
    );
    let st = w.set("s").status.unwrap();
    assert!(st.last_restart.is_some());
    // Recorded once: the next passes owe nothing.
    let mark = w.fake.mark();
    w.pass_rolled_out("s", "app").await;
    assert_eq!(
        w.writes_since(mark),
        ["PATCH clientcertificatesets/s/status apply certpin"]
    );
    assert_eq!(w.set("s").status.unwrap().last_restart, st.last_restart);
}

/// What the workload watch does for a followed workload: keeps its object.
fn watch_delivers(w: &World, d: &Deployment) {
    let key = crate::operator::triggers::key_for("Deployment", NS, "app");
    w.ctx.rollouts.saw(&key, || {
        crate::operator::reconcile::kinds::Workload::Deployment(d.clone())
    });
}

#[tokio::test]
async fn a_rollout_step_the_watch_delivered_is_passed_without_reading_the_workload() {
    let w = World::new();
    w.deployment("app", 0, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_alone_ok("s").await;
    w.controller_sees(crate::resource::WorkloadKind::Deployment, "app");
    watch_delivers(&w, &w.deployment_now("app"));
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    // No pod to replace: the Applied Event only.
    assert_eq!(
        sorted_writes_since(&w, mark),
        [
            "PATCH clientcertificatesets/s/status apply certpin",
            "POST events json -",
        ]
    );
    assert!(
        !requests_since(&w, mark)
            .iter()
            .any(|r| r.starts_with("GET")),
        "{:?}",
        requests_since(&w, mark)
    );
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
    // Complete: the set no longer follows the Deployment, nor keeps it.
    let key = crate::operator::triggers::key_for("Deployment", NS, "app");
    assert!(!w.ctx.rollouts.is_followed(&key));
    assert!(
        w.ctx
            .rollouts
            .latest(crate::resource::WorkloadKind::Deployment, NS, "app")
            .is_none()
    );
}

#[tokio::test]
async fn a_kept_object_older_than_certpins_write_is_read_again() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    let before = w.deployment_now("app");
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_alone_ok("s").await;
    // The watch has not delivered the echo of the wiring yet.
    watch_delivers(&w, &before);
    w.controller_sees(crate::resource::WorkloadKind::Deployment, "app");
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(
        requests_since(&w, mark)
            .iter()
            .filter(|r| r.starts_with("GET"))
            .collect::<Vec<_>>(),
        ["GET deployments/app - -"],
        "read once, and no full pass"
    );
    assert_eq!(ready(&w.set("s")).1, "RolloutInProgress");
}
