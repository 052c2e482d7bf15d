//! What GitOps tools, dashboards and alerts make of a set, computed with the
//! tools' own code on live sets:
//! - Flux: kstatus (sigs.k8s.io/cli-utils) through tools/gitops-check;
//! - Argo CD: the shipped Lua health check, run on its own test cases in
//!   gopher-lua (the interpreter Argo CD embeds);
//! - Prometheus: the chart's alert rules under `promtool test rules`, on the
//!   series certpin exports;
//! - Ready is never True while the rollout of the applied settings is
//!   incomplete (a ResourceQuota holds the rollout back), Rolling and StopStart.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::Condition as _;
use serde_json::{Value, json};
use support::kube::{TestNamespace, rollout_complete, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

fn set(name: &str, app: Value, secret: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": app, "certificates": [{"name": "c",
            "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
            "password": {"secretName": secret, "key": "password"},
            "pinTo": ["api.example.com"]}]}
    }))
    .unwrap()
}

async fn create(ns: &TestNamespace, s: &ClientCertificateSet) {
    ns.api::<ClientCertificateSet>()
        .create(&PostParams::default(), s)
        .await
        .unwrap();
}

/// A namespace with the CRD, the Secret `cert` and the Secret `wrong` (the
/// same file with a wrong password).
async fn with_secrets(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    put_p12(&ns, "wrong", "openssl-ec256-modern.p12", b"nope").await;
    ns
}

/// A Deployment whose pods can never be scheduled (no node has the label).
fn unschedulable(name: &str, progress_deadline: Option<i32>) -> Deployment {
    let mut d = deployment(name, 1, &["mendix"]);
    let spec = d.spec.as_mut().unwrap();
    spec.progress_deadline_seconds = progress_deadline;
    if let Some(pod) = spec.template.spec.as_mut() {
        pod.node_selector =
            Some([("certpin.dev/no-such-node".to_string(), "x".to_string())].into());
    }
    d
}

/// kstatus's verdict on the set as `kubectl get -o json` shows it:
/// (status, message).
fn kstatus(ns: &TestNamespace, name: &str) -> (String, String) {
    let json = Command::new("kubectl")
        .args([
            "get",
            "clientcertificateset",
            name,
            "-n",
            &ns.name,
            "-o",
            "json",
        ])
        .output()
        .expect("kubectl");
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let mut child = Command::new("gitops-check")
        .arg("kstatus")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gitops-check (built by scripts/testbed; eval \"$(scripts/testbed env)\")");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&json.stdout).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.trim_end().split_once('\t').unwrap();
    (status.to_string(), message.to_string())
}

fn assert_kstatus(ns: &TestNamespace, name: &str, want: &str, says: &str) {
    let (status, message) = kstatus(ns, name);
    assert_eq!(status, want, "{name}: {message}");
    assert!(message.contains(says), "{name}: {message:?} lacks {says:?}");
}

#[test]
fn argo_cd_health_check_passes_its_test_cases() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argocd/resource_customizations/certpin.dev/ClientCertificateSet"
    );
    let out = Command::new("gitops-check")
        .args(["argo-health", dir])
        .output()
        .expect("gitops-check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every documented health status is covered.
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(
            text.contains(&format!(": {status} ")),
            "no {status} case:\n{text}"
        );
    }
}

