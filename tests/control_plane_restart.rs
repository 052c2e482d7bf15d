//! The control plane restarted under certpin, one part at a time and then
//! whole: the API server alone mid-reconcile, etcd alone right after a
//! rotation, and everything (etcd, API server, controllers, simulator)
//! right after a second rotation. Each time certpin converges with exactly
//! the restarts the content required. On a test bed of its own (a second
//! kwok cluster, torn down afterwards), so no other test sees the outages.

mod support;

use std::process::Command;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

/// A restart of the whole control plane on a loaded 2-core machine takes
/// 20–40 s before the API server answers again; certpin then needs a watch
/// re-list. The bound is generous because it is the control plane's as much
/// as certpin's.
const T: Duration = Duration::from_secs(180);

const BED: &str = "certpin-restart";

fn testbed(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
    let out = Command::new(script)
        .args(args)
        .env("CERTPIN_TESTBED_NAME", BED)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Tears the second test bed down however the test ends.
struct Bed;
impl Drop for Bed {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
        let _ = Command::new(script)
            .arg("down")
            .env("CERTPIN_TESTBED_NAME", BED)
            .output();
    }
}

async fn client_for(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Waits until the app has `n` ReplicaSets, then checks that no more came:
/// kwok's simulated kubelet may be slow after a restart, but certpin's part
/// is the pod template, one new ReplicaSet per change.
async fn expect_replica_sets(ns: &TestNamespace, n: usize, what: &str) {
    wait_for(T, what, || async move {
        replica_sets(ns, "app").await.len() >= n
    })
    .await;
    assert_eq!(replica_sets(ns, "app").await.len(), n, "{what}");
}

/// The rotation to `algorithm` is applied for the current generation; the
/// set is Ready or waits for the rollout that carries it.
fn applied_with_key(algorithm: &'static str) -> impl Fn(Option<&ClientCertificateSet>) -> bool {
    move |s| {
        let Some(s) = s else { return false };
        let Some(st) = s.status.as_ref() else {
            return false;
        };
        let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
        st.observed_generation == s.metadata.generation
            && st
                .certificates
                .first()
                .and_then(|c| c.key_algorithm.as_deref())
                == Some(algorithm)
            && cond("Applied").is_some_and(|c| c.status == "True")
            && cond("Ready").is_some_and(|c| c.status == "True" || c.reason == "RolloutInProgress")
    }
}

async fn rotate(secrets: &Api<Secret>, file: &str) {
    let mut s = secrets.get("cert").await.unwrap();
    s.data.as_mut().unwrap().insert(
        "certificate.pfx".into(),
        k8s_openapi::ByteString(fixture(file)),
    );
    s.metadata.managed_fields = None;
    secrets
        .replace("cert", &PostParams::default(), &s)
        .await
        .unwrap();
}

#[tokio::test]
async fn api_server_etcd_and_whole_control_plane_restarts_converge() {
    testbed(&["up"]);
    let _bed = Bed;
    let kubeconfig = testbed(&["kubeconfig"]);
    let client = client_for(&kubeconfig).await;
    let name = "cp-restart".to_string();
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    wait_for(T, "default ServiceAccount", || {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), "cp-restart");
        async move { sa.get_opt("default").await.ok().flatten().is_some() }
    })
    .await;
    let ns = TestNamespace {
        name,
        client: client.clone(),
    };
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 2, &["mendix"])).await;
    // Without leader election: a leader that cannot renew its Lease during
    // the outage exits by design (its pod would be restarted); this test is
    // about the reconcile loop riding out the outage.
    let op = Operator::start_with_env(
        &ns.name,
        "",
        &["--leader-election=false"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let sets: Api<ClientCertificateSet> = ns.api();
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"}, "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap();
    let secrets: Api<Secret> = ns.api();

    // 1. The API server alone, while the new set is being reconciled.
    sets.create(&PostParams::default(), &set).await.unwrap();
    testbed(&["restart", "kube-apiserver"]);
    wait_until(
        &sets,
        "s",
        T,
        "Ready after the API server restart",
        ready_with_key("EC P-256"),
    )
    .await;
    expect_replica_sets(&ns, 2, "one rollout for the wiring").await;

    // 2. etcd alone, right after a rotation.
    rotate(&secrets, "pkcs12/openssl-ec384-modern.p12").await;
    testbed(&["restart", "etcd"]);
    wait_until(
        &sets,
        "s",
        T,
        "rotated after the etcd restart",
        ready_with_key("EC P-384"),
    )
    .await;
    expect_replica_sets(&ns, 3, "exactly one rollout for the first rotation").await;

    // 3. The whole control plane, right after another rotation.
    rotate(&secrets, "pkcs12/openssl-rsa-modern.p12").await;
    testbed(&["restart"]);
    // Applied, not necessarily Ready: after a whole restart kwok's simulated
    // scheduler may leave a new pod Pending for minutes, and Ready waits for
    // the rollout (the set says RolloutInProgress meanwhile).
    wait_until(
        &sets,
        "s",
        T,
        "rotated after the full restart",
        applied_with_key("RSA 2048"),
    )
    .await;
    expect_replica_sets(&ns, 4, "exactly one rollout for the second rotation").await;
    assert!(!op.log_text().contains("panicked"));
}
