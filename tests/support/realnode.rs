//! The test bed's real node (scripts/realnode): certpin's chart and the JVM
//! app (tests/realnode/app) in real containers. The app pod's manifests,
//! the chart installed as users install it, the partners' and the app's
//! log lines, and the node's containerd (to kill a container as a crash
//! would, and to see what a container's process really is).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::kube::TestNamespace;
use super::operator::put_secret;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/certpin");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The app image scripts/images builds (JRE 17 + tests/realnode/app).
pub const APP_IMAGE: &str = "certpin.local/jvm-app:1";
/// The taint and label scripts/realnode gives the node.
pub const TAINT_KEY: &str = "certpin.dev/real-node";
/// Where certpin mounts the files by default (the set's mountPath).
pub const MOUNT: &str = "/etc/certpin/client-certificates";

/// The real node of the test bed the tests run against.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub node: String,
    pub bridge: String,
    pub dir: PathBuf,
}

/// The real node, or None when CERTPIN_TESTBED_REAL_NODE=0 says the bed was
/// brought up without one (the test says so on stderr: nothing is skipped
/// silently). Any other state without a running node fails the test.
pub fn real_node() -> Option<RealNode> {
    if std::env::var("CERTPIN_TESTBED_REAL_NODE").as_deref() == Ok("0") {
        eprintln!(
            "NOT RUN: CERTPIN_TESTBED_REAL_NODE=0 (this test needs the real node: scripts/testbed up --real-node)"
        );
        return None;
    }
    let script = format!("{ROOT}/scripts/realnode");
    let status = Command::new(&script).arg("status").output().unwrap();
    assert!(
        status.status.success(),
        "the test bed has no real node running ({}): bring it up with `CERTPIN_TESTBED_REAL_NODE=1 scripts/testbed up` \
         (scripts/test does), or set CERTPIN_TESTBED_REAL_NODE=0 to leave these tests out on purpose",
        String::from_utf8_lossy(&status.stdout).trim()
    );
    let env = String::from_utf8(Command::new(&script).arg("env").output().unwrap().stdout).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {k}=")))
            .unwrap_or_else(|| panic!("scripts/realnode env gave no {k}"))
            .trim_matches('"')
            .to_string()
    };
    let node = RealNode {
        node: get("CERTPIN_REAL_NODE"),
        bridge: get("CERTPIN_REAL_NODE_BRIDGE"),
        dir: PathBuf::from(get("CERTPIN_REAL_NODE_DIR")),
    };
    // Pod addresses are on this bridge; without it they would be routed off
    // this machine. Nothing here connects to one unless it exists.
    assert!(
        Command::new("ip")
            .args(["link", "show", &node.bridge])
            .output()
            .unwrap()
            .status
            .success(),
        "the real node's bridge {} does not exist",
        node.bridge
    );
    Some(node)
}

