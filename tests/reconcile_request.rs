//! The reconcile request and the cluster-side commands, end to end: the
//! annotation gets a pass at once (one that reads the Secrets again) and
//! its echo, restarts nothing by itself; `certpin status` and `certpin
//! reconcile` (also as `kubectl certpin`) against the test bed.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::kube::{TestNamespace, rollout_complete, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
/// How soon a request must be handled: the resync is an hour, so only the
/// request itself can bring a pass this soon.
const PROMPT: Duration = Duration::from_secs(20);

fn set(name: &str, deployment: &str, secret: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": deployment}, "certificates": [{
            "name": "client", "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
            "password": {"secretName": secret, "key": "password"}}]}
    }))
    .unwrap()
}

/// The Secret `cert`, a Deployment `app` and the set `s` wiring them,
/// Ready and rolled out.
async fn ready_app(ns: &TestNamespace) -> Api<ClientCertificateSet> {
    put_cert_secret(ns).await;
    create_deployment(ns, &deployment("app", 1, &["mendix"])).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "app", "cert"))
        .await
        .unwrap();
    wait_until(&sets, "s", T, "Ready", ready_with_key("EC P-256")).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    sets
}

/// Runs the certpin binary against the test bed (the test's KUBECONFIG).
async fn certpin(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_certpin"))
        .args(args)
        .output()
        .await
        .unwrap();
    outcome(out)
}

fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn echoed(s: &ClientCertificateSet) -> Option<&str> {
    s.status.as_ref()?.last_handled_reconcile_at.as_deref()
}

fn annotation<'a>(s: &'a ClientCertificateSet, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[tokio::test]
async fn a_request_reads_a_secret_whose_change_certpin_missed_and_is_echoed() {
    let ns = TestNamespace::new("req-missed").await;
    install_crd(&ns.client).await;
    // certpin's watch of Secrets stays silent: it misses every change.
    let proxy = certpin_testkit::proxy::start(
        ns.client.clone(),
        &std::env::temp_dir(),
        &format!("certpin-silent-{}", ns.name),
    )
    .await
    .unwrap();
    let silent = &proxy.faults.silent_secret_watches;
    silent.store(true, std::sync::atomic::Ordering::Relaxed);
    let kubeconfig = proxy.kubeconfig.to_string_lossy().into_owned();
    let _op = Operator::start_with_env(
        &ns.name,
        "",
        &["--leader-election=false"],
        &[("KUBECONFIG", &kubeconfig)],
    );
    let sets = ready_app(&ns).await;

    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unnoticed = sets.get("s").await.unwrap();
    assert!(
        ready_with_key("EC P-256")(Some(&unnoticed)),
        "certpin noticed the rotation without a request: the test shows nothing"
    );

    let started = Instant::now();
    let (code, out, err) = certpin(&["reconcile", "s", "-n", &ns.name]).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(took < PROMPT, "the request took {took:?}");
    eprintln!("the request was handled in {took:?}");
    assert!(out.starts_with(&format!("{}/s: Ready=", ns.name)), "{out}");
    // It returned once the echo was there, with the rotation read.
    let handled = sets.get("s").await.unwrap();
    let requested = annotation(&handled, "certpin.dev/reconcile-requested-at");
    assert!(requested.is_some());
    assert_eq!(echoed(&handled), requested);
    let key = handled.status.as_ref().and_then(|s| s.certificates.first());
    let key = key.and_then(|c| c.key_algorithm.as_deref());
    assert_eq!(key, Some("EC P-384"), "the pass read the Secret again");
    wait_until(&sets, "s", T, "Ready, rotated", ready_with_key("EC P-384")).await;
}

#[tokio::test]
async fn fluxs_annotation_is_echoed_at_once_and_restarts_nothing() {
    let ns = TestNamespace::new("req-flux").await;
    install_crd(&ns.client).await;
    let _op = Operator::start(&ns.name);
    let sets = ready_app(&ns).await;
    let deployments: Api<Deployment> = ns.api();
    let before = deployments.get("app").await.unwrap();
    let replica_sets_before = replica_sets(&ns, "app").await.len();

    // As `kubectl annotate --overwrite ccs/s reconcile.fluxcd.io/requestedAt="$(date +%s)"`.
    let value = chrono::Utc::now().timestamp().to_string();
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}});
    let started = Instant::now();
    sets.patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let expected = value.clone();
    let handled = wait_until(
        &sets,
        "s",
        PROMPT,
        "the echo",
        move |s: Option<&ClientCertificateSet>| s.and_then(echoed) == Some(expected.as_str()),
    )
    .await;
    eprintln!("the request was handled in {:?}", started.elapsed());
    assert!(ready(Some(&handled)), "{:?}", handled.status);

    let after = deployments.get("app").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(
        after.spec.map(|s| s.template),
        before.spec.map(|s| s.template),
        "the pod template changed: a restart"
    );
    assert_eq!(replica_sets(&ns, "app").await.len(), replica_sets_before);
}

