//! End-to-end: the operator binary against the local control plane.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use support::kube::{TestNamespace, rollout_complete, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

async fn setup(prefix: &str) -> (TestNamespace, Operator) {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    let op = Operator::start(&ns.name);
    (ns, op)
}

async fn partner_secrets(ns: &TestNamespace) {
    put_secret(
        ns,
        "partner-a",
        &[
            ("certificate.pfx", &fixture("pkcs12/openssl-rsa-legacy.p12")),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    put_secret(
        ns,
        "partner-b",
        &[
            ("tls.crt", &fixture("pem/ec256-tls.crt")),
            ("tls.key", &fixture("pem/ec256-sec1.key")),
        ],
        Some("kubernetes.io/tls"),
    )
    .await;
}

fn set(name: &str, deployment: &str, restart: &str) -> ClientCertificateSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {
            "app": {"deployment": deployment},
            "certificates": [
                {"name": "partner-a", "pkcs12": {"secretName": "partner-a", "key": "certificate.pfx"},
                 "password": {"secretName": "partner-a", "key": "password"},
                 "pinTo": ["Module.WebService1", "www.server-to-contact.com"]},
                {"name": "partner-b", "tls": {"secretName": "partner-b"}, "pinTo": ["api.partner-b.example"]}
            ],
            "noCertificateFor": ["Module.WebService2"],
            "restart": restart,
        }
    }))
    .unwrap()
}

fn ready_with(reason: &'static str, ok: bool) -> impl Fn(Option<&ClientCertificateSet>) -> bool {
    move |s: Option<&ClientCertificateSet>| {
        let Some(s) = s else { return false };
        let Some(st) = &s.status else { return false };
        st.observed_generation == s.metadata.generation
            && st.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.reason == reason
                    && c.status == if ok { "True" } else { "False" }
                    && c.observed_generation == s.metadata.generation
            })
    }
}

async fn create_set(ns: &TestNamespace, s: &ClientCertificateSet) -> ClientCertificateSet {
    let api: Api<ClientCertificateSet> = ns.api();
    api.create(&PostParams::default(), s).await.unwrap()
}

async fn wait_ready(ns: &TestNamespace, name: &str) -> ClientCertificateSet {
    let api: Api<ClientCertificateSet> = ns.api();
    wait_until(&api, name, T, "Ready=True", ready_with("Applied", true)).await
}

async fn rollout(ns: &TestNamespace, name: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    wait_until(&api, name, T, "rollout complete", rollout_complete()).await
}

async fn pod_names(ns: &TestNamespace, app: &str) -> Vec<String> {
    let api: Api<Pod> = ns.api();
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// The settings a pod's environment gets from the rendered ConfigMap and
/// Secret.
struct Settings {
    paths: Vec<String>,
    passwords: Vec<String>,
    usages: BTreeMap<String, String>,
}

async fn settings(ns: &TestNamespace, rendered: &str) -> Settings {
    let cm: ConfigMap = ns.api().get(rendered).await.unwrap();
    let secret: Secret = ns.api().get(rendered).await.unwrap();
    let cm = cm.data.unwrap();
    let data = secret.data.unwrap();
    let passwords = String::from_utf8(data["ClientCertificatePasswords"].0.clone()).unwrap();
    Settings {
        paths: cm["ClientCertificates"]
            .split(',')
            .map(str::to_string)
            .collect(),
        passwords: passwords.split(',').map(str::to_string).collect(),
        usages: serde_json::from_str(&cm["ClientCertificateUsages"]).unwrap(),
    }
}

/// The files a pod's volume holds: the Secret, whole, but for the
/// passwords setting.
async fn files(ns: &TestNamespace, rendered: &str) -> BTreeMap<String, k8s_openapi::ByteString> {
    let secret: Secret = ns.api().get(rendered).await.unwrap();
    let mut data = secret.data.unwrap();
    data.remove("ClientCertificatePasswords");
    data
}

/// Each `(endpoint, CN)`: the file the usages pin to the endpoint, with the
/// password at the same position in ClientCertificatePasswords, authenticates
/// a mutual-TLS call on loopback and presents the expected subject.
async fn assert_rendered_files_authenticate(
    ns: &TestNamespace,
    rendered: &str,
    expect: &[(&str, &str)],
) {
    let s = settings(ns, rendered).await;
    assert_files_authenticate(&s, &files(ns, rendered).await, expect);
}

fn assert_files_authenticate(
    s: &Settings,
    data: &BTreeMap<String, k8s_openapi::ByteString>,
    expect: &[(&str, &str)],
) {
    let tmp = tempfile::tempdir().unwrap();
    let server = format!(
        "{}/tests/fixtures/pkcs12/server-ec256.p12",
        env!("CARGO_MANIFEST_DIR")
    );
    let ca = format!(
        "{}/tests/fixtures/pem/ca-chain.crt",
        env!("CARGO_MANIFEST_DIR")
    );
    for (endpoint, cn) in expect {
        let path = &s.usages[*endpoint];
        let i = s
            .paths
            .iter()
            .position(|p| p == path)
            .expect("usage path listed in ClientCertificates");
        let file = path.rsplit('/').next().unwrap();
        let local = tmp.path().join(file);
        std::fs::write(&local, &data[file].0).unwrap();
        let out = support::jvm::run(
            &support::jvm::javas()[0],
            "MtlsCheck.java",
            &[local.to_str().unwrap(), &server, &ca],
            &[
                ("CLIENT_PASSWORD", s.passwords[i].as_str()),
                ("SERVER_PASSWORD", "changeit"),
            ],
        );
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{endpoint}: {seen}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            seen.contains(&format!("CN={cn}")),
            "{endpoint}: server saw {seen}"
        );
    }
}

