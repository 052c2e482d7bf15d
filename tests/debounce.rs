//! Rotation bursts: changes closer together than `--debounce-ms` are one
//! restart (20 rotations of a set's Secret 100 ms apart, with a 500 ms
//! debounce: the default, 20 ms, is for changes that arrive together, such
//! as one `kubectl apply` of a file and its password, and a shared CI
//! machine can stretch those gaps); a single rotation still goes through at
//! once but for the debounce. The figures are printed.

mod support;

use std::time::{Duration, Instant};

use certpin::resource::ClientCertificateSet;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

fn file(r: usize) -> Vec<u8> {
    fixture(if r.is_multiple_of(2) {
        "pkcs12/openssl-ec256-modern.p12"
    } else {
        "pkcs12/openssl-ec384-modern.p12"
    })
}

async fn rotate(ns: &TestNamespace, r: usize) {
    put_secret(
        ns,
        "cert",
        &[("certificate.pfx", &file(r)), ("password", b"changeit")],
        None,
    )
    .await;
}

async fn applied(sets: &Api<ClientCertificateSet>) -> Option<String> {
    sets.get("s").await.ok()?.status?.applied_hash
}

#[tokio::test]
async fn a_burst_of_rotations_restarts_the_app_once() {
    let ns = TestNamespace::new("burst").await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    let op = Operator::start_with(&ns.name, "", &["--debounce-ms=500"]);
    let sets: Api<ClientCertificateSet> = ns.api();
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;
    let wired = replica_sets(&ns, "app").await.len();

    let initial_fp = sets.get("s").await.unwrap().status.unwrap().certificates[0]
        .sha256_fingerprint
        .clone();
    // One rotation: applied, once, a little after the debounce.
    let first = applied(&sets).await;
    let t = Instant::now();
    rotate(&ns, 1).await;
    wait_for(T, "the rotation applied", || {
        let (sets, first) = (sets.clone(), first.clone());
        async move { applied(&sets).await.is_some_and(|h| Some(h) != first) }
    })
    .await;
    eprintln!(
        "one rotation applied {:.2} s after the Secret changed",
        t.elapsed().as_secs_f64()
    );
    let after_one = replica_sets(&ns, "app").await.len();
    assert_eq!(after_one, wired + 1, "one rollout for one rotation");

    // 20 rotations, 100 ms apart, ending on the first content again.
    let before = applied(&sets).await;
    let passes = op.reconciles("s");
    for r in 1..=20 {
        rotate(&ns, r).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(T, "the burst's last content applied", || {
        let (sets, before, fp) = (sets.clone(), before.clone(), initial_fp.clone());
        async move {
            let s = sets.get("s").await.unwrap();
            let st = s.status.unwrap_or_default();
            st.applied_hash != before && st.certificates[0].sha256_fingerprint == fp
        }
    })
    .await;
    let rollouts = replica_sets(&ns, "app").await.len() - after_one;
    let passes = op.reconciles("s") - passes;
    eprintln!("20 rotations in 2 s: {rollouts} rollout(s), {passes} pass(es)");
    assert_eq!(rollouts, 1, "a burst is one restart");
}