/// The cells of each line of a table (cells hold single spaces only).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// A directory holding `kubectl-certpin`, linked to the binary as the
/// README says, to put first on the PATH.
fn plugin_dir(ns: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("certpin-plugin-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("kubectl-certpin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_certpin"), &link).unwrap();
    dir
}

async fn kubectl_plugin(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let path = std::env::var("PATH").unwrap_or_default();
    let out = tokio::process::Command::new("kubectl")
        .arg("certpin")
        .args(args)
        .env("PATH", format!("{}:{path}", dir.display()))
        .output()
        .await
        .expect("kubectl (eval \"$(scripts/testbed env)\")");
    outcome(out)
}

#[tokio::test]
async fn status_lists_a_ready_and_a_stalled_set_also_as_a_kubectl_plugin() {
    let ns = TestNamespace::new("req-status").await;
    install_crd(&ns.client).await;
    let _op = Operator::start(&ns.name);
    let sets = ready_app(&ns).await;
    put_p12(&ns, "wrong", "openssl-ec256-modern.p12", b"not-it").await;
    sets.create(&PostParams::default(), &set("stalled", "other", "wrong"))
        .await
        .unwrap();
    wait_until(
        &sets,
        "stalled",
        T,
        "WrongPassword",
        not_ready_with("WrongPassword"),
    )
    .await;
    let good = sets.get("s").await.unwrap();
    let expiry = good.status.as_ref().and_then(|s| s.earliest_expiry.clone());
    let expiry = expiry.unwrap().0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();

    let (code, out, err) = certpin(&["status", "-n", &ns.name]).await;
    assert_eq!(code, 0, "{err}");
    let rows = cells(&out);
    let header = [
        "NAMESPACE",
        "NAME",
        "READY",
        "REASON",
        "EARLIEST EXPIRY",
        "WORKLOAD",
        "LAST RESTART",
    ];
    assert_eq!(rows[0], header, "{out}");
    let n = ns.name.as_str();
    let (s, stalled) = (&rows[1], &rows[2]);
    assert_eq!(s[..4], [n, "s", "True", "Applied"], "{out}");
    assert!(s[4].starts_with(&format!("{expiry} (in ")), "{out}");
    assert_eq!(s[5], "deployment/app", "{out}");
    assert!(s[6].ends_with(" ago)"), "the wiring's restart: {out}");
    let want = [
        n,
        "stalled",
        "False",
        "WrongPassword",
        "-",
        "deployment/other",
        "-",
    ];
    assert_eq!(stalled[..], want, "{out}");
    assert_eq!(rows.len(), 3, "{out}");

    let dir = plugin_dir(n);
    let (code, out, err) = kubectl_plugin(&dir, &["status", "stalled", "-n", n]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(cells(&out), [header.to_vec(), want.to_vec()], "{out}");
    let (code, _, err) = kubectl_plugin(&dir, &["status", "--no-such-flag"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("Usage: kubectl certpin status"), "{err}");
}

#[tokio::test]
async fn reconcile_times_out_non_zero_when_certpin_is_not_running() {
    let ns = TestNamespace::new("req-timeout").await;
    install_crd(&ns.client).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "app", "cert"))
        .await
        .unwrap();
    let started = Instant::now();
    let (code, out, err) = certpin(&["reconcile", "s", "-n", &ns.name, "--timeout", "3s"]).await;
    let took = started.elapsed();
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("no pass handled the request within 3s"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(3) && took < PROMPT, "{took:?}");
    let asked = sets.get("s").await.unwrap();
    assert!(annotation(&asked, "certpin.dev/reconcile-requested-at").is_some());

    let (code, _, err) = certpin(&["reconcile", "nope", "-n", &ns.name]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no ClientCertificateSet \"nope\""), "{err}");
}
