//! A restart only for new content: once the app's pods run the current
//! rendering (a Manual set's user restarted them), switching the strategy
//! restarts and scales nothing.

use serde_json::json;

use super::world::*;

/// A Manual set whose rotation the user applied with their own restart:
/// the template still carries the first rendering, the pod runs the new.
async fn restarted_by_the_user(strategy_before: &str) -> World {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": strategy_before}),
    );
    w.pass_ok("s").await;
    w.pod_of_template("app", "app-1");
    w.pass_rolled_out("s", "app").await;
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    if strategy_before == "Manual" {
        assert_eq!(ready(&w.set("s")).1, "RestartDue");
        // `kubectl rollout restart`: a new pod, made after the rendering.
        w.remove_pod("app-1");
        w.pod_of_template("app", "app-2");
    } else {
        w.remove_pod("app-1");
        w.pod_of_template("app", "app-2");
        w.pass_rolled_out("s", "app").await;
    }
    w.pass_ok("s").await;
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
    w
}

/// A pass after `restart` changed to `to`: what it wrote to the workload.
async fn switched(w: &World, to: &str) -> Vec<String> {
    w.edit_set("s", json!({"spec": {"restart": to}}));
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    w.writes_since(mark)
        .into_iter()
        .filter(|l| l.contains("deployments/app"))
        .collect()
}

#[tokio::test]
async fn after_the_users_restart_no_strategy_switch_restarts_the_app() {
    for to in ["Rolling", "StopStart"] {
        let w = restarted_by_the_user("Manual").await;
        let hash = template_hash(&w.deployment_now("app"));
        assert_eq!(
            switched(&w, to).await,
            Vec::<String>::new(),
            "Manual -> {to}"
        );
        assert_eq!(
            template_hash(&w.deployment_now("app")),
            hash,
            "Manual -> {to}"
        );
        assert!(
            is_ready(&w.set("s")),
            "Manual -> {to}: {:?}",
            ready(&w.set("s"))
        );
    }
}

#[tokio::test]
async fn rolling_to_stop_start_and_back_restarts_nothing() {
    let w = restarted_by_the_user("Rolling").await;
    let hash = template_hash(&w.deployment_now("app"));
    assert_eq!(switched(&w, "StopStart").await, Vec::<String>::new());
    assert_eq!(switched(&w, "Rolling").await, Vec::<String>::new());
    assert_eq!(template_hash(&w.deployment_now("app")), hash);
}

#[tokio::test]
async fn pods_that_run_older_settings_are_still_restarted_on_a_switch() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app"}, "restart": "Manual"}),
    );
    w.pass_ok("s").await;
    w.pod_of_template("app", "app-1");
    w.pass_rolled_out("s", "app").await;
    let hash = template_hash(&w.deployment_now("app"));
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.pass_ok("s").await;
    assert_eq!(ready(&w.set("s")).1, "RestartDue");
    // No restart by the user: switching to Rolling rolls the pods.
    assert_eq!(switched(&w, "Rolling").await.len(), 1);
    assert_ne!(template_hash(&w.deployment_now("app")), hash);
}

#[tokio::test]
async fn reordering_the_wired_containers_restarts_nothing() {
    let w = World::new();
    w.deployment("app", 1, &["mendix", "sidecar"]);
    w.create_set(
        "s",
        json!({"app": {"deployment": "app", "containers": ["mendix", "sidecar"]}}),
    );
    w.pass_ok("s").await;
    w.pod_of_template("app", "app-1");
    w.pass_rolled_out("s", "app").await;
    let before = w.deployment_now("app");
    w.edit_set(
        "s",
        json!({"spec": {"app": {"containers": ["sidecar", "mendix"]}}}),
    );
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let writes: Vec<String> = w
        .writes_since(mark)
        .into_iter()
        .filter(|l| {
            l.contains("deployments/app") || l.contains("configmaps") || l.contains("secrets")
        })
        .collect();
    assert_eq!(writes, Vec::<String>::new());
    assert_eq!(w.deployment_now("app").spec, before.spec);
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
}