impl RealNode {
    /// `ctr` against the node's containerd (namespace k8s.io).
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new(format!("{ROOT}/scripts/realnode"))
            .arg("ctr")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host PID of a running container (`containerd://<id>` from the
    /// pod's status).
    pub fn pid_of(&self, container_id: &str) -> u32 {
        let id = container_id.trim_start_matches("containerd://");
        self.ctr(&["tasks", "ls"])
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no running task {id}"))
    }

    /// SIGKILL to a container's process, as an OOM kill or a crash would
    /// end it; the kubelet restarts it.
    pub fn kill_container(&self, container_id: &str) {
        let id = container_id.trim_start_matches("containerd://");
        self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
}

/// `kubectl` (from the test bed's PATH) with these arguments; its stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install` of the chart in charts/certpin, unmodified, into
/// `release_ns`, with `values` (`--set`) and `strings` (`--set-string`).
/// The release name contains "certpin", so the chart's full name (its
/// Deployment, Lease, ServiceAccount) is the release name.
pub fn helm_install(release: &str, release_ns: &str, values: &[String], strings: &[String]) {
    let mut args: Vec<String> = vec![
        "install".into(),
        release.into(),
        CHART.into(),
        "--namespace".into(),
        release_ns.into(),
        "--wait".into(),
        "--timeout".into(),
        "3m".into(),
    ];
    for v in values {
        args.extend(["--set".into(), v.clone()]);
    }
    for v in strings {
        args.extend(["--set-string".into(), v.clone()]);
    }
    let out = Command::new("helm").args(&args).output().expect("helm");
    assert!(
        out.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values that put certpin's pods on the real node (its taint and
/// label) and make it manage `watch` only; the CRD comes from crds/.
pub fn on_the_real_node(watch: &str) -> (Vec<String>, Vec<String>) {
    (
        vec![
            format!("watchNamespaces={{{watch}}}"),
            "crds.install=false".into(),
            format!("tolerations[0].key={TAINT_KEY}"),
            "tolerations[0].operator=Exists".into(),
            "tolerations[0].effect=NoSchedule".into(),
        ],
        vec![format!("nodeSelector.certpin\\.dev/real-node=true")],
    )
}

/// certpin installed by the chart in a namespace of its own, managing `app`.
pub struct Installed {
    pub release: String,
    pub ns: TestNamespace,
}

impl Installed {
    /// With the default values but for what puts it on the real node, one
    /// replica (the chart test runs two) and certpin's debug log.
    pub async fn new(app: &TestNamespace, extra: &[&str]) -> Installed {
        let ns = TestNamespace::new("certpin-sys").await;
        let release = format!("certpin-{}", &app.name[app.name.len() - 8..]);
        let (mut values, strings) = on_the_real_node(&app.name);
        values.extend([
            "replicaCount=1".to_string(),
            "logging.level=info\\,certpin=debug".to_string(),
            "tenantBoundary.enabled=false".to_string(),
            "userRoles.aggregate=false".to_string(),
        ]);
        values.extend(extra.iter().map(|s| s.to_string()));
        helm_install(&release, &ns.name, &values, &strings);
        Installed { release, ns }
    }

    /// certpin's pods (Running or not).
    pub async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = self.ns.api();
        api.list(
            &ListParams::default().labels(&format!("app.kubernetes.io/instance={}", self.release)),
        )
        .await
        .unwrap()
        .items
    }

    /// The current log of every certpin container.
    pub async fn logs(&self) -> String {
        let mut all = String::new();
        for p in self.pods().await {
            all += &pod_log(&self.ns, p.metadata.name.as_deref().unwrap(), "certpin").await;
        }
        all
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kubectl")
                .args(["logs", "-n", &self.ns.name, "--all-containers", "--prefix"])
                .args([
                    "-l",
                    &format!("app.kubernetes.io/instance={}", self.release),
                ])
                .status();
        }
        let _ = Command::new("helm")
            .args(["uninstall", &self.release, "--namespace", &self.ns.name])
            .args(["--wait", "--timeout", "60s"])
            .output();
    }
}

/// A container's log (empty while it has none).
pub async fn pod_log(ns: &TestNamespace, pod: &str, container: &str) -> String {
    let api: Api<Pod> = ns.api();
    api.logs(
        pod,
        &LogParams {
            container: Some(container.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_default()
}

/// The previous (ended) instance of a container's log.
pub async fn previous_log(ns: &TestNamespace, pod: &str, container: &str) -> String {
    let api: Api<Pod> = ns.api();
    api.logs(
        pod,
        &LogParams {
            container: Some(container.into()),
            previous: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_default()
}

// --- the mission's material (tests/realnode/gen-certs) ------------------------

pub fn realnode_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/tests/fixtures/realnode/{name}")).unwrap()
}

pub fn password_of(p12: &str) -> String {
    String::from_utf8(realnode_fixture("passwords"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{p12}\t")))
        .unwrap()
        .to_string()
}

/// The subjects as the JVM prints them (RFC 2253: most specific last).
pub const SUBJECT_A: &str = "O=shop,CN=shop-app for partner-a";
pub const SUBJECT_A2: &str = "O=shop,CN=shop-app for partner-a (rotated)";
pub const SUBJECT_B: &str = "O=shop,CN=shop-app for partner-b";

/// The app's certificates (partner-a: PKCS12 and password; partner-b: a
/// kubernetes.io/tls Secret), the partners' CA in a ConfigMap, and the
/// partners' own material (their server certificates and client CAs).
pub async fn put_mission_material(ns: &TestNamespace) {
    put_client_a(ns, "client-a.p12", None).await;
    put_secret(
        ns,
        "partner-b",
        &[
            ("tls.crt", &realnode_fixture("client-b.crt")),
            ("tls.key", &realnode_fixture("client-b.key")),
        ],
        Some("kubernetes.io/tls"),
    )
    .await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "partner-ca"},
        "data": {"ca.crt": String::from_utf8(realnode_fixture("servers-ca.crt")).unwrap()}
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .patch(
            "partner-ca",
            &PatchParams::apply("certpin-tests").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in [
        "partner-a.p12",
        "partner-b.p12",
        "partner-c.p12",
        "untrusted.p12",
        "clients-a-ca.crt",
        "clients-b-ca.crt",
    ] {
        files.push((f.to_string(), realnode_fixture(f)));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    put_secret(ns, "partners", &refs, None).await;
}

/// The Secret partner-a: `file` (a fixture) and its password, or `password`.
pub async fn put_client_a(ns: &TestNamespace, file: &str, password: Option<&str>) {
    let pw = password
        .map(str::to_string)
        .unwrap_or_else(|| password_of(file));
    put_secret(
        ns,
        "partner-a",
        &[
            ("certificate.pfx", &realnode_fixture(file)),
            ("password", pw.as_bytes()),
        ],
        None,
    )
    .await;
}

/// The set of the mission: partner-a's PKCS12 pinned to partner-a.test,
/// partner-b's TLS Secret to partner-b.test and untrusted.test, no
/// certificate for partner-c.test, the partners' CA as the only trust.
pub fn mission_set(name: &str, workload: (&str, &str), restart: &str) -> Value {
    json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {
            "app": {workload.0: workload.1, "containers": ["app"]},
            "certificates": [
                {"name": "partner-a",
                 "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"},
                 "password": {"secretName": "partner-a", "key": "password"},
                 "pinTo": ["partner-a.test"]},
                {"name": "partner-b", "tls": {"secretName": "partner-b"},
                 "pinTo": ["partner-b.test", "untrusted.test"]}
            ],
            "caCertificates": [{"name": "partner-ca", "configMap": {"name": "partner-ca", "key": "ca.crt"}}],
            "noCertificateFor": ["partner-c.test"],
            "restart": restart
        }
    })
}

/// The partners, inside the app's pod: name (its host name is NAME.test),
/// port, server certificate, the client CA it trusts. partner-c takes a
/// call without a certificate; the others refuse one.
pub const PARTNERS: [(&str, u16, &str, &str); 4] = [
    ("partner-a", 8443, "partner-a.p12", "clients-a-ca.crt"),
    ("partner-b", 8444, "partner-b.p12", "clients-b-ca.crt"),
    ("partner-c", 8445, "partner-c.p12", "clients-a-ca.crt"),
    ("untrusted", 8446, "untrusted.p12", "clients-a-ca.crt"),
];

/// The app's pod template: the JVM client (`app`) calling the four
/// endpoints every `interval` seconds, and the partners in a container of
/// the same pod, on loopback (hostAliases map their names to 127.0.0.1:
/// in the pod there is no DNS), on the real node, as user 1001 (as Mendix
/// images run).
pub fn app_template(app: &str, interval: u32) -> Value {
    let calls: Vec<String> = PARTNERS
        .iter()
        .map(|(name, port, ..)| format!("https://{name}.test:{port}/"))
        .collect();
    let client = json!({
        "name": "app",
        "image": APP_IMAGE,
        "imagePullPolicy": "Never",
        "env": [
            {"name": "CALLS", "value": calls.join(",")},
            {"name": "INTERVAL", "value": interval.to_string()}
        ],
        "resources": {"limits": {"memory": "192Mi"}, "requests": {"memory": "64Mi", "cpu": "10m"}}
    });
    let servers: Vec<String> = PARTNERS
        .iter()
        .map(|(name, port, cert, ca)| {
            let auth = if *name == "partner-c" { "want" } else { "need" };
            format!("{name}:{port}:/partner/{cert}:/partner/{ca}:{auth}")
        })
        .collect();
    // The partners start first and the kubelet starts the app only once
    // their postStart hook returns, i.e. once every partner listens: else
    // a fresh pod's first round can meet a JVM still starting ("Connection
    // refused"), which says nothing about certificates.
    let ports: Vec<String> = PARTNERS.iter().map(|p| p.1.to_string()).collect();
    let listening = format!(
        "for p in {}; do until (: </dev/tcp/127.0.0.1/$p) 2>/dev/null; do sleep 0.1; done; done",
        ports.join(" ")
    );
    let partners = json!({
        "name": "partners",
        "image": APP_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["java", "-XX:TieredStopAtLevel=1", "-cp", "/app", "Partner"],
        "env": [
            {"name": "PARTNERS", "value": servers.join(",")},
            {"name": "SERVER_P12_PASSWORD", "value": "server"}
        ],
        "volumeMounts": [{"name": "partners", "mountPath": "/partner", "readOnly": true}],
        "lifecycle": {"postStart": {"exec": {"command": ["bash", "-c", listening]}}},
        "resources": {"limits": {"memory": "192Mi"}, "requests": {"memory": "48Mi", "cpu": "10m"}}
    });
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {TAINT_KEY: "true"},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": PARTNERS.iter().map(|p| format!("{}.test", p.0)).collect::<Vec<_>>()}],
            "securityContext": {"runAsUser": 1001, "runAsGroup": 0, "runAsNonRoot": true},
            "terminationGracePeriodSeconds": 1,
            "containers": [partners, client],
            "volumes": [{"name": "partners", "secret": {"secretName": "partners"}}]
        }
    })
}

/// One of the app's `call` lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub round: u64,
    pub endpoint: String,
    pub presented: String,
    pub ok: bool,
    /// The partner's answer, or the error.
    pub said: String,
}

/// The app's calls in a log, in order.
pub fn calls(log: &str) -> Vec<Call> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split_once(" call ")?.1;
            let field = |k: &str| -> Option<String> {
                let v = rest.split_once(&format!("{k}="))?.1;
                Some(if let Some(q) = v.strip_prefix('"') {
                    q.split_once('"').map(|(a, _)| a).unwrap_or(q).to_string()
                } else {
                    v.split_whitespace().next().unwrap_or("").to_string()
                })
            };
            let result = field("result")?;
            Some(Call {
                round: field("round")?.parse().ok()?,
                endpoint: field("endpoint")?,
                presented: field("presented")?,
                ok: result == "ok",
                said: if result == "ok" {
                    field("answer")?
                } else {
                    field("error").unwrap_or(result)
                },
            })
        })
        .collect()
}

