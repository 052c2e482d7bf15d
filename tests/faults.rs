//! Faults: the operator killed mid-StopStart, another field manager
//! re-applying the Deployment, a certificate expiring in use, a leader dying
//! during a burst, a 409 Conflict on every write. Each ends converged with exactly the restarts the content
//! required.

mod support;

use std::process::Command;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, rollout_complete, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

fn set(name: &str, deployment: &str, restart: &str, secret: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": name},
        "spec": {"app": {"deployment": deployment}, "restart": restart, "certificates": [{
            "name": "client", "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
            "password": {"secretName": secret, "key": "password"}, "pinTo": ["api.example.com"]}]}
    }))
    .unwrap()
}

async fn p12_secret(ns: &TestNamespace, name: &str, fixture_name: &str) {
    put_secret(
        ns,
        name,
        &[
            (
                "certificate.pfx",
                &fixture(&format!("pkcs12/{fixture_name}")),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
}

/// A StopStart set, Ready; then a rotation, and the operator killed (SIGKILL)
/// once the app is scaled to zero, with the StopStart half done.
async fn stop_start_half_done(
    prefix: &str,
) -> (
    TestNamespace,
    Operator,
    Api<Deployment>,
    Api<ClientCertificateSet>,
) {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    p12_secret(&ns, "cert", "openssl-ec256-modern.p12").await;
    create_deployment(&ns, &deployment("app", 3, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let mut op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(
        &PostParams::default(),
        &set("s", "app", "StopStart", "cert"),
    )
    .await
    .unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;

    // Rotate, and kill the operator as soon as the app is stopped.
    p12_secret(&ns, "cert", "openssl-ec384-modern.p12").await;
    wait_until(
        &deployments,
        "app",
        T,
        "scaled to zero",
        |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()?.replicas) == Some(0),
    )
    .await;
    op.kill();
    (ns, op, deployments, sets)
}

/// Waits until the app is back at its recorded 3 replicas and the StopStart
/// record is gone.
async fn back_to_recorded_replicas(deployments: &Api<Deployment>) -> Deployment {
    wait_until(
        deployments,
        "app",
        T,
        "back to 3 replicas, record cleared",
        started_without_record(3),
    )
    .await
}

#[tokio::test]
async fn stop_start_survives_sigkill_between_stop_and_start() {
    let (ns, mut op, deployments, sets) = stop_start_half_done("fault-ss").await;
    let d = deployments.get("app").await.unwrap();
    let record = d
        .metadata
        .annotations
        .unwrap_or_default()
        .get("certpin.dev/stop-start")
        .cloned();
    assert!(
        record
            .as_deref()
            .is_some_and(|r| r.contains("\"replicas\":3")),
        "no record of the replica count: {record:?}"
    );

    op.restart();
    let d = back_to_recorded_replicas(&deployments).await;
    assert!(
        d.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
            .contains_key("certpin.dev/config-hash")
    );
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let s = wait_until(&sets, "s", T, "Ready", ready).await;
    assert_eq!(
        s.status.unwrap().certificates[0].key_algorithm.as_deref(),
        Some("EC P-384")
    );
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        3,
        "initial, wiring, rotation: nothing more"
    );
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = support::kube::kubectl_with_input(args, stdin.unwrap_or_default());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {}: {text}", args.join(" "));
    text
}

#[tokio::test]
async fn another_manager_reapplying_the_deployment_keeps_its_fields_and_ours_without_a_restart_loop()
 {
    let ns = TestNamespace::new("fault-gitops").await;
    install_crd(&ns.client).await;
    let op = Operator::start(&ns.name);
    p12_secret(&ns, "cert", "openssl-ec256-modern.p12").await;
    let manifest = |annotation: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: {}\n  annotations: {{team: {annotation}}}\n\
             spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    metadata: {{labels: {{app: app}}}}\n    spec:\n      \
             containers:\n      - name: mendix\n        image: example.invalid/app:1\n        env: [{{name: OWNED_BY_GITOPS, value: \"yes\"}}]\n",
            ns.name
        )
    };
    // A client-side `kubectl apply`, as a GitOps pipeline or a human does.
    kubectl(&["apply", "-f", "-"], Some(&manifest("a")));
    let deployments: Api<Deployment> = ns.api();
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "app", "Rolling", "cert"))
        .await
        .unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let rs = replica_sets(&ns, "app").await.len();
    // kubectl's own applies bump the generation without touching the pod
    // template; what matters is the template (and so no rollout).
    let template = deployments.get("app").await.unwrap().spec.unwrap().template;

    let env_names = |d: &Deployment| -> Vec<String> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    // Re-apply the original manifest (changed metadata only), client-side, then server-side as another manager.
    let before = op.reconciles("s");
    kubectl(&["apply", "-f", "-"], Some(&manifest("b")));
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "argocd-controller",
            "-f",
            "-",
        ],
        Some(&manifest("c")),
    );
    wait_for(T, "certpin to look at the changed Deployment", || {
        let n = op.reconciles("s");
        async move { n > before }
    })
    .await;
    let d = deployments.get("app").await.unwrap();
    let names = env_names(&d);
    assert!(
        names.contains(&"OWNED_BY_GITOPS".to_string()),
        "the other manager's env var is gone: {names:?}"
    );
    assert!(
        names.contains(&"MXRUNTIME_ClientCertificates".to_string()),
        "certpin's wiring is gone: {names:?}"
    );
    assert_eq!(d.metadata.annotations.clone().unwrap()["team"], "c");
    assert_eq!(
        d.spec.clone().unwrap().template,
        template,
        "the pod template changed"
    );
    assert_eq!(replica_sets(&ns, "app").await.len(), rs, "a restart");

    // A full replace without certpin's fields: restored once, then quiet.
    // The deployment controller may still be writing the rollout's status:
    // a replace on a stale resourceVersion is refused (409), so read and
    // replace again, as any client of `replace` must.
    let mut plain: Deployment = yaml_serde::from_str(&manifest("d")).unwrap();
    let mut attempts = 0;
    loop {
        plain.metadata.resource_version = deployments
            .get("app")
            .await
            .unwrap()
            .metadata
            .resource_version;
        match deployments
            .replace("app", &PostParams::default(), &plain)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 10 => attempts += 1,
            Err(e) => panic!("replacing the Deployment: {e}"),
        }
    }
    let restored = wait_until(
        &deployments,
        "app",
        T,
        "wiring restored",
        |d: Option<&Deployment>| {
            d.is_some_and(|d| env_names(d).contains(&"MXRUNTIME_ClientCertificates".to_string()))
        },
    )
    .await;
    assert!(env_names(&restored).contains(&"OWNED_BY_GITOPS".to_string()));
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let settled = replica_sets(&ns, "app").await.len();
    let generation = deployments.get("app").await.unwrap().metadata.generation;
    let before = op.reconciles("s");
    // A change certpin watches that changes no content (a label on the
    // referenced Secret, as a secret manager writes) makes it look again: it
    // must find nothing to do. (Labels on the set, or its status, no longer
    // trigger a pass at all.)
    p12_secret(&ns, "unrelated", "openssl-ec256-modern.p12").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    secrets
        .patch(
            "cert",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"metadata": {"labels": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    wait_for(T, "another reconcile", || {
        let n = op.reconciles("s");
        async move { n > before }
    })
    .await;
    assert_eq!(
        deployments.get("app").await.unwrap().metadata.generation,
        generation,
        "restart loop"
    );
    assert_eq!(replica_sets(&ns, "app").await.len(), settled);
}

#[tokio::test]
async fn a_certificate_expiring_in_use_warns_then_fails_without_restarting() {
    let ns = TestNamespace::new("fault-expiry").await;
    install_crd(&ns.client).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("short.p12");
    // A certificate valid for 40 more seconds, written by Python cryptography.
    let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12, BestAvailableEncryption
k = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short-lived")])
c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
     .serial_number(1).not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(seconds=40))
     .sign(k, hashes.SHA256()))
