//! Running the certpin binary as the operator, restricted to a test's
//! namespace, and the objects the end-to-end tests share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::kube::{TestNamespace, wait_for};

/// Installs (or updates) the CRD from crds/ and waits until it is served.
pub async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/clientcertificateset.yaml"
    ))
    .unwrap();
    let crd: CustomResourceDefinition = yaml_serde::from_str(&text).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("certpin-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), "CRD established", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        }
    })
    .await;
}

/// The operator binary, watching one namespace; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    ns: String,
    pub metrics_port: u16,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// Run on these CPUs only (`taskset -c`).
    cpus: Option<String>,
}

/// A free port on loopback (released before the operator binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Operator {
    pub fn start(ns: &str) -> Operator {
        Operator::start_with(ns, "", &[])
    }

    /// `tag` tells apart several operators in one namespace; `extra` are more `run` flags.
    pub fn start_with(ns: &str, tag: &str, extra: &[&str]) -> Operator {
        Operator::start_with_env(ns, tag, extra, &[])
    }

    pub fn start_with_env(ns: &str, tag: &str, extra: &[&str], env: &[(&str, &str)]) -> Operator {
        Operator::start_on(ns, tag, extra, env, None)
    }

    /// Runs on the CPUs `cpus` only (a `taskset -c` list, e.g. "0" or "0,1").
    pub fn start_pinned(ns: &str, cpus: &str, extra: &[&str]) -> Operator {
        Operator::start_on(ns, &format!("-cpu{cpus}"), extra, &[], Some(cpus))
    }

    fn start_on(
        ns: &str,
        tag: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        cpus: Option<&str>,
    ) -> Operator {
        let log = std::env::temp_dir().join(format!(
            "certpin-operator-{ns}{tag}-{}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let mut op = Operator {
            child: None,
            log,
            ns: ns.to_string(),
            metrics_port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cpus: cpus.map(str::to_string),
        };
        op.spawn();
        op
    }

    pub fn healthz_url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz", self.metrics_port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    fn spawn(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, env!("CARGO_BIN_EXE_certpin")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_certpin")),
        };
        let child = command
            .args([
                "run",
                "--namespace",
                &self.ns,
                "--lease-duration-seconds",
                "6",
            ])
            .args(if self.extra.iter().any(|a| a == "--lease-namespace") {
                vec![]
            } else {
                vec!["--lease-namespace", self.ns.as_str()]
            })
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(&self.extra)
            // CERTPIN_TEST_LOG widens the operator's log when chasing a
            // failure (e.g. `info,certpin=debug,hyper_util=debug`).
            .env(
                "RUST_LOG",
                std::env::var("CERTPIN_TEST_LOG").unwrap_or_else(|_| "info,certpin=debug".into()),
            )
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start certpin run");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the process exits by itself (a crash); true if it did.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Number of completed reconciles of `set` logged so far.
    pub fn reconciles(&self, set: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("reconciled") && l.contains(&format!("set={set}")))
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- operator log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub async fn put_secret(
    ns: &TestNamespace,
    name: &str,
    data: &[(&str, &[u8])],
    type_: Option<&str>,
) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        type_: type_.map(str::to_string),
        ..Default::default()
    };
    let api: Api<Secret> = ns.api();
    api.patch(
        name,
        &PatchParams::apply("certpin-tests").force(),
        &Patch::Apply(&secret),
    )
    .await
    .unwrap();
}

pub fn deployment(name: &str, replicas: i32, containers: &[&str]) -> Deployment {
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| serde_json::json!({"name": c, "image": format!("example.invalid/{c}:1")}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}
        }
    }))
    .unwrap()
}

pub async fn create_deployment(ns: &TestNamespace, d: &Deployment) {
    let api: Api<Deployment> = ns.api();
    api.create(&PostParams::default(), d).await.unwrap();
}

/// The config hash certpin put on a Deployment's pod template.
pub fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("certpin.dev/config-hash")
        .cloned()
}

/// ReplicaSets of a Deployment: one per pod template it has rolled out.
pub async fn replica_sets(ns: &TestNamespace, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = ns.api();
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

/// A plain HTTP/1.0 GET on loopback (the metrics endpoint); status line included.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Whether a GET of `url` answers 200 within 2 s (no panic when it does not).
pub fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some((host, path)) = url.strip_prefix("http://").and_then(|r| r.split_once('/')) else {
        return false;
    };
    let Ok(addr) = host.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut body = String::new();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_ok()
        && s.read_to_string(&mut body).is_ok()
        && body.starts_with("HTTP/1.0 200")
        || body.starts_with("HTTP/1.1 200")
}

/// Not Ready for its current generation, for `reason`.
pub fn not_ready_with(
    reason: &'static str,
) -> impl Fn(Option<&certpin::resource::ClientCertificateSet>) -> bool {
    move |s| ready_is(s, |c| c.status == "False" && c.reason == reason)
}

