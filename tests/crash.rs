//! The operator killed at each step of the pipeline: with
//! CERTPIN_CRASH_AFTER=<step> it aborts right after that step (as a SIGKILL
//! there would); a fresh operator then converges, the Deployment ends at its
//! recorded replica count, and the app saw exactly one restart (StopStart).

mod support;

use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, rollout_complete, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
const STEPS: [&str; 10] = [
    "dereference",
    "validate",
    "apply-configmap",
    "apply-secret",
    "stop-record",
    "scale-zero",
    "stopped",
    "apply-deployment",
    "start-scale",
    "status",
];

async fn crash_at(step: &'static str) {
    let ns = TestNamespace::new(&format!("crash-{step}")).await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 3, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "restart": "StopStart", "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"}, "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap();
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set).await.unwrap();
    {
        let _op = Operator::start_with(&ns.name, "-first", &[]);
        wait_until(&sets, "s", T, "Ready", ready_with_key("EC P-256")).await;
        wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    }
    let rs_before = replica_sets(&ns, "app").await.len();

    // While no operator runs: rotate the certificate and move its pin (so
    // that the ConfigMap changes too); then an operator that crashes at `step`.
    let pin = json!({"spec": {"certificates": [{"name": "c",
        "pkcs12": {"secretName": "cert", "key": "certificate.pfx"}, "password": {"secretName": "cert", "key": "password"},
        "pinTo": ["api.example.com"]}]}});
    sets.patch(
        "s",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&pin),
    )
    .await
    .unwrap();
    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    crash_after(&ns, step);

    let _op = Operator::start_with(&ns.name, "-after", &[]);
    wait_until(
        &sets,
        "s",
        T,
        "Ready with the rotated certificate",
        ready_with_key("EC P-384"),
    )
    .await;
    let d = wait_until(
        &deployments,
        "app",
        T,
        "rollout at the recorded count",
        rollout_complete(),
    )
    .await;
    assert_eq!(
        d.spec.as_ref().unwrap().replicas,
        Some(3),
        "{step}: replica count not restored"
    );
    assert!(
        !d.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("certpin.dev/stop-start"),
        "{step}: record left behind"
    );
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        rs_before + 1,
        "{step}: not exactly one restart"
    );
}

/// An operator that aborts right after `step`, run until it has.
fn crash_after(ns: &TestNamespace, step: &str) {
    let mut crashing =
        Operator::start_with_env(&ns.name, "-crash", &[], &[("CERTPIN_CRASH_AFTER", step)]);
    assert!(
        crashing.wait_exit(T),
        "{step}: the operator never reached the step"
    );
    assert!(
        crashing
            .log_text()
            .contains(&format!("CERTPIN_CRASH_AFTER={step}")),
        "{step}: exited for another reason:\n{}",
        crashing.log_text()
    );
}