open(sys.argv[1], "wb").write(pkcs12.serialize_key_and_certificates(b"c", k, c, None, BestAvailableEncryption(b"changeit")))
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "python3 with cryptography is needed (scripts/gen-fixtures installs it)"
    );
    put_secret(
        &ns,
        "cert",
        &[
            ("certificate.pfx", &std::fs::read(&out).unwrap()),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "app", "Rolling", "cert"))
        .await
        .unwrap();
    let s = wait_until(
        &sets,
        "s",
        T,
        "Ready with a warning",
        |s: Option<&ClientCertificateSet>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == "Ready" && c.status == "True" && c.reason == "ValidWithWarnings"
                })
            })
        },
    )
    .await;
    assert!(
        s.status.unwrap().certificates[0]
            .warnings
            .iter()
            .any(|w| w.contains("expiring-soon"))
    );
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let rs = replica_sets(&ns, "app").await.len();
    let rendered = secret_digest(&ns, "s-certpin").await;
    // Expiry is noticed by itself (a scheduled look), not by any change.
    wait_until(
        &sets,
        "s",
        T,
        "Ready=False Expired",
        |s: Option<&ClientCertificateSet>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Expired")
            })
        },
    )
    .await;
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        rs,
        "restarted onto nothing"
    );
    assert_eq!(
        secret_digest(&ns, "s-certpin").await,
        rendered,
        "the last rendering changed"
    );
}

