//! certpin beside the real Stakater Reloader (built from
//! ../shared/peers/reloader by scripts/reloader, the binary scripts/bench
//! measures), run out of cluster against the test bed as the bench runs it.
//! An app Reloader restarts on its own, by its annotation
//! `reloader.stakater.com/auto: "true"` or by `--auto-reload-all`, rolls
//! once per rotation of its client certificate (certpin's rollout; Reloader
//! ignores certpin's ConfigMap and Secret), and the app of a `Manual` set
//! not at all.
//!
//! Reloader always serves its metrics on :9090, so one runs at a time on a
//! host: the tests of this file take turns, and a lock file keeps other
//! processes' runs of them apart.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::kube::{TestNamespace, rollout_complete, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(60);

/// The tests of this file one at a time (Reloader's fixed metrics port).
static ONE_RELOADER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reloader's binary: CERTPIN_RELOADER (scripts/test sets it), or what
/// scripts/reloader builds and caches; None without Reloader's sources.
fn reloader_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CERTPIN_RELOADER") {
        return Some(path.into());
    }
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/reloader"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/reloader");
    match out.status.code() {
        Some(0) => Some(String::from_utf8(out.stdout).unwrap().trim().into()),
        Some(3) => None,
        _ => panic!("scripts/reloader failed: {:?}", out.status),
    }
}

/// Reloader, watching one namespace; killed when dropped.
struct Reloader {
    child: Child,
    log: PathBuf,
}

impl Reloader {
    fn start(bin: &PathBuf, ns: &str, extra: &[&str]) -> Reloader {
        let log = std::env::temp_dir().join(format!("certpin-reloader-{ns}.log"));
        let file = std::fs::File::create(&log).unwrap();
        // bash takes the host-wide lock for :9090 and execs Reloader, which
        // keeps holding it until it dies: no other run of these tests can
        // start a Reloader that would exit at once for the port.
        let lock = std::env::temp_dir().join("certpin-reloader-9090.lock");
        let child = Command::new("bash")
            .args(["-c", r#"exec 9>"$0"; flock 9; exec "$@""#])
            .arg(&lock)
            .arg(bin)
            .arg(format!("--namespaces={ns}"))
            .args(extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start Reloader");
        Reloader { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("Reloader exited ({status}); its log:\n{}", self.log_text());
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Reloader log ---\n{}", self.log_text());
        }
    }
}

/// What Reloader leaves on a pod template when it restarts the workload:
/// `STAKATER_*` variables (its default env-vars strategy) and its
/// annotations (the annotations strategy), by name.
fn reloader_marks(d: &Deployment) -> BTreeMap<String, String> {
    let Some(template) = d.spec.as_ref().map(|s| &s.template) else {
        return BTreeMap::new();
    };
    let env = template
        .spec
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| c.env.iter().flatten())
        .filter(|e| e.name.starts_with("STAKATER_"))
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()));
    let annotations = template
        .metadata
        .iter()
        .flat_map(|m| m.annotations.iter().flatten())
        .filter(|(k, _)| k.starts_with("reloader.stakater.com/"))
        .map(|(k, v)| (k.clone(), v.clone()));
    env.chain(annotations).collect()
}

/// The Deployment controller's revision: one more for each rollout to a
/// new template (ReplicaSets are not counted: a rollout back to an earlier
/// template reuses its ReplicaSet).
fn revision(d: &Deployment) -> u64 {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn app(name: &str, auto: bool) -> Deployment {
    let mut d = deployment(name, 1, &["mendix"]);
    if auto {
        d.metadata.annotations =
            Some([("reloader.stakater.com/auto".into(), "true".into())].into());
    }
    d
}

/// The canary: a Deployment Reloader restarts for its own ConfigMap and
/// Secret. Reloader handles each kind's changes in order, one at a time
/// (one worker per kind), so once it has restarted the canary for a change
/// made after certpin's, it has made up its mind about certpin's too.
async fn canary(ns: &TestNamespace, auto: bool) {
    let mut d = app("canary", auto);
    let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[0].env_from = Some(vec![
        serde_json::from_value(json!({"configMapRef": {"name": "canary"}})).unwrap(),
        serde_json::from_value(json!({"secretRef": {"name": "canary"}})).unwrap(),
    ]);
    create_deployment(ns, &d).await;
    touch_canary(ns, 0).await;
}

async fn touch_canary(ns: &TestNamespace, n: u32) {
    let pp = PatchParams::apply("certpin-tests").force();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary"},
                    "data": {"n": n.to_string()}});
    ns.api::<ConfigMap>()
        .patch("canary", &pp, &Patch::Apply(&cm))
        .await
        .unwrap();
    put_secret(ns, "canary", &[("n", n.to_string().as_bytes())], None).await;
}