#[tokio::test]
async fn flux_sees_each_state_of_a_set_through_kstatus() {
    let ns = with_secrets("kstatus").await;
    put_p12(&ns, "corrupt", "truncated.p12", b"changeit").await;
    put_p12(&ns, "expired", "python-expired.p12", b"changeit").await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    create_deployment(&ns, &deployment("other", 1, &["mendix"])).await;
    create_deployment(&ns, &unschedulable("pending", None)).await;
    create_deployment(&ns, &unschedulable("stuck", Some(2))).await;

    // Before certpin has seen it.
    create(&ns, &set("early", json!({"deployment": "app"}), "cert")).await;
    assert_kstatus(&ns, "early", "InProgress", "observed generation is 0");

    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    create(
        &ns,
        &set("pending", json!({"deployment": "pending"}), "cert"),
    )
    .await;
    create(&ns, &set("stuck", json!({"deployment": "stuck"}), "cert")).await;
    create(&ns, &set("wrong", json!({"deployment": "app"}), "wrong")).await;
    create(
        &ns,
        &set("expired", json!({"deployment": "app"}), "expired"),
    )
    .await;
    create(
        &ns,
        &set(
            "nocontainer",
            json!({"deployment": "other", "containers": ["nope"]}),
            "cert",
        ),
    )
    .await;
    create(&ns, &set("nosecret", json!({"deployment": "app"}), "later")).await;
    create(
        &ns,
        &set("corrupt", json!({"deployment": "app"}), "corrupt"),
    )
    .await;

    wait_until(&sets, "early", T, "Ready", ready).await;
    let d = ns.api::<Deployment>().get("app").await.unwrap();
    assert!(
        rollout_complete().matches_object(Some(&d)),
        "Ready before the rollout ended: {:?}",
        d.status
    );
    assert_kstatus(&ns, "early", "Current", "");
    // Another set for `app`, once "early" holds it: a conflict.
    create(&ns, &set("second", json!({"deployment": "app"}), "cert")).await;
    // `kubectl describe deployment` says why the app rolled.
    let describe = Command::new("kubectl")
        .args(["describe", "deployment", "app", "-n", &ns.name])
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(
        text.contains("ClientCertificatesApplied")
            && text.contains(r#"ClientCertificateSet "early""#),
        "{text}"
    );

    wait_until(
        &sets,
        "pending",
        T,
        "RolloutInProgress",
        not_ready_with("RolloutInProgress"),
    )
    .await;
    assert_kstatus(&ns, "pending", "InProgress", "");
    wait_until(
        &sets,
        "stuck",
        T,
        "RolloutStuck",
        not_ready_with("RolloutStuck"),
    )
    .await;
    assert_kstatus(&ns, "stuck", "Failed", "progress deadline");
    for (name, reason) in [
        ("wrong", "WrongPassword"),
        ("expired", "Expired"),
        ("nocontainer", "ContainerNotFound"),
        ("corrupt", "Corrupt"),
        ("second", "Conflict"),
    ] {
        wait_until(&sets, name, T, reason, not_ready_with(reason)).await;
        assert_kstatus(&ns, name, "Failed", "");
    }
    wait_until(
        &sets,
        "nosecret",
        T,
        "SecretNotFound",
        not_ready_with("SecretNotFound"),
    )
    .await;
    assert_kstatus(&ns, "nosecret", "InProgress", "");
}

/// A quota of `pods` pods in the namespace (`None`: removed).
async fn quota(ns: &TestNamespace, pods: Option<u32>) {
    let api: Api<ResourceQuota> = ns.api();
    match pods {
        Some(n) => {
            let q = json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "pods"}, "spec": {"hard": {"pods": n.to_string()}}});
            api.patch(
                "pods",
                &PatchParams::apply("certpin-tests").force(),
                &Patch::Apply(&q),
            )
            .await
            .unwrap();
        }
        None => {
            api.delete("pods", &DeleteParams::default()).await.unwrap();
        }
    }
}

/// The ReplicaSet controller reports that it could not create a pod.
fn replica_failure(d: Option<&Deployment>) -> bool {
    d.and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        })
}

/// Holds `app`'s rollout back with a quota; the set must stay not Ready
/// (RolloutInProgress) while the ReplicaSet controller cannot create pods,
/// and turn Ready once the quota is gone, with the rollout complete.
async fn held_back_then_released(ns: &TestNamespace, set: &str, app: &str) {
    let sets: Api<ClientCertificateSet> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    wait_until(
        &deployments,
        app,
        T,
        "a refused pod creation",
        replica_failure,
    )
    .await;
    // The set's status follows the controller's report within a pass
    // (certpin writes it when the rollout reaches a step): waited for, with
    // the quota still holding the rollout back.
    wait_until(
        &sets,
        set,
        T,
        "RolloutInProgress while no new pod can be created",
        not_ready_with("RolloutInProgress"),
    )
    .await;
    assert!(
        replica_failure(deployments.get(app).await.ok().as_ref()),
        "the rollout is still held back"
    );
    quota(ns, None).await;
    wait_until(&sets, set, T, "Ready", ready).await;
    let d = deployments.get(app).await.unwrap();
    assert!(
        rollout_complete().matches_object(Some(&d)),
        "{:?}",
        d.status
    );
}

#[tokio::test]
async fn ready_waits_for_a_rolling_update_held_back_by_a_quota() {
    let ns = TestNamespace::new("ready-rolling").await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    let mut d = deployment("app", 2, &["mendix"]);
    // One surge pod at a time, none taken down first: the quota stops it.
    d.spec.as_mut().unwrap().strategy = serde_json::from_value(
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    )
    .unwrap();
    create_deployment(&ns, &d).await;
    wait_until(
        &ns.api::<Deployment>(),
        "app",
        T,
        "running",
        rollout_complete(),
    )
    .await;
    quota(&ns, Some(2)).await;
    let _op = Operator::start(&ns.name);
    create(&ns, &set("s", json!({"deployment": "app"}), "cert")).await;
    held_back_then_released(&ns, "s", "app").await;
}

#[tokio::test]
async fn ready_waits_for_a_stop_start_to_bring_the_pods_back() {
    let ns = TestNamespace::new("ready-stopstart").await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "running", rollout_complete()).await;
    // Existing pods stay; no new one may be created after the stop.
    quota(&ns, Some(0)).await;
    let _op = Operator::start(&ns.name);
    let mut s = set("s", json!({"deployment": "app"}), "cert");
    s.spec.restart = certpin::resource::RestartStrategy::StopStart;
    create(&ns, &s).await;
    wait_until(
        &deployments,
        "app",
        T,
        "started again",
        started_without_record(1),
    )
    .await;
    held_back_then_released(&ns, "s", "app").await;
}

