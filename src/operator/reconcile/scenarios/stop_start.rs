//! StopStart: stopping, waiting for pods, and resuming from each recorded
//! phase, also after the set was edited (or deleted) half-way.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action;
use serde_json::json;

use super::world::*;
use crate::names::{ANN_STOP_START, LABEL_SET_UID};
use crate::operator::reconcile::decide::restart::{Phase, StopStartRecord};

/// A StopStart set `s` on `app` (3 replicas) stopped half-way: the record
/// says Stopping and two pods are still terminating.
async fn stopping() -> World {
    let w = World::new();
    w.deployment("app", 3, &["mendix"]);
    w.pod("app", "app-1");
    w.pod("app", "app-2");
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "StopStart"}),
    );
    let mark = w.fake.mark();
    let action = w.pass_ok("s").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let d = w.deployment_now("app");
    assert_eq!(replicas(&d), Some(0), "scaled to zero");
    assert_eq!(
        stop_record(&d),
        Some(StopStartRecord {
            replicas: 3,
            phase: Phase::Stopping
        })
    );
    assert_eq!(
        claim_uid(&d),
        w.set("s").metadata.uid,
        "the record holds the claim"
    );
    assert!(!wired(&containers(&d)[0]), "wired before the pods are gone");
    let deployment_writes: Vec<String> = w
        .writes_since(mark)
        .into_iter()
        .filter(|l| l.contains("deployments/app"))
        .collect();
    assert_eq!(
        deployment_writes,
        [
            "PATCH deployments/app apply certpin-stop-start",
            "PATCH deployments/app/scale merge certpin",
        ],
        "the replica count is recorded before the scale"
    );
    let s = w.set("s");
    assert_eq!(ready(&s), ("False".into(), "StopStartInProgress".into()));
    assert!(condition(&s, "Applied").message.contains("2 pod(s)"));
    assert_eq!(records(&s), ["app"]);
    // A stop is normal work: a Normal Event, never a Warning.
    let stop_events: Vec<_> = w
        .events()
        .into_iter()
        .filter(|(_, r, _)| r == "StopStartInProgress")
        .collect();
    assert_eq!(stop_events.len(), 1, "{stop_events:?}");
    assert_eq!(stop_events[0].0, "Normal");
    w
}

fn started_wired(d: &Deployment, replicas_wanted: i32) {
    assert_eq!(replicas(d), Some(replicas_wanted), "not started again");
    assert!(!has_stop_annotation(d), "the stop record stayed");
    assert!(wired(&containers(d)[0]), "started without the wiring");
}

#[tokio::test]
async fn a_stop_waits_for_the_pods_then_applies_and_starts_at_the_recorded_replicas() {
    let w = stopping().await;
    // Pods still there: nothing to do, nothing written.
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(w.writes_since(mark), Vec::<String>::new());

    w.remove_pod("app-1");
    w.remove_pod("app-2");
    w.pass_ok("s").await;
    let d = w.deployment_now("app");
    started_wired(&d, 3);
    w.rolls_then_ready("s", "app").await;
    let s = w.set("s");
    assert_eq!(claim_uid(&d), s.metadata.uid, "the wiring holds the claim");
    assert!(s.status.as_ref().unwrap().last_restart.is_some());
    assert_eq!(records(&s), ["app"]);
}

#[tokio::test]
async fn a_stop_recorded_as_starting_applies_and_starts_without_stopping_again() {
    let w = World::new();
    w.deployment("app", 0, &["mendix"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "StopStart"}),
    );
    let uid = w.set("s").metadata.uid.unwrap();
    // What a pass that died right after the pods were gone left behind.
    let record = serde_json::to_string(&StopStartRecord {
        replicas: 2,
        phase: Phase::Starting,
    })
    .unwrap();
    w.fake.with(|st| {
        st.apply_as::<Deployment>(
            "certpin-stop-start",
            NS,
            "app",
            json!({"metadata": {"name": "app", "annotations": {ANN_STOP_START: record},
                "labels": {LABEL_SET_UID: uid}}}),
        )
    });
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    started_wired(&w.deployment_now("app"), 2);
    assert_eq!(ready(&w.set("s")).1, "RolloutInProgress");
    let (pod_lists, scales) = w.fake.since(mark, |log| {
        (
            log.iter().filter(|l| l.path.ends_with("/pods")).count(),
            log.iter()
                .filter(|l| l.path.ends_with("/deployments/app/scale"))
                .count(),
        )
    });
    assert_eq!(pod_lists, 0, "a Starting record needs no look at the pods");
    assert_eq!(scales, 1, "one scale: back up");
}

#[tokio::test]
async fn switching_to_rolling_during_a_stop_resumes_wired_at_the_recorded_replicas() {
    let w = stopping().await;
    w.edit_set("s", json!({"spec": {"restart": "Rolling"}}));
    // The pods are still terminating: Resume does not wait for them.
    w.pass_ok("s").await;
    started_wired(&w.deployment_now("app"), 3);
    w.rolls_then_ready("s", "app").await;
}

#[tokio::test]
async fn retargeting_during_a_stop_brings_the_old_app_back_unwired() {
    let w = stopping().await;
    w.deployment("other", 1, &["mendix"]);
    w.edit_set("s", json!({"spec": {"app": {"deployment": "other"}}}));
    w.pass_ok("s").await;
    let app = w.deployment_now("app");
    assert_eq!(replicas(&app), Some(3), "the old app stays stopped");
    assert!(unwired(&app), "the old app keeps certpin's traces");
    let other = w.deployment_now("other");
    started_wired(&other, 1);
    w.rolls_then_ready("s", "other").await;
    let s = w.set("s");
    assert_eq!(records(&s), ["other"]);
}

#[tokio::test]
async fn deleting_the_set_during_a_stop_starts_the_app_again_unwired() {
    let w = stopping().await;
    w.delete_set("s");
    w.pass_ok("s").await;
    let app = w.deployment_now("app");
    assert_eq!(replicas(&app), Some(3));
    assert!(unwired(&app));
    assert!(w.set_opt("s").is_none());
}