#[tokio::test]
async fn renders_wires_rolls_out_rotates_and_refuses_a_wrong_password() {
    let (ns, op) = setup("e2e-main").await;
    partner_secrets(&ns).await;
    create_deployment(&ns, &deployment("shop", 2, &["mendix", "sidecar"])).await;
    rollout(&ns, "shop").await;
    create_set(&ns, &set("prod", "shop", "Rolling")).await;
    let ready = wait_ready(&ns, "prod").await;
    let st = ready.status.unwrap();
    assert_eq!(st.certificates.len(), 2);
    assert_eq!(
        st.certificates[0].subject.as_deref(),
        Some("CN=partner-a client, O=certpin tests")
    );
    assert_eq!(st.certificates[1].input_encryption.as_deref(), Some("pem"));
    assert_eq!(st.certificate_count, Some(2));

    // Exact rendered content.
    let cm: ConfigMap = ns.api().get("prod-certpin").await.unwrap();
    let cm = cm.data.unwrap();
    let dir = "/etc/certpin/client-certificates";
    // Files are named after their content: <name>-<10 hex>.pfx.
    let paths: Vec<&str> = cm["ClientCertificates"].split(',').collect();
    assert_eq!(paths.len(), 2);
    for (path, name) in paths.iter().zip(["partner-a", "partner-b"]) {
        let file = path
            .strip_prefix(&format!("{dir}/{name}-"))
            .unwrap_or_default();
        let hash = file.strip_suffix(".pfx").unwrap_or_default();
        assert!(
            hash.len() == 10 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{path}"
        );
    }
    let (a, b) = (paths[0], paths[1]);
    assert_eq!(
        cm["ClientCertificateUsages"],
        format!(
            r#"{{ "Module.WebService1": "{a}", "www.server-to-contact.com": "{a}", "api.partner-b.example": "{b}", "Module.WebService2": "" }}"#
        )
    );
    assert_eq!(cm.len(), 2);
    let secret: Secret = ns.api().get("prod-certpin").await.unwrap();
    let file_keys: Vec<String> = files(&ns, "prod-certpin").await.into_keys().collect();
    let in_pod: Vec<String> = paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        file_keys, in_pod,
        "the Secret holds exactly the files and the passwords"
    );
    let pw = String::from_utf8(
        secret.data.as_ref().unwrap()["ClientCertificatePasswords"]
            .0
            .clone(),
    )
    .unwrap();
    assert!(
        !pw.contains("changeit"),
        "the user's password reached the app"
    );
    assert_eq!(pw.split(',').count(), 2);
    assert_rendered_files_authenticate(
        &ns,
        "prod-certpin",
        &[
            ("Module.WebService1", "partner-a client"),
            ("www.server-to-contact.com", "partner-a client"),
            ("api.partner-b.example", "partner-b client"),
        ],
    )
    .await;

    // The Deployment is wired on both containers, with valueFrom only, and rolled out.
    let d = rollout(&ns, "shop").await;
    let spec = d.spec.clone().unwrap().template.spec.unwrap();
    for c in &spec.containers {
        let env = c.env.clone().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "MXRUNTIME_ClientCertificates",
                "MXRUNTIME_ClientCertificatePasswords",
                "MXRUNTIME_ClientCertificateUsages"
            ]
        );
        assert!(
            env.iter()
                .all(|e| e.value.is_none() && e.value_from.is_some())
        );
        let m = &c.volume_mounts.clone().unwrap()[0];
        assert_eq!((m.mount_path.as_str(), m.read_only), (dir, Some(true)));
    }
    let vol = &spec.volumes.unwrap()[0];
    let source = vol.secret.as_ref().unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("prod-certpin"));
    assert_eq!(source.items, None, "the Secret is mounted whole");
    assert_eq!(template_hash(&d), st.applied_hash);
    assert_eq!(
        replica_sets(&ns, "shop").await.len(),
        2,
        "one rollout for the wiring"
    );

    // Rotation: a new PKCS12 in the Secret -> new content, exactly one new rollout.
    let before_hash = template_hash(&d);
    let before = settings(&ns, "prod-certpin").await;
    put_secret(
        &ns,
        "partner-a",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-rsa3072-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    let api: Api<ClientCertificateSet> = ns.api();
    wait_until(
        &api,
        "prod",
        T,
        "rotated certificate in status",
        |s: Option<&ClientCertificateSet>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.certificates
                    .first()
                    .and_then(|c| c.key_algorithm.as_deref())
                    == Some("RSA 3072")
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await;
    let d = rollout(&ns, "shop").await;
    assert_ne!(template_hash(&d), before_hash);
    assert_eq!(
        replica_sets(&ns, "shop").await.len(),
        3,
        "exactly one rollout for the rotation"
    );
    assert_rendered_files_authenticate(
        &ns,
        "prod-certpin",
        &[("www.server-to-contact.com", "partner-a client 3072")],
    )
    .await;
    // A pod started before the rotation still finds the files its
    // environment names, unchanged, and its passwords open them.
    let now = files(&ns, "prod-certpin").await;
    assert_eq!(
        now.len(),
        4,
        "this rendering's two files and the previous rendering's two"
    );
    assert_files_authenticate(
        &before,
        &now,
        &[
            ("www.server-to-contact.com", "partner-a client"),
            ("api.partner-b.example", "partner-b client"),
        ],
    );

    // A wrong password: Ready=False with the reason, nothing changes, no rollout.
    let pods = pod_names(&ns, "shop").await;
    let rendered_before = secret_digest(&ns, "prod-certpin").await;
    put_secret(
        &ns,
        "partner-a",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-rsa3072-modern.p12"),
            ),
            ("password", b"wrong"),
        ],
        None,
    )
    .await;
    let s = wait_until(
        &api,
        "prod",
        T,
        "Ready=False WrongPassword",
        ready_with("WrongPassword", false),
    )
    .await;
    let st = s.status.unwrap();
    assert_eq!(st.certificates[0].state, "wrong-password");
    assert_eq!(
        secret_digest(&ns, "prod-certpin").await,
        rendered_before,
        "the last good rendering stays"
    );
    assert_eq!(
        replica_sets(&ns, "shop").await.len(),
        3,
        "no rollout for invalid input"
    );
    assert_eq!(pod_names(&ns, "shop").await, pods, "running pods untouched");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    wait_for(T, "a WrongPassword Warning event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("WrongPassword")
                        && e.type_.as_deref() == Some("Warning")
                })
        }
    })
    .await;
    assert!(
        !op.log_text().contains("wrong"),
        "a password reached the log"
    );
}