macro_rules! crash_tests {
    ($($name:ident => $step:literal),* $(,)?) => {
        $(#[tokio::test] async fn $name() { crash_at($step).await; })*
        #[test]
        fn every_step_is_covered() {
            let covered = [$($step),*];
            assert_eq!(covered.len(), STEPS.len());
            for s in STEPS { assert!(covered.contains(&s), "no test for {s}"); }
        }
    };
}

crash_tests! {
    killed_after_dereference => "dereference",
    killed_after_validate => "validate",
    killed_after_apply_configmap => "apply-configmap",
    killed_after_apply_secret => "apply-secret",
    killed_after_recording_the_replica_count => "stop-record",
    killed_after_scaling_to_zero => "scale-zero",
    killed_when_stopped => "stopped",
    killed_after_apply_deployment => "apply-deployment",
    killed_after_scaling_back => "start-scale",
    killed_after_status => "status",
}

/// A rolled-out two-replica app "app" with one certificate Secret "cert",
/// and a Rolling set "s" for it, created (no operator runs yet).
async fn app_and_set(
    ns: &TestNamespace,
) -> (
    Api<Deployment>,
    Api<ClientCertificateSet>,
    ClientCertificateSet,
) {
    install_crd(&ns.client).await;
    put_cert_secret(ns).await;
    create_deployment(ns, &deployment("app", 2, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"}, "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap();
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set).await.unwrap();
    (deployments, sets, set)
}

/// A new set, killed right after its first pass wired the Deployment and
/// before any status was written: the next operator must reuse that
/// rendering (its passwords are what the new pods run with), not render
/// afresh, so the app sees one restart and the rendered Secret is unchanged.
/// certpin skips reading the rendered objects of a set without status; this
/// is the case where the Deployment tells it to read them after all.
#[tokio::test]
async fn new_set_killed_after_wiring_keeps_its_rendering() {
    let ns = TestNamespace::new("crash-new").await;
    let (deployments, sets, set) = app_and_set(&ns).await;
    let original = replica_sets(&ns, "app").await.len();
    crash_after(&ns, "apply-deployment");
    assert!(
        // (The API server shows the schema's default, observedGeneration 0.)
        sets.get("s")
            .await
            .unwrap()
            .status
            .is_none_or(|st| st.conditions.is_empty() && st.observed_generation == Some(0)),
        "the crash was meant to come before the first status"
    );
    let rendered = certpin::testing::names::rendered(&set);
    let before = secret_digest(&ns, &rendered).await;
    assert!(before.is_some(), "the first pass rendered no Secret");

    let _op = Operator::start_with(&ns.name, "-after", &[]);
    let s = wait_until(&sets, "s", T, "Ready", ready).await;
    assert!(
        s.status.unwrap().last_restart.is_some(),
        "the first wiring rolled the app, and the status must say so"
    );
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    assert_eq!(
        secret_digest(&ns, &rendered).await,
        before,
        "the rendering the pods run with was replaced"
    );
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        original + 1,
        "not exactly one restart"
    );
}

/// Killed while deleting a set, right after the wiring was removed and before
/// the finalizer was: a fresh operator finishes the deletion (the set goes,
/// the rendered objects are garbage-collected), and the app keeps its
/// replica count and gets no restart beyond the one unwiring required.
#[tokio::test]
async fn killed_after_unwiring_during_deletion() {
    let ns = TestNamespace::new("crash-unwire").await;
    let (deployments, sets, _) = app_and_set(&ns).await;
    let original = replica_sets(&ns, "app").await;
    {
        let _op = Operator::start_with(&ns.name, "-first", &[]);
        wait_until(&sets, "s", T, "Ready", ready).await;
        wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    }
    assert_eq!(replica_sets(&ns, "app").await.len(), original.len() + 1);

    let mut crashing = Operator::start_with_env(
        &ns.name,
        "-crash",
        &[],
        &[("CERTPIN_CRASH_AFTER", "unwire")],
    );
    sets.delete("s", &Default::default()).await.unwrap();
    assert!(crashing.wait_exit(T), "the operator never unwired");
    assert!(
        crashing.log_text().contains("CERTPIN_CRASH_AFTER=unwire"),
        "exited for another reason:\n{}",
        crashing.log_text()
    );
    assert!(
        sets.get_opt("s").await.unwrap().is_some(),
        "the finalizer must hold the set until cleanup is complete"
    );

    let _op = Operator::start_with(&ns.name, "-after", &[]);
    support::kube::wait_for(T, "the set deleted", || {
        let sets = sets.clone();
        async move { sets.get_opt("s").await.unwrap().is_none() }
    })
    .await;
    let d = wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert!(!annotations.keys().any(|k| k.starts_with("certpin.dev/")));
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert!(pod.volumes.unwrap_or_default().is_empty());
    assert!(pod.containers[0].env.clone().unwrap_or_default().is_empty());
    // Unwired, the template is the original one again: the Deployment
    // controller scales the original ReplicaSet back up, no new one.
    assert_eq!(replica_sets(&ns, "app").await.len(), original.len() + 1);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    support::kube::wait_for(T, "the rendered ConfigMap garbage-collected", || {
        let cms = cms.clone();
        async move { cms.get_opt("s-certpin").await.unwrap().is_none() }
    })
    .await;
}

/// A rotation of a Rolling set, killed right after the Deployment was
/// written and before the status was: the next operator finds the template
/// already carrying the new settings, so it writes nothing. The restart
/// happened all the same, and the status and an Event still say so.
#[tokio::test]
async fn killed_after_a_rolling_restart_still_records_it() {
    let ns = TestNamespace::new("crash-record").await;
    let (deployments, sets, _) = app_and_set(&ns).await;
    {
        let _op = Operator::start_with(&ns.name, "-first", &[]);
        wait_until(&sets, "s", T, "Ready", ready).await;
        wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    }
    let last_restart = || async {
        let s = sets.get("s").await.unwrap();
        s.status.unwrap().last_restart.map(|t| t.0)
    };
    let first = last_restart()
        .await
        .expect("the first wiring rolled and said so");
    let restarts = |events: Vec<String>| events.iter().filter(|e| e.contains("restarted")).count();
    // The Event is written beside the status, so it may trail Ready.
    support::kube::wait_for(T, "the first wiring's Event", || {
        let ns = &ns;
        async move { restarts(support::kube::events_about(ns, "s").await) > 0 }
    })
    .await;
    let recorded = restarts(support::kube::events_about(&ns, "s").await);
    let rs_before = replica_sets(&ns, "app").await.len();
    // lastRestart has one-second precision: the next restart is in a later
    // second, so that a recorded one can be told from the first.
    support::kube::wait_for(T, "the next second", || async move {
        k8s_openapi::jiff::Timestamp::now().as_second() > first.as_second()
    })
    .await;

    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    crash_after(&ns, "apply-deployment");
    assert_eq!(
        last_restart().await,
        Some(first),
        "the crash was meant to come before the status"
    );

    let _op = Operator::start_with(&ns.name, "-after", &[]);
    let s = wait_until(
        &sets,
        "s",
        T,
        "Ready with the rotated certificate",
        ready_with_key("EC P-384"),
    )
    .await;
    let last = s.status.unwrap().last_restart.expect("lastRestart kept").0;
    assert!(
        last > first,
        "the restart the crashed operator made is not on the status: {last} (first wiring {first})"
    );
    support::kube::wait_for(T, "an Event for the restart", || {
        let ns = &ns;
        async move { restarts(support::kube::events_about(ns, "s").await) > recorded }
    })
    .await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        rs_before + 1,
        "not exactly one restart"
    );
}
