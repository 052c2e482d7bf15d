//! The API server and etcd restarted mid-reconcile (the whole control plane
//! is stopped and started with its data): certpin converges with exactly the
//! restarts the content required. On a test bed of its own (a second kwok
//! cluster, torn down afterwards), so no other test sees the outage or the
//! restarted simulator.

mod support;

use std::process::Command;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_until};
use support::operator::*;

/// After a full control-plane restart the API server has been seen refusing
/// connections (certpin's and the watches') for over a minute on a loaded
/// 2-core machine; certpin must converge, but this bound is the control
/// plane's as much as certpin's.
const T: Duration = Duration::from_secs(300);

const BED: &str = "certpin-restart";

fn testbed(cmd: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
    let out = Command::new(script)
        .arg(cmd)
        .env("CERTPIN_TESTBED_NAME", BED)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn restart_control_plane() {
    testbed("restart");
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

fn ready(s: Option<&ClientCertificateSet>) -> bool {
    let Some(s) = s else { return false };
    s.status.as_ref().is_some_and(|st| {
        st.observed_generation == s.metadata.generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[tokio::test]
async fn api_server_and_etcd_restarts_mid_reconcile_converge() {
    testbed("up");
    let _bed = Bed;
    let kubeconfig = testbed("kubeconfig");
    let client = client_for(&kubeconfig).await;
    let name = "cp-restart".to_string();
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    support::kube::wait_for(T, "default ServiceAccount", || {
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
    put_secret(
        &ns,
        "cert",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec256-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
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
    sets.create(&PostParams::default(), &set).await.unwrap();
    restart_control_plane();
    let sets: Api<ClientCertificateSet> = Api::namespaced(client.clone(), &ns.name);
    wait_until(&sets, "s", T, "Ready after the restart", ready).await;
    // kwok's simulated kubelet may take long to make pods Ready after a
    // restart of the whole control plane; certpin's part is the pod
    // template: exactly one new ReplicaSet for the wiring.
    support::kube::wait_for(T, "the wiring's ReplicaSet", || {
        let ns = &ns;
        async move { replica_sets(ns, "app").await.len() >= 2 }
    })
    .await;
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        2,
        "one rollout for the wiring"
    );

    // Rotation, and the control plane restarts again right away.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    let mut s = secrets.get("cert").await.unwrap();
    s.data.as_mut().unwrap().insert(
        "certificate.pfx".into(),
        k8s_openapi::ByteString(fixture("pkcs12/openssl-ec384-modern.p12")),
    );
    s.metadata.managed_fields = None;
    secrets
        .replace("cert", &PostParams::default(), &s)
        .await
        .unwrap();
    restart_control_plane();
    wait_until(
        &sets,
        "s",
        T,
        "rotated after the restart",
        |s: Option<&ClientCertificateSet>| {
            ready(s)
                && s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                    st.certificates[0].key_algorithm.as_deref() == Some("EC P-384")
                })
        },
    )
    .await;
    // After a second full restart kwok's simulated kubelet may be slow to
    // make new pods Ready; certpin's part is the new pod template: one new
    // ReplicaSet, no more.
    support::kube::wait_for(T, "the rotation's ReplicaSet", || {
        let ns = &ns;
        async move { replica_sets(ns, "app").await.len() >= 3 }
    })
    .await;
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        3,
        "exactly one rollout for the rotation"
    );
    assert!(!op.log_text().contains("panicked"));
}