#[tokio::test]
async fn restarting_the_operator_restarts_nothing_and_removed_wiring_comes_back() {
    let (ns, mut op) = setup("e2e-restart").await;
    partner_secrets(&ns).await;
    create_deployment(&ns, &deployment("shop", 2, &["mendix"])).await;
    create_set(&ns, &set("prod", "shop", "Rolling")).await;
    wait_ready(&ns, "prod").await;
    let d = rollout(&ns, "shop").await;
    let generation = d.metadata.generation;
    let secret_rv = ns
        .api::<Secret>()
        .get("prod-certpin")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // The log is appended to across restarts: wait for a reconcile of the
    // restarted process, not one of the first.
    let before = op.reconciles("prod");
    op.restart();
    wait_for(T, "the restarted operator to reconcile", || {
        let n = op.reconciles("prod");
        async move { n > before }
    })
    .await;
    let d: Deployment = ns.api().get("shop").await.unwrap();
    assert_eq!(
        d.metadata.generation, generation,
        "operator restart changed the Deployment"
    );
    let rv = ns
        .api::<Secret>()
        .get("prod-certpin")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(
        rv, secret_rv,
        "operator restart rewrote the rendered Secret"
    );
    assert_eq!(replica_sets(&ns, "shop").await.len(), 2);
    // Nothing changed, so nothing was decoded again: the status and the
    // rendered Secret already say what the files hold.
    let metrics = http_get(&op.metrics_url());
    assert!(
        metrics.contains("certpin_pkcs12_decodes_total 0"),
        "decodes after the restart: {}",
        metrics
            .lines()
            .find(|l| l.starts_with("certpin_pkcs12_decodes_total"))
            .unwrap_or("none")
    );

    // Someone removes the wiring (as `kubectl replace` of the original manifest would).
    let api: Api<Deployment> = ns.api();
    let mut original = deployment("shop", 2, &["mendix"]);
    original.metadata.resource_version = None;
    let live = api.get("shop").await.unwrap();
    original.metadata.resource_version = live.metadata.resource_version;
    api.replace("shop", &PostParams::default(), &original)
        .await
        .unwrap();
    let restored = wait_until(
        &api,
        "shop",
        T,
        "wiring restored",
        |d: Option<&Deployment>| {
            d.and_then(|d| {
                d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                    .env
                    .as_ref()
            })
            .is_some_and(|env| env.iter().any(|e| e.name == "MXRUNTIME_ClientCertificates"))
        },
    )
    .await;
    assert!(template_hash(&restored).is_some());
    rollout(&ns, "shop").await;
}