/// The `certpin_*` series of one metric in certpin's own /metrics text, as
/// promtool series notation (`name{labels}`), by a label value they carry.
fn exported(metrics: &str, metric: &str, carrying: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(carrying))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .next()
        .unwrap_or_else(|| panic!("no {metric} series with {carrying} in:\n{metrics}"))
}

#[tokio::test]
async fn alert_rules_fire_for_a_broken_set_and_stay_quiet_for_a_manual_one() {
    let ns = with_secrets("alerts").await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    wait_until(&deployments, "app", T, "running", rollout_complete()).await;
    let op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    create(&ns, &set("broken", json!({"deployment": "app"}), "wrong")).await;
    let mut manual = set("manual", json!({"deployment": "app"}), "cert");
    manual.spec.restart = certpin::resource::RestartStrategy::Manual;
    create(&ns, &manual).await;
    wait_until(
        &sets,
        "broken",
        T,
        "WrongPassword",
        not_ready_with("WrongPassword"),
    )
    .await;
    // The first wiring changes the pod template, so the app rolls even for
    // Manual; a rotation then is the user's restart to make.
    wait_until(&sets, "manual", T, "Ready", ready).await;
    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    wait_until(
        &sets,
        "manual",
        T,
        "RestartDue",
        not_ready_with("RestartDue"),
    )
    .await;

    let metrics = http_get(&op.metrics_url());
    let broken = exported(&metrics, "certpin_set_ready_status", r#"set="broken""#);
    let waiting = exported(&metrics, "certpin_set_ready_status", r#"set="manual""#);
    assert!(waiting.contains(r#"reason="RestartDue""#), "{waiting}");
    let expiry = exported(
        &metrics,
        "certpin_certificate_not_after_timestamp_seconds",
        r#"set="manual""#,
    );
    // The same series, recovering after 10 minutes: too short to alert.
    let recovering = broken.replace(r#"set="broken""#, r#"set="recovering""#);

    let dir = tempfile::tempdir().unwrap();
    let rules = Command::new("helm")
        .args([
            "template",
            "certpin",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/certpin"),
        ])
        // The chart needs 1.30+; the test bed's Helm (no release stamp) assumes 1.20.
        .args(["--kube-version", "1.30.0"])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .output()
        .expect("helm");
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let rule: yaml_serde::Value = yaml_serde::from_slice(&rules.stdout).unwrap();
    let groups = yaml_serde::to_string(
        &json!({"groups": serde_json::to_value(&rule["spec"]["groups"]).unwrap()}),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), groups).unwrap();
    let ns_label = ns.name.clone();
    // promtool's clock starts at 0: a certificate whose notAfter is 10 days
    // (then 0 days) after that expires soon (then has expired).
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [
                {"series": broken, "values": "1x30"},
                {"series": waiting, "values": "1x30"},
                {"series": recovering, "values": "1x10 0x20"},
                {"series": expiry, "values": format!("{}x30", 10 * 86400)}],
             "alert_rule_test": [
                {"eval_time": "14m", "alertname": "CertpinClientCertificateSetNotReady", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "CertpinClientCertificateSetNotReady", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": ns_label, "set": "broken", "reason": "WrongPassword"},
                     "exp_annotations": {
                        "summary": format!("ClientCertificateSet {ns_label}/broken is not Ready: WrongPassword"),
                        "description": format!("kubectl describe clientcertificateset -n {ns_label} broken says why; the app keeps its last good certificates meanwhile."),
                        "runbook_url": "https://github.com/certpin/certpin/blob/main/README.md#certpinclientcertificatesetnotready"}}]},
                {"eval_time": "20m", "alertname": "CertpinClientCertificateExpiringSoon", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": ns_label, "set": "manual", "certificate": "c"},
                     "exp_annotations": {
                        "summary": format!("Client certificate c of {ns_label}/manual expires soon"),
                        "description": "It expires in 9d 23h 40m 0s. Put the renewed certificate into its Secret; certpin rolls it out.",
                        "runbook_url": "https://github.com/certpin/certpin/blob/main/README.md#certpinclientcertificateexpiringsoon"}}]},
                {"eval_time": "20m", "alertname": "CertpinClientCertificateExpired", "exp_alerts": []}]},
            {"interval": "1m",
             "input_series": [{"series": expiry, "values": "0x5"}],
             "alert_rule_test": [
                {"eval_time": "1m", "alertname": "CertpinClientCertificateExpired", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "namespace": ns_label, "set": "manual", "certificate": "c"},
                     "exp_annotations": {
                        "summary": format!("Client certificate c of {ns_label}/manual has expired"),
                        "description": "The app's connections that present it fail. Put the renewed certificate into its Secret; certpin rolls it out.",
                        "runbook_url": "https://github.com/certpin/certpin/blob/main/README.md#certpinclientcertificateexpired"}}]},
                {"eval_time": "1m", "alertname": "CertpinClientCertificateExpiringSoon", "exp_alerts": []}]}
        ]
    });
    std::fs::write(
        dir.path().join("rules_test.yaml"),
        yaml_serde::to_string(&tests).unwrap(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "rules_test.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool (built by scripts/testbed)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
