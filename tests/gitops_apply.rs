//! The app's Deployment re-applied from its manifest (which has none of
//! certpin's wiring) the ways GitOps tools apply, with certpin running:
//! - `kubectl apply` (client-side, the last-applied annotation: Argo CD's
//!   default sync);
//! - `kubectl apply --server-side --field-manager=argocd-like` (Argo CD's
//!   `ServerSideApply=true`, Flux's kustomize-controller);
//! - the same with `--force-conflicts` (Flux applies with force);
//! - `kubectl replace` (Argo CD's `Replace=true`).
//!
//! For each: the unchanged manifest applied three times, then a new image;
//! rollouts are counted as the Deployment controller's revisions
//! (`deployment.kubernetes.io/revision`; a rollout back to an earlier
//! template reuses its ReplicaSet, so ReplicaSets would not show it). The
//! applies keep certpin's wiring and cost no rollout, except `replace`,
//! which removes the wiring: certpin puts it back, at two rollouts per
//! replace (one to the unwired template, which the Deployment controller
//! starts as soon as the replace lands, and one back), the fewest that way
//! allows without an admission webhook. After the applies, a pass of
//! certpin over the final state writes nothing: no restart loop.

mod support;

use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::kube::{TestNamespace, kubectl_with_input, rollout_complete, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(60);

/// The app as its repository has it: an env var and a volume of its own,
/// none of certpin's.
fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels: {{app: app}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: app}}
  template:
    metadata:
      labels: {{app: app}}
    spec:
      containers:
      - name: mendix
        image: {image}
        env:
        - {{name: RUNTIME_PARAM, value: "1"}}
        volumeMounts:
        - {{name: data, mountPath: /data}}
      volumes:
      - name: data
        emptyDir: {{}}
"#
    )
}

#[derive(Clone, Copy, Debug)]
enum Way {
    ClientSide,
    ServerSide,
    ServerSideForced,
    Replace,
}

impl Way {
    /// kubectl's arguments to create the Deployment this way.
    fn create_args(self) -> &'static [&'static str] {
        match self {
            Way::ClientSide => &["apply"],
            Way::ServerSide => &["apply", "--server-side", "--field-manager=argocd-like"],
            Way::ServerSideForced => &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=argocd-like",
            ],
            // Argo CD's Replace=true creates with `kubectl create`.
            Way::Replace => &["create"],
        }
    }

    /// kubectl's arguments to re-apply it this way.
    fn apply_args(self) -> &'static [&'static str] {
        match self {
            Way::Replace => &["replace"],
            way => way.create_args(),
        }
    }
}