#[tokio::test]
async fn stop_start_scales_to_zero_and_back_and_manual_only_reports() {
    let (ns, _op) = setup("e2e-strategies").await;
    partner_secrets(&ns).await;
    create_deployment(&ns, &deployment("stopstart", 3, &["mendix"])).await;
    create_deployment(&ns, &deployment("manual", 2, &["mendix"])).await;
    rollout(&ns, "stopstart").await;
    rollout(&ns, "manual").await;

    // StopStart: replicas go to zero (every pod gone), then back to 3.
    create_set(&ns, &set("ss", "stopstart", "StopStart")).await;
    let api: Api<Deployment> = ns.api();
    wait_until(
        &api,
        "stopstart",
        T,
        "scaled to zero",
        |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()?.replicas) == Some(0),
    )
    .await;
    wait_ready(&ns, "ss").await;
    let d = rollout(&ns, "stopstart").await;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    assert!(
        !d.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("certpin.dev/stop-start")
    );
    assert!(template_hash(&d).is_some());

    // Manual: wired on first sight; a later change only reports RestartDue.
    let manual = {
        let mut s = set("man", "manual", "Manual");
        s.spec.certificates.truncate(1);
        s
    };
    create_set(&ns, &manual).await;
    wait_ready(&ns, "man").await;
    let d = rollout(&ns, "manual").await;
    let rs_before = replica_sets(&ns, "manual").await.len();
    let hash_before = template_hash(&d);
    put_p12(&ns, "partner-a", "keytool-rsa-legacy.p12", b"changeit").await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let s = wait_until(
        &sets,
        "man",
        T,
        "RestartDue",
        ready_with("RestartDue", false),
    )
    .await;
    let due = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "RestartDue")
        .unwrap();
    assert_eq!(due.status, "True");
    assert!(
        due.message
            .contains("kubectl rollout restart deployment/manual"),
        "{}",
        due.message
    );
    let d: Deployment = api.get("manual").await.unwrap();
    assert_eq!(
        template_hash(&d),
        hash_before,
        "Manual changed the pod template"
    );
    assert_eq!(
        replica_sets(&ns, "manual").await.len(),
        rs_before,
        "Manual rolled out"
    );
    // The user restarts; the new pods run the new settings and the set is Ready again.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": chrono::Utc::now().to_rfc3339()}}}}});
    api.patch("manual", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    rollout(&ns, "manual").await;
    wait_until(
        &sets,
        "man",
        T,
        "Ready after the manual restart",
        ready_with("Applied", true),
    )
    .await;
}

