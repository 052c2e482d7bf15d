//! Rotation bursts: changes closer together than `--debounce-ms` are one
//! restart (20 rotations of a set's Secret 100 ms apart, with a 500 ms
//! debounce: the default, 20 ms, is for changes that arrive together, such
//! as one `kubectl apply` of a file and its password, and a shared CI
//! machine can stretch those gaps); a single rotation still goes through at
//! once but for the debounce. The figures are printed. A burst that ends
//! on bad input changes nothing that runs, and writes nothing at all.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certpin::resource::ClientCertificateSet;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
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

fn set_s() -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap()
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
    sets.create(&PostParams::default(), &set_s()).await.unwrap();
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

async fn config_hash(ns: &TestNamespace) -> Option<String> {
    template_hash(&ns.api::<Deployment>().get("app").await.unwrap())
}

#[tokio::test]
async fn a_burst_that_ends_on_bad_input_changes_nothing_that_runs() {
    burst_ending_on_bad_input("burst-bad", 1).await;
}

/// An app scaled to zero (nothing runs to restart, but its pod template
/// still changes): the same holds.
#[tokio::test]
async fn a_burst_that_ends_on_bad_input_changes_nothing_of_an_app_scaled_to_zero() {
    burst_ending_on_bad_input("burst-bad-idle", 0).await;
}

async fn burst_ending_on_bad_input(name: &str, replicas: i32) {
    let ns = TestNamespace::new(name).await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    let inputs_put = Instant::now();
    create_deployment(&ns, &deployment("app", replicas, &["mendix"])).await;
    // A window long enough that the bad input surely comes within it.
    let _op = Operator::start_with(&ns.name, "", &["--debounce-ms=800"]);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set_s()).await.unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;
    let (secret, config_map) = ("s-certpin", ns.api::<ConfigMap>());
    let before = (
        secret_digest(&ns, secret).await,
        config_map.get(secret).await.unwrap().data,
        config_hash(&ns).await,
        replica_sets(&ns, "app").await.len(),
    );
    // Every version of the rendered Secret from here on.
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    let watch = watcher(
        ns.api::<Secret>(),
        watcher::Config::default().fields(&format!("metadata.name={secret}")),
    )
    .applied_objects();
    let watching = tokio::spawn(async move {
        futures::pin_mut!(watch);
        while let Some(Ok(s)) = watch.next().await {
            seen.lock().unwrap().push(s.metadata.resource_version);
        }
    });
    wait_for(T, "the watch of the rendered Secret", || {
        let v = versions.clone();
        async move { !v.lock().unwrap().is_empty() }
    })
    .await;

    // A valid rotation that begins a burst (no change of the set's inputs
    // in the last second), then within the window a file that is not PKCS12.
    let quiet_for = Duration::from_millis(1100).saturating_sub(inputs_put.elapsed());
    tokio::time::sleep(quiet_for).await;
    rotate(&ns, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_p12(&ns, "cert", "garbage.p12", b"changeit").await;
    wait_until(
        &sets,
        "s",
        T,
        "Ready=False Corrupt",
        not_ready_with("Corrupt"),
    )
    .await;
    let after = (
        secret_digest(&ns, secret).await,
        config_map.get(secret).await.unwrap().data,
        config_hash(&ns).await,
        replica_sets(&ns, "app").await.len(),
    );
    watching.abort();
    let versions = versions.lock().unwrap().len();
    eprintln!(
        "rendered Secret versions seen during the burst: {}",
        versions - 1
    );
    // The valid first rotation was rendered while the window ran, and
    // superseded by the bad input before anything was written.
    assert_eq!(
        versions, 1,
        "the rendered Secret was written during the burst"
    );
    assert_eq!(
        after, before,
        "rendered Secret (digest), ConfigMap, pod template hash and rollouts as before the burst"
    );
}