/// The set's Ready condition for its current generation satisfies `is`.
fn ready_is(
    s: Option<&certpin::resource::ClientCertificateSet>,
    is: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
) -> bool {
    let Some(s) = s else { return false };
    s.status.as_ref().is_some_and(|st| {
        st.observed_generation == s.metadata.generation
            && st.conditions.iter().any(|c| c.type_ == "Ready" && is(c))
    })
}

/// The Deployment runs `replicas` with no StopStart record left.
pub fn started_without_record(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d| {
        d.is_some_and(|d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
                && !d
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("certpin.dev/stop-start"))
        })
    }
}

/// The Secret `name` with `certificate.pfx` (a fixture under pkcs12/) and
/// `password`.
pub async fn put_p12(ns: &TestNamespace, name: &str, file: &str, password: &[u8]) {
    let data = fixture(&format!("pkcs12/{file}"));
    put_secret(
        ns,
        name,
        &[("certificate.pfx", &data), ("password", password)],
        None,
    )
    .await;
}

/// The Secret `cert`: an OpenSSL 3 PKCS12 (EC P-256) and its password.
pub async fn put_cert_secret(ns: &TestNamespace) {
    put_p12(ns, "cert", "openssl-ec256-modern.p12", b"changeit").await;
}

/// The set is Ready for its current generation.
pub fn ready(s: Option<&certpin::resource::ClientCertificateSet>) -> bool {
    ready_is(s, |c| c.status == "True")
}

/// Ready for its current generation, with `algorithm` (e.g. "EC P-384") as
/// its first certificate's key: a rotation has been applied.
pub fn ready_with_key(
    algorithm: &'static str,
) -> impl Fn(Option<&certpin::resource::ClientCertificateSet>) -> bool {
    move |s| {
        ready(s)
            && s.and_then(|s| s.status.as_ref())
                .and_then(|st| st.certificates.first())
                .and_then(|c| c.key_algorithm.as_deref())
                == Some(algorithm)
    }
}

/// A digest of a Secret's data (certpin's own content hash): compared, it
/// shows a change as the data would, and a failing assertion does not print
/// the generated passwords and keys of a rendering.
pub async fn secret_digest(ns: &TestNamespace, name: &str) -> Option<String> {
    let data = ns.api::<Secret>().get(name).await.unwrap().data?;
    Some(format!(
        "{} keys, {}",
        data.len(),
        certpin::testing::build::config_hash(&Default::default(), &data)
    ))
}

/// `kubectl apply --server-side` of a YAML document (or several).
pub fn kubectl_apply(doc: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// The chart's tenant boundary (the ValidatingAdmissionPolicy and its
/// binding), as deploy/certpin.yaml ships it. Cluster-wide; the admin who
/// runs the other tests passes it.
pub async fn install_tenant_boundary() {
    let all = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/certpin.yaml"))
        .unwrap();
    let docs: Vec<&str> = all
        .split("\n---\n")
        .filter(|d| d.contains("kind: ValidatingAdmissionPolicy"))
        .collect();
    assert_eq!(docs.len(), 2, "the policy and its binding");
    kubectl_apply(&docs.join("\n---\n"));
}

/// A client that acts as `user` (impersonation), with the admin's credentials.
pub async fn client_as(user: &str) -> Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// The tenant boundary's policy and binding as a manifest: those of
/// deploy/certpin.yaml, or of the manifest at CERTPIN_TEST_BOUNDARY (an
/// older deploy/certpin.yaml, to check that the tests catch its gaps).
pub fn tenant_boundary_manifest() -> String {
    let path = std::env::var("CERTPIN_TEST_BOUNDARY").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/certpin.yaml").to_string()
    });
    let all = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<&str> = all
        .split("\n---\n")
        .filter(|d| d.contains("kind: ValidatingAdmissionPolicy"))
        .collect();
    assert_eq!(docs.len(), 2, "the policy and its binding in {path}");
    docs.join("\n---\n")
}

/// The name of the tenant boundary's policy (and binding) in `manifest`.
pub fn tenant_boundary_name(manifest: &str) -> String {
    let doc: yaml_serde::Value =
        yaml_serde::from_str(manifest.split("\n---\n").next().unwrap()).expect("the policy's YAML");
    doc["metadata"]["name"].as_str().unwrap().to_string()
}

/// The chart's RBAC for certpin watching `ns` only (a Role and its binding,
/// and the Lease's), installed in `ns` as `helm template` renders it:
/// certpin's ServiceAccount there, as a user to impersonate.
pub fn install_chart_rbac(ns: &str) -> String {
    let out = std::process::Command::new("helm")
        .args([
            "template",
            "certpin",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/certpin"),
            "--namespace",
            ns,
            // The chart needs 1.30+; the test bed's Helm (no release stamp) assumes 1.20.
            "--kube-version=1.30.0",
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .expect("helm (eval \"$(scripts/testbed env)\")");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl_apply(&String::from_utf8(out.stdout).unwrap());
    format!("system:serviceaccount:{ns}:certpin")
}