#[tokio::test]
async fn deleting_the_set_removes_the_wiring_and_the_rendered_objects() {
    let (ns, _op) = setup("e2e-delete").await;
    partner_secrets(&ns).await;
    create_deployment(&ns, &deployment("shop", 1, &["mendix"])).await;
    create_set(&ns, &set("prod", "shop", "Rolling")).await;
    wait_ready(&ns, "prod").await;
    rollout(&ns, "shop").await;
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.delete("prod", &DeleteParams::default()).await.unwrap();
    let api: Api<Deployment> = ns.api();
    let d = wait_until(
        &api,
        "shop",
        T,
        "wiring removed",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()?.template.spec.as_ref())
                .is_some_and(|s| {
                    s.volumes.as_ref().is_none_or(|v| v.is_empty())
                        && s.containers[0].env.as_ref().is_none_or(|e| e.is_empty())
                })
        },
    )
    .await;
    assert!(template_hash(&d).is_none());
    assert!(
        !d.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("certpin.dev/set")
    );
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("example.invalid/mendix:1")
    );
    rollout(&ns, "shop").await;
    let cms: Api<ConfigMap> = ns.api();
    wait_for(T, "rendered ConfigMap garbage-collected", || {
        let cms = cms.clone();
        async move { cms.get_opt("prod-certpin").await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test]
async fn missing_inputs_wait_then_proceed_and_a_second_set_is_refused() {
    let (ns, _op) = setup("e2e-missing").await;
    create_set(&ns, &set("prod", "shop", "Rolling")).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    wait_until(
        &sets,
        "prod",
        T,
        "SecretNotFound",
        ready_with("SecretNotFound", false),
    )
    .await;
    partner_secrets(&ns).await;
    wait_until(
        &sets,
        "prod",
        T,
        "DeploymentNotFound",
        ready_with("DeploymentNotFound", false),
    )
    .await;
    create_deployment(&ns, &deployment("shop", 1, &["mendix"])).await;
    wait_ready(&ns, "prod").await;
    create_set(&ns, &set("second", "shop", "Rolling")).await;
    let s = wait_until(
        &sets,
        "second",
        T,
        "Conflict",
        ready_with("Conflict", false),
    )
    .await;
    let msg = &s.status.unwrap().conditions[0].message;
    assert!(msg.contains("\"prod\""), "{msg}");
    // A container that does not exist.
    let mut bad = set("third", "other", "Rolling");
    bad.spec.app.containers = vec!["nope".into()];
    create_deployment(&ns, &deployment("other", 1, &["mendix"])).await;
    create_set(&ns, &bad).await;
    wait_until(
        &sets,
        "third",
        T,
        "ContainerNotFound",
        ready_with("ContainerNotFound", false),
    )
    .await;
}

/// The finalizer is added and removed from a cached copy of the set that may
/// be behind (after an API server restart the watch re-lists late): the
/// patch tests the list it changes, and on a failed test certpin reads the
/// set again instead of failing the pass until the cache catches up. Another
/// controller's finalizer is kept either way.
#[tokio::test]
async fn finalizer_patches_from_a_stale_copy_keep_other_finalizers() {
    use certpin::testing::finalizer;
    use certpin::testing::names::FINALIZER;
    let ns = TestNamespace::new("finalizer-stale").await;
    install_crd(&ns.client).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let set: ClientCertificateSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet", "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "c",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"}, "password": {"secretName": "cert", "key": "password"}}]}
    }))
    .unwrap();
    let stale = sets.create(&PostParams::default(), &set).await.unwrap();
    let others = |s: &ClientCertificateSet| s.metadata.finalizers.clone().unwrap_or_default();
    // Another controller adds its finalizer after certpin's copy was taken.
    sets.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["example.com/other"]}})),
    )
    .await
    .unwrap();
    finalizer::ensure(&sets, &stale).await.unwrap();
    assert_eq!(
        others(&sets.get("s").await.unwrap()),
        ["example.com/other", FINALIZER]
    );
    // Again from the same stale copy: read again, already there, no duplicate.
    finalizer::ensure(&sets, &stale).await.unwrap();
    let current = sets.get("s").await.unwrap();
    assert_eq!(others(&current), ["example.com/other", FINALIZER]);

    // Removal from a copy whose list is in another order than the server's.
    sets.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"finalizers": [FINALIZER, "example.com/other"]}}),
        ),
    )
    .await
    .unwrap();
    finalizer::remove(&sets, &current).await.unwrap();
    assert_eq!(others(&sets.get("s").await.unwrap()), ["example.com/other"]);
    // Let the namespace go.
    sets.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}
