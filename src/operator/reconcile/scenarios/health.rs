//! How GitOps tools read a set (kstatus's Reconciling and Stalled, Ready
//! only once the rollout is complete), for each kind of state.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::world::*;

/// The kstatus conditions present (always True when present).
fn kstatus(w: &World) -> Vec<(String, String)> {
    let s = w.set("s");
    s.status
        .iter()
        .flat_map(|st| &st.conditions)
        .filter(|c| c.type_ == "Reconciling" || c.type_ == "Stalled")
        .inspect(|c| assert_eq!(c.status, "True", "{c:?}"))
        .map(|c| (c.type_.clone(), c.reason.clone()))
        .collect()
}

fn pair(t: &str, r: &str) -> Vec<(String, String)> {
    vec![(t.to_string(), r.to_string())]
}

#[tokio::test]
async fn a_wrong_password_is_stalled_not_reconciling() {
    let w = World::new();
    w.put_cert("openssl-ec256-modern.p12", b"not-the-password");
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Stalled", "WrongPassword"));
}

#[tokio::test]
async fn a_missing_secret_or_deployment_is_awaited_reconciling_not_stalled() {
    let w = World::new();
    w.fake
        .with(|st| st.remove::<k8s_openapi::api::core::v1::Secret>(NS, "cert"));
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Reconciling", "SecretNotFound"));

    w.put_cert("openssl-ec256-modern.p12", PASSWORD);
    w.edit_set("s", json!({"spec": {"app": {"deployment": "later"}}}));
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Reconciling", "DeploymentNotFound"));
}

#[tokio::test]
async fn a_missing_container_is_stalled() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app", "containers": ["nope"]}}),
    );
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Stalled", "ContainerNotFound"));
}

#[tokio::test]
async fn a_rollout_past_its_deadline_is_stalled_and_recovers_when_it_completes() {
    let w = World::new();
    w.deployment("app", 2, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Reconciling", "RolloutInProgress"));
    let d = w.deployment_now("app");
    w.fake.with(|st| {
        st.set_status::<Deployment>(
            NS,
            "app",
            json!({"observedGeneration": d.metadata.generation, "replicas": 3,
                   "updatedReplicas": 1, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "False",
                                   "reason": "ProgressDeadlineExceeded"}]}),
        )
    });
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Stalled", "RolloutStuck"));
    assert!(
        w.warning("RolloutStuck").is_some(),
        "a stuck rollout is a Warning Event"
    );
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    assert_eq!(kstatus(&w), vec![]);
}

#[tokio::test]
async fn a_stop_under_way_is_reconciling() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.pod("app", "app-1");
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "StopStart"}),
    );
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Reconciling", "StopStartInProgress"));
    assert!(
        w.follows("s", "app"),
        "the stop follows the Deployment's status updates"
    );
}

#[tokio::test]
async fn the_rollout_is_followed_until_it_completes() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert!(w.follows("s", "app"));
    w.pass_rolled_out("s", "app").await;
    assert!(!w.follows("s", "app"));
}

/// Pod creation times have second precision: a Manual rotation made in the
/// second in which the first wiring's rollout created the pod still finds
/// that pod running the earlier settings.
#[tokio::test]
async fn a_manual_rotation_right_after_the_rollout_is_a_restart_due() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "Manual"}),
    );
    w.pass_ok("s").await;
    w.pod_of_template("app", "app-new");
    w.pass_rolled_out("s", "app").await;
    assert_eq!(ready(&w.set("s")).1, "Applied", "{:?}", ready(&w.set("s")));
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s).1, "RestartDue", "{:?}", ready(&s));
    assert!(
        condition(&s, "RestartDue").message.starts_with("1 pod(s)"),
        "{:?}",
        condition(&s, "RestartDue")
    );

    // The user restarts at once (still in that second, most likely): the
    // new pod, made after the Secret's write, runs the new settings.
    w.remove_pod("app-new");
    w.pod_of_template("app", "app-restarted");
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s).1, "Applied", "{:?}", ready(&s));
}

/// A Manual set on `app`, whose one running pod predates any rendering by
/// a minute.
fn manual_set_with_an_older_pod() -> World {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.pod("app", "app-1");
    w.roll_out("app");
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "Manual"}),
    );
    let a_minute_ago = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(60))
    .to_string();
    w.fake
        .with(|st| st.set_created::<k8s_openapi::api::core::v1::Pod>(NS, "app-1", &a_minute_ago));
    w
}

#[tokio::test]
async fn a_manual_set_waiting_for_the_users_restart_is_neither_reconciling_nor_stalled() {
    let w = manual_set_with_an_older_pod();
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert_eq!(ready(&w.set("s")).1, "RestartDue");
    assert_eq!(kstatus(&w), vec![]);
}

/// The failure counter counts what needs attention: a set waiting for its
/// user's restart is not failing, however many passes look at it; refused
/// input is.
#[tokio::test]
async fn waiting_for_the_users_restart_is_no_failure_in_the_metrics_and_bad_input_is() {
    use crate::operator::metrics::ReasonLabel;
    let failures = |w: &World, reason: &str| {
        w.ctx
            .metrics
            .failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .get()
    };
    let w = manual_set_with_an_older_pod();
    for _ in 0..5 {
        w.pass_rolled_out("s", "app").await;
    }
    assert_eq!(ready(&w.set("s")).1, "RestartDue");
    assert_eq!(failures(&w, "RestartDue"), 0);
    w.put_cert("openssl-ec256-modern.p12", b"not the password");
    w.pass_ok("s").await;
    w.pass_ok("s").await;
    assert_eq!(ready(&w.set("s")).1, "WrongPassword");
    assert_eq!(failures(&w, "WrongPassword"), 2);
}

#[tokio::test]
async fn an_app_without_pods_is_ready_once_wired_and_followed_until_seen() {
    let w = World::new();
    w.deployment("app", 0, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
    assert_eq!(kstatus(&w), vec![]);
    // Someone may have scaled it up since it was read: its controller's
    // report still triggers a pass.
    assert!(w.follows("s", "app"));
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    assert!(!w.follows("s", "app"));
}

#[tokio::test]
async fn an_app_scaled_to_zero_with_pods_left_waits_for_its_rollout() {
    let w = World::new();
    w.deployment("app", 0, &["mendix"]);
    w.fake.with(|st| {
        st.set_status::<Deployment>(NS, "app", json!({"observedGeneration": 1, "replicas": 2}))
    });
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert_eq!(kstatus(&w), pair("Reconciling", "RolloutInProgress"));
    assert!(w.follows("s", "app"));
}
