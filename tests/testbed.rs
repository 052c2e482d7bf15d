//! The local control plane is a real one: a Deployment schedules onto the
//! simulated node, becomes Available, and a rolling restart completes.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::kube::{TestNamespace, rollout_complete, wait_until};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deployment_rolls_out_and_restarts_on_the_simulated_node() {
    let ns = TestNamespace::new("testbed").await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let ready = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    assert!(ready, "no Ready node");

    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let d = wait_until(
        &deployments,
        "web",
        Duration::from_secs(90),
        "rollout",
        rollout_complete(),
    )
    .await;
    assert_eq!(d.status.unwrap().available_replicas, Some(2));

    let pods: Api<Pod> = ns.api();
    let before: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before.len(), 2);

    // What `kubectl rollout restart` does.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": chrono::Utc::now().to_rfc3339()
    }}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until(
        &deployments,
        "web",
        Duration::from_secs(90),
        "restart rollout",
        rollout_complete(),
    )
    .await;
    support::kube::wait_for(Duration::from_secs(60), "old pods to be replaced", || {
        let (pods, before) = (pods.clone(), before.clone());
        async move {
            let now = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items;
            now.len() == 2
                && now.iter().all(|p| {
                    !before.contains(p.metadata.name.as_ref().unwrap())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
        }
    })
    .await;
}
