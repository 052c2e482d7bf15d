//! The chart's pod, run as the kubelet would run it: the operator binary
//! with the container's args and env from `helm template` (downward-API
//! values filled in), as the pod's UID and GID, with a read-only root
//! filesystem (a private mount namespace), with in-cluster configuration
//! only: a real token of the chart's ServiceAccount (TokenRequest) and the
//! cluster's CA at the standard path, `KUBERNETES_SERVICE_HOST`/`PORT`, no
//! kubeconfig, no impersonation. Its probes are called on the declared ports
//! and paths; it reconciles a set end to end; and a verb taken out of the
//! chart's Role makes the write it covers fail (Forbidden on the status).
//! Needs root (mount namespaces, changing UID), as CI runs.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::Role;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/certpin");

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Deployment the chart renders with these values.
fn chart_deployment(values: &[String]) -> yaml_serde::Value {
    let mut args = vec![
        "template".to_string(),
        "certpin".into(),
        CHART.into(),
        // The chart needs 1.30+; the test bed's Helm (built without its
        // release stamp) would assume 1.20.
        "--kube-version=1.30.0".into(),
        "--show-only".into(),
        "templates/deployment.yaml".into(),
    ];
    for v in values {
        args.extend(["--set".to_string(), v.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    yaml_serde::from_str(&ok("helm", &args)).unwrap()
}

/// The API server's address and CA, from the test bed's kubeconfig.
fn api_server() -> (String, String, Vec<u8>) {
    let kc = kube::config::Kubeconfig::read().unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    let server = cluster.server.unwrap();
    let authority = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let (host, port) = authority.rsplit_once(':').expect("https://HOST:PORT");
    let ca = match (
        cluster.certificate_authority,
        cluster.certificate_authority_data,
    ) {
        (Some(path), _) => std::fs::read(path).unwrap(),
        (None, Some(data)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
        }
        _ => panic!("the kubeconfig names no CA"),
    };
    (host.to_string(), port.to_string(), ca)
}

/// What the kubelet would give the container, and how it would run it.
struct PodRun {
    uid: i64,
    gid: i64,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (path, port) of the liveness and readiness probes.
    probes: Vec<(String, i64)>,
}

fn pod_run(d: &yaml_serde::Value, pod_name: &str, pod_ns: &str) -> PodRun {
    let spec = &d["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let strings = |v: &yaml_serde::Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let env = c["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod_name.to_string(),
                Some("metadata.namespace") => pod_ns.to_string(),
                Some(other) => panic!("a downward-API field the test does not fill: {other}"),
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            (name, value)
        })
        .collect();
    let port_of = |p: &yaml_serde::Value| -> i64 {
        match p.as_str() {
            Some(name) => c["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|q| q["name"].as_str() == Some(name))
                .and_then(|q| q["containerPort"].as_i64())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            None => p.as_i64().unwrap(),
        }
    };
    let probes = ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|k| {
            let g = &c[*k]["httpGet"];
            (g["path"].as_str().unwrap().to_string(), port_of(&g["port"]))
        })
        .collect();
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    PodRun {
        uid: spec["securityContext"]["runAsUser"].as_i64().unwrap(),
        gid: spec["securityContext"]["runAsGroup"].as_i64().unwrap(),
        args: strings(&c["args"]),
        env,
        probes,
    }
}

/// Mounts the ServiceAccount files where the kubelet puts them (read-only),
/// makes the root filesystem read-only, drops to the pod's UID and GID and
/// starts the binary with nothing but the container's environment.
const AS_THE_KUBELET: &str = r#"set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
sa=/run/secrets/kubernetes.io/serviceaccount
mkdir -p "$sa" /run/certpin
cp "$FILES/token" "$FILES/ca.crt" "$FILES/namespace" "$sa/"
chmod 0644 "$sa"/*
cp "$BINARY" /run/certpin/certpin
chmod 0755 /run/certpin/certpin
mount -o remount,ro /run
mount -o remount,bind,ro /
if touch /etc/.certpin-rw-probe 2>/dev/null; then echo "the root filesystem is writable" >&2; exit 97; fi
exec setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --no-new-privs \
  env -i $POD_ENV /run/certpin/certpin "$@"
"#;

fn start(run: &PodRun, files: &Path, host: &str, port: &str, log: &Path) -> Child {
    // Separated by spaces for `env`: none of these values holds one.
    let mut pod_env = vec![
        format!("KUBERNETES_SERVICE_HOST={host}"),
        format!("KUBERNETES_SERVICE_PORT={port}"),
    ];
    pod_env.extend(run.env.iter().map(|(k, v)| format!("{k}={v}")));
    let log = std::fs::File::create(log).unwrap();
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            AS_THE_KUBELET,
            "certpin",
        ])
        .args(&run.args)
        .env("FILES", files)
        .env("BINARY", env!("CARGO_BIN_EXE_certpin"))
        .env("RUN_UID", run.uid.to_string())
        .env("RUN_GID", run.gid.to_string())
        .env("POD_ENV", pod_env.join(" "))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("unshare")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn set(name: &str, app: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": app}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn the_charts_pod_runs_as_the_kubelet_would_run_it() {
    let app = TestNamespace::new("incluster-app").await;
    let rel = TestNamespace::new("incluster-sys").await;
    install_crd(&app.client).await;
    put_cert_secret(&app).await;
    create_deployment(&app, &deployment("app", 1, &["mendix"])).await;
    create_deployment(&app, &deployment("other", 1, &["mendix"])).await;

    let port = free_port();
    let values = vec![
        format!("watchNamespaces={{{}}}", app.name),
        "crds.install=false".into(),
        "replicaCount=1".into(),
        format!("metrics.port={port}"),
    ];
    // The chart's ServiceAccount and RBAC, installed as users install them.
    let mut install = vec!["install", "certpin", CHART, "--namespace", &rel.name];
    for v in &values {
        install.extend(["--set", v.as_str()]);
    }
    ok("helm", &install);
    let d = chart_deployment(&values);
    let run = pod_run(&d, "certpin-5d8f7-abcde", &rel.name);
    assert_eq!((run.uid, run.gid), (65532, 65532));

    // A real token of the chart's ServiceAccount, from the TokenRequest API.
    let token = ok(
        "kubectl",
        &[
            "create",
            "token",
            "certpin",
            "-n",
            &rel.name,
            "--duration",
            "1h",
        ],
    );
    let files = tempfile::tempdir().unwrap();
    let (host, api_port, ca) = api_server();
    std::fs::write(files.path().join("token"), token.trim()).unwrap();
    std::fs::write(files.path().join("ca.crt"), ca).unwrap();
    std::fs::write(files.path().join("namespace"), &rel.name).unwrap();
    // Readable by the pod's user, as the kubelet's projected volume is.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(files.path())
        .status()
        .unwrap();

    let log = std::env::temp_dir().join(format!("certpin-incluster-{}.log", std::process::id()));
    let _pod = Killed(start(&run, files.path(), &host, &api_port, &log));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The probes, on the declared ports and paths.
    for (path, port) in &run.probes {
        let url = format!("http://127.0.0.1:{port}{path}");
        wait_for(T, &format!("{path} to answer 200"), || {
            let url = url.clone();
            async move {
                tokio::task::spawn_blocking(move || http_ok(&url))
                    .await
                    .unwrap_or(false)
            }
        })
        .await;
    }

    // The process itself (unshare, sh, setpriv and env each exec the next):
    // the pod's user and group, a mount namespace of its own, / read-only.
    let pid = _pod.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for (field, id) in [("Uid:", run.uid), ("Gid:", run.gid)] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(
            line.split_whitespace().skip(1).all(|v| v == id.to_string()),
            "{line}"
        );
    }
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(ns_of(&pid.to_string()), ns_of("self"));
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(
        root.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "{root}"
    );

    // End to end, with the chart's rights only.
    let sets: Api<ClientCertificateSet> = app.api();
    sets.create(&PostParams::default(), &set("s", "app"))
        .await
        .unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;

    // Without `patch` on Deployments, the wiring write is refused: the
    // token's own rights are what the API server checks.
    let roles: Api<Role> = app.api();
    let mut role = roles.get("certpin").await.unwrap();
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "deployments") {
            rule.verbs.retain(|v| v != "patch");
        }
    }
    roles
        .replace("certpin", &PostParams::default(), &role)
        .await
        .unwrap();
    let deployments: Api<Deployment> = app.api();
    let before = deployments
        .get("other")
        .await
        .unwrap()
        .metadata
        .resource_version;
    sets.create(&PostParams::default(), &set("t", "other"))
        .await
        .unwrap();
    wait_until(&sets, "t", T, "Forbidden", not_ready_with("Forbidden")).await;
    assert_eq!(
        deployments
            .get("other")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );

    let text = log_text();
    assert!(!text.contains("panicked"), "{text}");
    ok("helm", &["uninstall", "certpin", "--namespace", &rel.name]);
}
