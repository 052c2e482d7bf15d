//! The local control plane is a real one: a Deployment schedules onto the
//! simulated node, becomes Available, and a rolling restart completes.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::kube::{TestNamespace, rollout_complete, wait_until};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deployment_rolls_out_and_restarts_on_the_simulated_node() {
    let ns = TestNamespace::new("testbed").await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let ready = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    assert!(ready, "no Ready node");

    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let d = wait_until(
        &deployments,
        "web",
        Duration::from_secs(90),
        "rollout",
        rollout_complete(),
    )
    .await;
    assert_eq!(d.status.unwrap().available_replicas, Some(2));

    let pods: Api<Pod> = ns.api();
    let before: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before.len(), 2);

    // What `kubectl rollout restart` does.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": chrono::Utc::now().to_rfc3339()
    }}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until(
        &deployments,
        "web",
        Duration::from_secs(90),
        "restart rollout",
        rollout_complete(),
    )
    .await;
    support::kube::wait_for(Duration::from_secs(60), "old pods to be replaced", || {
        let (pods, before) = (pods.clone(), before.clone());
        async move {
            let now = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items;
            now.len() == 2
                && now.iter().all(|p| {
                    !before.contains(p.metadata.name.as_ref().unwrap())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
        }
    })
    .await;
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether the real node is asked for (scripts/test and .ci/run set
/// CERTPIN_TESTBED_REAL_NODE=1); a test that needs it says when it is not.
fn real_node_wanted(test: &str) -> bool {
    let on = std::env::var("CERTPIN_TESTBED_REAL_NODE").as_deref() == Ok("1");
    if !on {
        eprintln!("NOT RUN: {test} needs CERTPIN_TESTBED_REAL_NODE=1 (scripts/test sets it)");
    }
    on
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The final stage of the Dockerfile: (instruction, argument) pairs.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    let mut stage = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (ins, arg) = line.split_once(' ').unwrap_or((line, ""));
        if ins.eq_ignore_ascii_case("FROM") {
            stage.clear();
        }
        stage.push((ins.to_ascii_uppercase(), arg.trim().to_string()));
    }
    stage
}

/// scripts/images builds certpin's image for the real node without a
/// container engine; it must be the image the Dockerfile describes: the
/// same entrypoint, command, user and port, and the files its final stage
/// has (the release binary at the path it copies it to; from its base,
/// distroless/cc's nonroot: the shared libraries the binary loads, the CA
/// certificates and the nonroot user).
#[test]
fn the_image_script_builds_what_the_dockerfile_describes() {
    if !real_node_wanted("the_image_script_builds_what_the_dockerfile_describes") {
        return;
    }
    let stage = dockerfile_final_stage();
    let arg = |ins: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(i, _)| i == ins)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let from = arg("FROM");
    let (base, digest) = from[0].split_once('@').expect("the base pinned by digest");
    assert_eq!(
        (from.len(), base),
        (1, "gcr.io/distroless/cc-debian12:nonroot")
    );
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // The image the real node runs. The test runs inside cargo, so it
    // builds nothing (a nested cargo would wait for this one's lock):
    // scripts/testbed up built it.
    let tar =
        run(std::process::Command::new(format!("{ROOT}/scripts/images")).args(["last", "certpin"]));
    let tar = tar.trim();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.json", tar.trim_end_matches(".tar"))).unwrap(),
    )
    .unwrap();
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(config["Entrypoint"], json(&arg("ENTRYPOINT")[0]));
    assert_eq!(config["Cmd"], json(&arg("CMD")[0]));
    assert_eq!(config["User"], arg("USER")[0].as_str());
    let exposed: Vec<String> = config["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let want: Vec<String> = arg("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace().map(|p| format!("{p}/tcp")))
        .collect();
    assert_eq!(exposed, want);

    // The files: list the image's single layer.
    let manifest: serde_json::Value =
        serde_json::from_str(&run(std::process::Command::new("tar").args([
            "-xOf",
            tar,
            "manifest.json",
        ])))
        .unwrap();
    let tag = manifest[0]["RepoTags"][0].as_str().unwrap();
    let chart = std::fs::read_to_string(format!("{ROOT}/charts/certpin/Chart.yaml")).unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .unwrap()
        .trim()
        .trim_matches('"');
    assert_eq!(
        tag,
        format!("ghcr.io/certpin/certpin:{app_version}"),
        "the chart's default image"
    );
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    run(std::process::Command::new("sh").args([
        "-c",
        "tar -xOf \"$1\" \"$2\" | tar -x -C \"$3\"",
        "sh",
        tar,
        layers[0].as_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]));
    // COPY --from=build /src/target/release/certpin /certpin
    let copies = arg("COPY");
    assert_eq!(copies.len(), 1);
    let parts: Vec<&str> = copies[0].split_whitespace().collect();
    assert_eq!(
        parts,
        ["--from=build", "/src/target/release/certpin", "/certpin"]
    );
    // target/release/certpin, beside this test's own target/debug/deps/
    let target = std::env::current_exe().unwrap();
    let target = target.ancestors().nth(3).unwrap();
    let release = std::fs::read(target.join("release/certpin")).unwrap();
    let in_image = std::fs::read(dir.path().join("certpin")).unwrap();
    assert!(
        in_image == release,
        "/certpin is not target/release/certpin (after a rebuild: scripts/realnode images)"
    );
    use std::os::unix::fs::PermissionsExt;
    assert!(
        std::fs::metadata(dir.path().join("certpin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    // What the binary loads is there (the base image's glibc and libgcc).
    let ldd = run(std::process::Command::new("ldd").arg(target.join("release/certpin")));
    for lib in ldd.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_string)
    }) {
        assert!(
            dir.path().join(lib.trim_start_matches('/')).exists(),
            "{lib} is missing"
        );
    }
    assert!(
        dir.path()
            .join("etc/ssl/certs/ca-certificates.crt")
            .metadata()
            .unwrap()
            .len()
            > 1000
    );
    let passwd = std::fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    // /tmp as in the base image; nothing else writable is needed (the
    // chart's root filesystem is read-only).
    assert_eq!(
        std::fs::metadata(dir.path().join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
}

/// A real node brought up and down leaves the host as it found it: the
/// same links, addresses, routes, sysctls (ip_forward and the six the
/// kubelet sets), iptables rules, mounts, network namespaces, cgroups and
/// host directories. It runs a bed of its own (another name, another
/// bridge) with a pod on it, so that all of those were really made.
#[test]
fn the_real_node_leaves_the_host_as_it_found_it() {
    if !real_node_wanted("the_real_node_leaves_the_host_as_it_found_it") {
        return;
    }
    let bed = format!("hoststate{}", std::process::id() % 10000);
    let cmd = |script: &str| {
        let mut c = std::process::Command::new(format!("{ROOT}/scripts/{script}"));
        // no certpin image: building it would run cargo inside this cargo
        c.env("CERTPIN_TESTBED_NAME", &bed)
            .env("CERTPIN_TESTBED_REAL_NODE", "1")
            .env("CERTPIN_IMAGES", "pause app");
        c
    };
    // Other real nodes (the suite's own) must be idle while the host is
    // compared: no pod of theirs may come or go meanwhile.
    let base = std::path::PathBuf::from(format!(
        "{}/.cache/certpin/realnode",
        std::env::var("HOME").unwrap()
    ));
    let idle = || {
        std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .all(|d| {
                let sock = d.path().join("containerd.sock");
                !sock.exists()
                    || std::process::Command::new("ctr")
                        .args([
                            "-a",
                            sock.to_str().unwrap(),
                            "-n",
                            "k8s.io",
                            "tasks",
                            "ls",
                            "-q",
                        ])
                        .output()
                        .map(|o| o.stdout.is_empty() || !o.status.success())
                        .unwrap_or(true)
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !idle() {
        assert!(
            std::time::Instant::now() < deadline,
            "other real nodes kept running pods"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let state = || run(cmd("realnode").arg("host-state"));
    let before = state();

    struct Down<'a>(&'a dyn Fn() -> std::process::Command);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)().arg("down").status();
        }
    }
    let testbed = || cmd("testbed");
    let _down = Down(&testbed);
    run(cmd("testbed").arg("up"));
    let kubeconfig = run(cmd("testbed").arg("kubeconfig"));
    let kubectl = |args: &[&str]| {
        run(std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig.trim())
            .args(args))
    };
    // A pod with a Secret volume and a ConfigMap value: a sandbox, its
    // network namespace and veth on the bridge, tmpfs mounts, cgroups.
    let manifest = r#"
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: default}
stringData: {password: x}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: default}
data: {greeting: hello}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  nodeSelector: {certpin.dev/real-node: "true"}
  tolerations: [{key: certpin.dev/real-node, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: certpin.local/jvm-app:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo $(cat /s/password) $GREETING; exec sleep 3600"]
    env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: c, key: greeting}}}]
    volumeMounts: [{name: s, mountPath: /s}]
  volumes: [{name: s, secret: {secretName: s}}]
"#;
    let mut apply = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig.trim())
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    kubectl(&["wait", "--for=condition=Ready", "pod/p", "--timeout=120s"]);
    assert_eq!(kubectl(&["logs", "p"]).trim(), "x hello");
    let during = state();
    assert_ne!(during, before, "the node changed nothing that is compared");
    let env = run(cmd("realnode").arg("env"));
    let bridge = env
        .lines()
        .find_map(|l| l.strip_prefix("export CERTPIN_REAL_NODE_BRIDGE="))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(during.lines().any(|l| l == bridge), "{during}");
    assert!(during.contains(&format!("certpin-{bed}")), "{during}");

    run(cmd("testbed").arg("down"));
    let after = state();
    let _ = std::fs::remove_dir_all(base.join(&bed));
    if after != before {
        let b: Vec<&str> = before.lines().collect();
        let a: Vec<&str> = after.lines().collect();
        panic!(
            "the host differs after down:\n only before: {:?}\n only after: {:?}",
            b.iter().filter(|l| !a.contains(l)).collect::<Vec<_>>(),
            a.iter().filter(|l| !b.contains(l)).collect::<Vec<_>>()
        );
    }
}
