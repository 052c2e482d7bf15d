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

fn ready_with(alg: &'static str) -> impl Fn(Option<&ClientCertificateSet>) -> bool {
    move |s| {
        let Some(s) = s else { return false };
        s.status.as_ref().is_some_and(|st| {
            st.observed_generation == s.metadata.generation
                && st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                && st
                    .certificates
                    .first()
                    .and_then(|c| c.key_algorithm.as_deref())
                    == Some(alg)
        })
    }
}

async fn crash_at(step: &'static str) {
    let ns = TestNamespace::new(&format!("crash-{step}")).await;
    install_crd(&ns.client).await;
    let p12 = |f: &str| fixture(&format!("pkcs12/{f}"));
    put_secret(
        &ns,
        "cert",
        &[
            ("certificate.pfx", &p12("openssl-ec256-modern.p12")),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
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
        wait_until(&sets, "s", T, "Ready", ready_with("EC P-256")).await;
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
    put_secret(
        &ns,
        "cert",
        &[
            ("certificate.pfx", &p12("openssl-ec384-modern.p12")),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
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

    let _op = Operator::start_with(&ns.name, "-after", &[]);
    wait_until(
        &sets,
        "s",
        T,
        "Ready with the rotated certificate",
        ready_with("EC P-384"),
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