fn kubectl(ns: &str, args: &[&str], doc: &str) {
    let out = kubectl_with_input(&[&["-n", ns], args, &["-f", "-"]].concat(), doc);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn revision(d: &Deployment) -> u64 {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// certpin's wiring, and the app's own env var and volume beside it.
fn wired(d: Option<&Deployment>) -> bool {
    let Some(pod) = d.and_then(|d| d.spec.as_ref()?.template.spec.as_ref()) else {
        return false;
    };
    let env: Vec<&str> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    env.contains(&"MXRUNTIME_ClientCertificates")
        && env.contains(&"RUNTIME_PARAM")
        && volumes.contains(&"certpin-client-certificates")
        && volumes.contains(&"data")
        && template_hash(d.unwrap()).is_some()
}

fn image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// Wired, running `image`, rolled out, and the set Ready: certpin and the
/// Deployment controller are both done.
async fn settled(ns: &TestNamespace, image_: &str) -> Deployment {
    let apps: Api<Deployment> = ns.api();
    let sets: Api<ClientCertificateSet> = ns.api();
    let image_ = image_.to_string();
    wait_until(&apps, "app", T, "wired", move |d: Option<&Deployment>| {
        wired(d) && d.and_then(image).as_deref() == Some(&image_)
    })
    .await;
    let d = wait_until(&apps, "app", T, "rolled out", rollout_complete()).await;
    wait_until(&sets, "s", T, "Ready", ready).await;
    d
}

/// The rollouts three re-applies of the unchanged manifest cost, and one
/// of a new image, `way` by way; asserts the wiring is there after each and
/// that certpin, looking at the final state, changes nothing.
async fn reapplied(way: Way) -> (u64, u64) {
    let ns = TestNamespace::new(&format!("apply-{}", format!("{way:?}").to_lowercase())).await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    kubectl(
        &ns.name,
        way.create_args(),
        &manifest("example.invalid/mendix:1"),
    );
    let op = Operator::start(&ns.name);
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"},
            "pinTo": ["api.example.com"]}]}
    }))
    .unwrap();
    ns.api::<ClientCertificateSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    let start = revision(&settled(&ns, "example.invalid/mendix:1").await);

    for _ in 0..3 {
        kubectl(
            &ns.name,
            way.apply_args(),
            &manifest("example.invalid/mendix:1"),
        );
        settled(&ns, "example.invalid/mendix:1").await;
    }
    let d = idle_pass(&ns, &op).await;
    let same = revision(&d).saturating_sub(start);

    // A new version from the repository: its own rollout, wiring kept.
    kubectl(
        &ns.name,
        way.apply_args(),
        &manifest("example.invalid/mendix:2"),
    );
    settled(&ns, "example.invalid/mendix:2").await;
    let d = idle_pass(&ns, &op).await;
    let new = revision(&d).saturating_sub(start + same);
    eprintln!(
        "{way:?}: {same} rollouts for 3 re-applies of the same manifest, {new} for a new image"
    );
    (same, new)
}

/// Makes certpin look at the Deployment once more (an annotation of the
/// test's own: certpin passes on annotation changes) and waits for that
/// pass; asserts that it changed nothing of the Deployment's spec: after
/// the applies there is nothing left for certpin to do, so no loop.
async fn idle_pass(ns: &TestNamespace, op: &Operator) -> Deployment {
    let apps: Api<Deployment> = ns.api();
    let before = apps.get("app").await.unwrap();
    let passes = op.reconciles("s");
    let poke = json!({"metadata": {"annotations": {"test.certpin.dev/poke": passes.to_string()}}});
    apps.patch(
        "app",
        &PatchParams::apply("certpin-tests-poke"),
        &Patch::Merge(&poke),
    )
    .await
    .unwrap();
    wait_for(T, "certpin's pass after the poke", || {
        let n = op.reconciles("s");
        async move { n > passes }
    })
    .await;
    let after = wait_until(&apps, "app", T, "rolled out", rollout_complete()).await;
    // A Deployment's generation counts annotation changes too: the poke's.
    let template = |d: &Deployment| d.spec.as_ref().map(|s| s.template.clone());
    assert_eq!(
        (
            after.metadata.generation,
            revision(&after),
            template(&after)
        ),
        (
            before.metadata.generation.map(|g| g + 1),
            revision(&before),
            template(&before)
        ),
        "certpin changed the Deployment after the applies"
    );
    after
}

#[tokio::test]
async fn client_side_apply_keeps_the_wiring_without_a_rollout() {
    assert_eq!(reapplied(Way::ClientSide).await, (0, 1));
}

#[tokio::test]
async fn server_side_apply_by_another_manager_keeps_the_wiring_without_a_rollout() {
    assert_eq!(reapplied(Way::ServerSide).await, (0, 1));
}

#[tokio::test]
async fn forced_server_side_apply_keeps_the_wiring_without_a_rollout() {
    assert_eq!(reapplied(Way::ServerSideForced).await, (0, 1));
}

#[tokio::test]
async fn replace_removes_the_wiring_and_certpin_restores_it_in_two_rollouts() {
    assert_eq!(reapplied(Way::Replace).await, (6, 2));
}