#[tokio::test]
async fn leader_failover_during_a_burst_converges_with_one_rollout_each() {
    let ns = TestNamespace::new("fault-burst").await;
    install_crd(&ns.client).await;
    p12_secret(&ns, "cert", "openssl-ec256-modern.p12").await;
    let n = 8;
    for i in 0..n {
        create_deployment(&ns, &deployment(&format!("app{i}"), 1, &["mendix"])).await;
    }
    let lease = ["--lease-name", "burst"];
    let mut a = Operator::start_with(&ns.name, "-a", &lease);
    let mut b = Operator::start_with(&ns.name, "-b", &lease);
    let sets: Api<ClientCertificateSet> = ns.api();
    for i in 0..n {
        sets.create(
            &PostParams::default(),
            &set(&format!("s{i}"), &format!("app{i}"), "Rolling", "cert"),
        )
        .await
        .unwrap();
        if i == n / 2 {
            // Kill whichever leads, mid-burst.
            wait_for(T, "a leader", || {
                let l = a.log_text().contains("became the leader")
                    || b.log_text().contains("became the leader");
                async move { l }
            })
            .await;
            if a.log_text().contains("became the leader") {
                a.kill()
            } else {
                b.kill()
            }
        }
    }
    for i in 0..n {
        wait_until(&sets, &format!("s{i}"), T, "Ready after failover", ready).await;
    }
    let deployments: Api<Deployment> = ns.api();
    for i in 0..n {
        wait_until(
            &deployments,
            &format!("app{i}"),
            T,
            "rollout",
            rollout_complete(),
        )
        .await;
        assert_eq!(
            replica_sets(&ns, &format!("app{i}")).await.len(),
            2,
            "app{i}: one rollout for the wiring, no more"
        );
    }
}

#[tokio::test]
async fn a_conflict_on_every_write_is_retried_to_exactly_one_rollout_per_change() {
    let ns = TestNamespace::new("fault-conflicts").await;
    install_crd(&ns.client).await;
    // certpin talks to the API server through a proxy that answers the first
    // attempt of every write (per method and object) with 409 Conflict.
    let proxy = certpin_testkit::proxy::start(
        ns.client.clone(),
        &std::env::temp_dir(),
        &format!("certpin-conflicts-{}", ns.name),
    )
    .await
    .unwrap();
    proxy
        .faults
        .conflict_first_write
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let kubeconfig = proxy.kubeconfig.to_string_lossy().into_owned();
    let _op = Operator::start_with_env(
        &ns.name,
        "",
        &["--leader-election=false"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    let conflicts = || {
        proxy
            .counts
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    p12_secret(&ns, "cert", "openssl-ec256-modern.p12").await;
    create_deployment(&ns, &deployment("app", 2, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "app", "Rolling", "cert"))
        .await
        .unwrap();
    let first = wait_until(&sets, "s", T, "Ready through the conflicts", ready).await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    // finalizer, ConfigMap, Secret, Deployment, status, Event: each refused once.
    let injected = conflicts();
    assert!(injected >= 6, "only {injected} writes were refused");
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        2,
        "one rollout for one change"
    );

    // A rotation: its writes are refused once more each.
    proxy.faults.reset();
    p12_secret(&ns, "cert", "openssl-rsa-modern.p12").await;
    let old_hash = first.status.as_ref().and_then(|s| s.applied_hash.clone());
    let rotated = wait_until(
        &sets,
        "s",
        T,
        "Ready with the rotated certificate",
        move |s: Option<&ClientCertificateSet>| {
            ready(s) && s.and_then(|s| s.status.as_ref()?.applied_hash.clone()) != old_hash
        },
    )
    .await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    assert!(
        conflicts() >= injected + 3,
        "the rotation's writes were not refused"
    );
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        3,
        "one rollout for one change"
    );
    assert_eq!(
        rotated.status.unwrap().certificates[0]
            .key_algorithm
            .as_deref()
            .map(|a| a.starts_with("RSA")),
        Some(true),
        "the rotated certificate is not the one in use"
    );

    // Deleting the set: unwiring and releasing the finalizer are refused once too.
    proxy.faults.reset();
    let before = conflicts();
    sets.delete("s", &Default::default()).await.unwrap();
    wait_for(T, "the set gone", || {
        let sets = sets.clone();
        async move { sets.get_opt("s").await.unwrap().is_none() }
    })
    .await;
    let d = deployments.get("app").await.unwrap();
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(env.is_empty(), "wiring left after delete: {env:?}");
    assert!(
        conflicts() >= before + 2,
        "the cleanup's writes were not refused"
    );
}

#[tokio::test]
async fn a_set_edited_while_a_stop_start_is_half_done_restarts_once_with_the_edit() {
    let (ns, mut op, deployments, sets) = stop_start_half_done("fault-ss-edit").await;
    // Meanwhile the user edits the set: one more pin.
    sets.patch(
        "s",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "add", "path": "/spec/certificates/0/pinTo/-", "value": "api.other.example"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let generation = sets.get("s").await.unwrap().metadata.generation;

    op.restart();
    back_to_recorded_replicas(&deployments).await;
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    let s = wait_until(&sets, "s", T, "Ready", ready).await;
    assert_eq!(s.metadata.generation, generation);
    assert_eq!(
        s.status.unwrap().certificates[0].key_algorithm.as_deref(),
        Some("EC P-384"),
        "the rotation is in use"
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    let usages = cms.get("s-certpin").await.unwrap().data.unwrap_or_default();
    assert!(
        usages
            .get("ClientCertificateUsages")
            .is_some_and(|u| u.contains("api.other.example")),
        "the edit is not in the settings: {usages:?}"
    );
    // Both changes went out in the one stop and start.
    assert_eq!(
        replica_sets(&ns, "app").await.len(),
        3,
        "initial, wiring, rotation with the edit: nothing more"
    );
    let d = deployments.get("app").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
}