/// The last call to each endpoint.
pub fn last_calls(log: &str) -> BTreeMap<String, Call> {
    calls(log)
        .into_iter()
        .map(|c| (c.endpoint.clone(), c))
        .collect()
}

/// The subjects the partner `name` logged ("partner NAME saw subject=..."),
/// from the partners container's log.
pub fn seen_by(log: &str, name: &str) -> Vec<String> {
    let marker = format!(" partner {name} saw subject=");
    log.lines()
        .filter_map(|l| l.split_once(&marker).map(|(_, s)| s.to_string()))
        .collect()
}

/// Pods of the app (label app=NAME), by name.
pub async fn app_pods(ns: &TestNamespace, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = ns.api();
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

pub fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

pub fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap()
}

/// The container's current id (`containerd://...`) and restart count.
pub fn container(p: &Pod, c: &str) -> (Option<String>, i32) {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|s| s.name == c))
        .map(|s| (s.container_id.clone(), s.restart_count))
        .unwrap_or((None, 0))
}

pub fn running_and_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Waits until the pod's app logged a call to every endpoint at a round
/// after `after_round`, and returns those calls (the last of each).
pub async fn next_calls(
    ns: &TestNamespace,
    pod: &str,
    after_round: u64,
    timeout: Duration,
) -> BTreeMap<String, Call> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = last_calls(&pod_log(ns, pod, "app").await);
        if PARTNERS.iter().all(|p| {
            last.get(&format!("{}.test", p.0))
                .is_some_and(|c| c.round > after_round)
        }) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pod}: no round of calls after {after_round} within {timeout:?}; last calls: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `kubectl exec` in a pod's app container.
pub fn exec(ns: &str, pod: &str, cmd: &[&str]) -> String {
    try_exec(ns, pod, cmd).unwrap_or_else(|e| panic!("kubectl exec {pod} {cmd:?}: {e}"))
}

/// `kubectl exec` in a pod's app container; the error when it fails (a
/// pod that is going away).
pub fn try_exec(ns: &str, pod: &str, cmd: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .args(["exec", "-n", ns, pod, "-c", "app", "--"])
        .args(cmd)
        .output()
        .expect("kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