/// Changes the canary's ConfigMap and Secret (the `n`th time) and waits
/// until Reloader has restarted it for both: `tries` times `per_try`.
async fn canary_restarted(
    ns: &TestNamespace,
    reloader: &mut Reloader,
    n: &mut u32,
    tries: u32,
    per_try: Duration,
) {
    let api: Api<Deployment> = ns.api();
    for attempt in 1..=tries {
        let before = reloader_marks(&api.get("canary").await.unwrap());
        *n += 1;
        touch_canary(ns, *n).await;
        let both = move |d: Option<&Deployment>| {
            let marks = d.map(reloader_marks).unwrap_or_default();
            ["STAKATER_CANARY_CONFIGMAP", "STAKATER_CANARY_SECRET"]
                .iter()
                .all(|k| marks.get(*k).is_some_and(|v| before.get(*k) != Some(v)))
        };
        let watched = wait_until_or_none(&api, "canary", per_try, both).await;
        reloader.assert_running();
        if watched {
            return;
        }
        eprintln!("canary: Reloader has not restarted it yet (try {attempt})");
    }
    panic!("Reloader never restarted the canary");
}

/// As `wait_until`, but false at the timeout instead of a panic.
async fn wait_until_or_none(
    api: &Api<Deployment>,
    name: &str,
    timeout: Duration,
    cond: impl Fn(Option<&Deployment>) -> bool + Send + Sync + 'static,
) -> bool {
    let watched = kube::runtime::wait::await_condition(api.clone(), name, cond);
    matches!(
        tokio::time::timeout(timeout, watched).await,
        Ok(Ok(Some(_)))
    )
}

fn set(name: &str, deployment: &str, restart: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": deployment}, "restart": restart,
            "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"},
            "pinTo": ["api.example.com"]}]}
    }))
    .unwrap()
}

/// The set reports the certificate with `algorithm` (the rotation is
/// rendered and applied: the status is a pass's last write).
fn reports_key(algorithm: &'static str) -> impl Fn(Option<&ClientCertificateSet>) -> bool {
    move |s| {
        s.and_then(|s| {
            let st = s.status.as_ref()?;
            (st.observed_generation == s.metadata.generation)
                .then(|| st.certificates.first()?.key_algorithm.as_deref())?
        }) == Some(algorithm)
    }
}

/// One rotation with Reloader running with `reloader_args` beside certpin:
/// the Rolling set's app (`rolling`) rolls exactly once, the Manual set's
/// app (`manual`) not at all, and Reloader marks neither. `auto`: the apps
/// carry Reloader's auto annotation.
async fn one_rotation_beside_reloader(prefix: &str, auto: bool, reloader_args: &[&str]) {
    let Some(bin) = reloader_binary() else {
        eprintln!(
            "NOT RUN: no Stakater Reloader sources (../shared/peers/reloader, or CERTPIN_PEERS)"
        );
        return;
    };
    let _turn = ONE_RELOADER.lock().await;
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    put_p12(&ns, "cert", "openssl-ec256-modern.p12", b"changeit").await;
    for name in ["rolling", "manual"] {
        create_deployment(&ns, &app(name, auto)).await;
    }
    canary(&ns, auto).await;
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    let apps: Api<Deployment> = ns.api();
    for (name, restart) in [("rolling", "Rolling"), ("manual", "Manual")] {
        sets.create(&PostParams::default(), &set(name, name, restart))
            .await
            .unwrap();
    }
    for name in ["rolling", "manual"] {
        wait_until(&sets, name, T, "wired", reports_key("EC P-256")).await;
        wait_until(&apps, name, T, "the wiring rolled out", rollout_complete()).await;
    }

    let mut reloader = Reloader::start(&bin, &ns.name, reloader_args);
    // Reloader reacts to changes only once its caches are synced: until it
    // restarts the canary (its start-up is a few seconds; a run of these
    // tests in another process may hold the lock a minute).
    let mut n = 0;
    canary_restarted(&ns, &mut reloader, &mut n, 40, Duration::from_secs(3)).await;
    let before: BTreeMap<&str, u64> = [
        ("rolling", revision(&apps.get("rolling").await.unwrap())),
        ("manual", revision(&apps.get("manual").await.unwrap())),
    ]
    .into();

    // The rotation: certpin renders new files into its ConfigMap and
    // Secret, rolls `rolling` and leaves `manual` to its owner.
    put_p12(&ns, "cert", "openssl-ec384-modern.p12", b"changeit").await;
    for name in ["rolling", "manual"] {
        wait_until(
            &sets,
            name,
            T,
            "the rotation applied",
            reports_key("EC P-384"),
        )
        .await;
    }
    // Reloader has seen certpin's writes by the time it has handled a
    // later change of the canary's.
    canary_restarted(&ns, &mut reloader, &mut n, 1, T).await;
    let mut seen = Vec::new();
    for name in ["rolling", "manual"] {
        let d = wait_until(&apps, name, T, "rolled out", rollout_complete()).await;
        let marked = !reloader_marks(&d).is_empty();
        seen.push((name, revision(&d) - before[name], marked));
    }
    eprintln!("(app, rollouts, restarted by Reloader): {seen:?}");
    assert_eq!(
        seen,
        [("rolling", 1, false), ("manual", 0, false)],
        "(app, rollouts for one rotation, restarted by Reloader)"
    );
    reloader.assert_running();
}

#[tokio::test]
async fn with_reloaders_auto_annotation_a_rotation_is_one_restart_and_manual_none() {
    one_rotation_beside_reloader("reloader-auto", true, &[]).await;
}

#[tokio::test]
async fn with_reloaders_auto_reload_all_a_rotation_is_one_restart_and_manual_none() {
    one_rotation_beside_reloader("reloader-all", false, &["--auto-reload-all"]).await;
}
