//! The worked examples in examples/cert-manager/ against the real CRDs of
//! cert-manager and trust-manager (scripts/third-party-crds fetches them,
//! as those projects' Helm charts install them, at pinned versions):
//! - the API server accepts every example file unchanged (server-side
//!   apply, strict field validation: a misspelled field is refused, which
//!   the test shows on a copy with one);
//! - then the test does what the two controllers would do with what the
//!   API server stored: cert-manager's CA Issuer issues the Certificate (a
//!   key of the Certificate's algorithm, size and encoding, its subject and
//!   usages, signed by the Issuer's CA with OpenSSL) into the
//!   `kubernetes.io/tls` Secret named by `spec.secretName`; trust-manager
//!   reads the Bundle's sources from its trust namespace and writes the
//!   de-duplicated certificates to a ConfigMap named after the Bundle,
//!   under `spec.target.configMap.key`, in the namespaces the Bundle's
//!   selector picks;
//! - certpin runs on the example set (applied unchanged) and the set
//!   becomes Ready with that certificate and those CA certificates. A set
//!   naming another key than the Bundle's target is not Ready
//!   (`KeyNotFound`): the names in the examples are what connects them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, kubectl_with_input, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(60);

/// The label examples/cert-manager/README.md tells users to put on the
/// app's namespace so that the Bundle's ConfigMap is written there.
const TRUST_LABEL: (&str, &str) = ("trust.example.com/partner-ca", "true");

fn example_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/cert-manager")
        .join(file)
}

fn example(file: &str) -> String {
    std::fs::read_to_string(example_path(file)).unwrap()
}

/// scripts/third-party-crds: the directory of cert-manager's and
/// trust-manager's CRDs (fetched once, cached by version).
fn third_party_crds() -> PathBuf {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/third-party-crds"
    ))
    .stderr(Stdio::inherit())
    .output()
    .expect("scripts/third-party-crds (needs Go and the Go module proxy)");
    assert!(out.status.success(), "scripts/third-party-crds failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn kubectl_ok(args: &[&str], stdin: &str) -> String {
    let out = kubectl_with_input(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An object as the API server stored it.
fn get(ns: &str, kind: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(
        &["-n", ns, "get", kind, name, "-o", "json"],
        "",
    ))
    .unwrap()
}

/// The documents of a YAML file that has `kind`.
fn doc_of_kind(file: &str, kind: &str) -> Value {
    example(file)
        .split("\n---\n")
        .map(|d| yaml_serde::from_str::<Value>(d).unwrap())
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{file} has no {kind}"))
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hours in a Go duration such as cert-manager takes ("2160h", "1h30m").
fn go_duration_hours(s: &str) -> u64 {
    let (mut hours, mut minutes, mut n) = (0u64, 0u64, String::new());
    for c in s.chars() {
        match c {
            '0'..='9' => n.push(c),
            'h' => hours += n.drain(..).as_str().parse::<u64>().unwrap(),
            'm' => minutes += n.drain(..).as_str().parse::<u64>().unwrap(),
            's' => n.clear(),
            _ => panic!("duration {s:?}"),
        }
    }
    hours + minutes / 60
}

/// A private key as cert-manager makes it for `privateKey` (its defaults:
/// RSA 2048, ECDSA 256, PKCS1 encoding), in `dir/name`.
fn private_key(spec: &Value, dir: &Path, name: &str) {
    let algorithm = spec["algorithm"].as_str().unwrap_or("RSA");
    let size = spec["size"].as_u64();
    let genpkey: Vec<String> = match algorithm {
        "RSA" => vec![
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            format!("rsa_keygen_bits:{}", size.unwrap_or(2048)),
        ],
        "ECDSA" => vec![
            "-algorithm".into(),
            "EC".into(),
            "-pkeyopt".into(),
            format!("ec_paramgen_curve:P-{}", size.unwrap_or(256)),
        ],
        "Ed25519" => vec!["-algorithm".into(), "ED25519".into()],
        other => panic!("privateKey.algorithm {other}"),
    };
    let mut args: Vec<&str> = vec!["genpkey"];
    args.extend(genpkey.iter().map(String::as_str));
    args.extend(["-out", "pkcs8.key"]);
    openssl(&args, dir);
    match spec["encoding"].as_str().unwrap_or("PKCS1") {
        "PKCS8" => openssl(&["pkey", "-in", "pkcs8.key", "-out", name], dir),
        // PKCS#1 for RSA, SEC 1 for EC: OpenSSL's "traditional" form.
        "PKCS1" => openssl(
            &["pkey", "-in", "pkcs8.key", "-traditional", "-out", name],
            dir,
        ),
        other => panic!("privateKey.encoding {other}"),
    }
}

/// What cert-manager's CA Issuer does for `certificate` (as stored): the
/// Secret `spec.secretName` with tls.crt, tls.key and ca.crt. The Issuer's
/// CA Secret is made first, as the user would.
async fn issue(ns: &TestNamespace, issuer: &Value, certificate: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let issuer_name = issuer["metadata"]["name"].as_str().unwrap();
    let spec = &certificate["spec"];
    assert_eq!(spec["issuerRef"]["name"], issuer_name, "issuerRef.name");
    assert_eq!(spec["issuerRef"]["kind"], "Issuer", "issuerRef.kind");
    let ca_secret = issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA Issuer");

    // The user's CA, in the Secret the Issuer names.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/O=partner-b/CN=partner-b client CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        d,
    );
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    put_secret(
        ns,
        ca_secret,
        &[("tls.crt", &read("ca.crt")), ("tls.key", &read("ca.key"))],
        Some("kubernetes.io/tls"),
    )
    .await;

    // The Certificate, as the CA Issuer signs it.
    private_key(&spec["privateKey"], d, "tls.key");
    let common_name = spec["commonName"].as_str().unwrap_or_default();
    let mut subject = String::new();
    for o in spec["subject"]["organizations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        subject += &format!("/O={}", o.as_str().unwrap());
    }
    subject += &format!("/CN={common_name}");
    openssl(
        &[
            "req", "-new", "-key", "tls.key", "-subj", &subject, "-out", "tls.csr",
        ],
        d,
    );
    let usages: Vec<&str> = match spec["usages"].as_array() {
        Some(u) => u.iter().map(|u| u.as_str().unwrap()).collect(),
        None => vec!["digital signature", "key encipherment"],
    };
    let (mut key_usage, mut extended) = (vec![], vec![]);
    for u in usages {
        match u {
            "digital signature" => key_usage.push("digitalSignature"),
            "key encipherment" => key_usage.push("keyEncipherment"),
            "client auth" => extended.push("clientAuth"),
            "server auth" => extended.push("serverAuth"),
            other => panic!("usage {other:?}: not simulated"),
        }
    }
    let mut ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{}\n",
        key_usage.join(",")
    );
    if !extended.is_empty() {
        ext += &format!("extendedKeyUsage={}\n", extended.join(","));
    }
    let dns: Vec<String> = spec["dnsNames"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| format!("DNS:{}", n.as_str().unwrap()))
        .collect();
    if !dns.is_empty() {
        ext += &format!("subjectAltName={}\n", dns.join(","));
    }
    std::fs::write(d.join("ext.cnf"), ext).unwrap();
    let hours = spec["duration"].as_str().map_or(2160, go_duration_hours);
    let days = hours.div_ceil(24).to_string();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "4242",
            "-days",
            &days,
            "-extfile",
            "ext.cnf",
            "-out",
            "tls.crt",
        ],
        d,
    );

    let name = spec["secretName"].as_str().expect("spec.secretName");
    let annotations: BTreeMap<String, String> = [
        (
            "cert-manager.io/certificate-name",
            certificate["metadata"]["name"].as_str().unwrap(),
        ),
        ("cert-manager.io/common-name", common_name),
        ("cert-manager.io/issuer-name", issuer_name),
        ("cert-manager.io/issuer-kind", "Issuer"),
        ("cert-manager.io/issuer-group", "cert-manager.io"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                "controller.cert-manager.io/fao".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt", read("tls.crt")),
                ("tls.key", read("tls.key")),
                ("ca.crt", read("ca.crt")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v)))
            .collect(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    common_name.to_string()
}

/// The PEM certificate blocks of `text`, each once, in order.
fn distinct_certificates(text: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for block in text.split("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
            continue;
        };
        let pem = format!("{}-----END CERTIFICATE-----\n", &block[start..]);
        if !out.contains(&pem) {
            out.push(pem);
        }
    }
    out
}

/// What trust-manager does for `bundle` (as stored): its sources read from
/// the trust namespace (the source Secrets put there first, as the user
/// would, with `partners_pem`), the certificates de-duplicated into the
/// ConfigMap named after the Bundle, key `spec.target.configMap.key`, in
/// `app_ns` if the Bundle's namespace selector picks it.
async fn bundle_target(bundle: &Value, trust: &TestNamespace, app_ns: &str, partners_pem: &[u8]) {
    let mut pem = String::new();
    for source in bundle["spec"]["sources"].as_array().expect("sources") {
        if let Some(s) = source.get("secret") {
            let (name, key) = (s["name"].as_str().unwrap(), s["key"].as_str().unwrap());
            put_secret(trust, name, &[(key, partners_pem)], None).await;
            let stored = trust.api::<Secret>().get(name).await.unwrap();
            pem += &String::from_utf8(stored.data.unwrap()[key].0.clone()).unwrap();
        } else if let Some(text) = source.get("inLine").and_then(Value::as_str) {
            pem += text;
        } else {
            panic!("source {source}: not simulated");
        }
    }
    let target = &bundle["spec"]["target"];
    let namespaces: Api<Namespace> = Api::all(trust.client.clone());
    let labels = namespaces
        .get(app_ns)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    let selected = target["namespaceSelector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    assert!(
        selected,
        "the Bundle's namespaceSelector does not pick a namespace labelled {TRUST_LABEL:?}"
    );
    let name = bundle["metadata"]["name"].as_str().unwrap();
    let key = target["configMap"]["key"]
        .as_str()
        .expect("target.configMap.key");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "trust.cert-manager.io/bundle".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            distinct_certificates(&pem).concat(),
        )])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(trust.client.clone(), app_ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// Deletes the (cluster-scoped) Bundle the test applied.
struct DeleteBundle(String);

impl Drop for DeleteBundle {
    fn drop(&mut self) {
        let _ = kubectl_with_input(
            &[
                "delete",
                "bundle",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            "",
        );
    }
}

#[tokio::test]
async fn cert_manager_and_trust_manager_examples_make_a_ready_set() {
    let crds = third_party_crds();
    kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ],
        "",
    );
    kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
            "crd/bundles.trust.cert-manager.io",
        ],
        "",
    );
    let ns = TestNamespace::new("examples-cm").await;
    let trust = TestNamespace::new("examples-trust").await;
    install_crd(&ns.client).await;
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {TRUST_LABEL.0: TRUST_LABEL.1}}})),
        )
        .await
        .unwrap();

    // A misspelled field is refused: the check below has teeth.
    let misspelled = example("certificate.yaml").replace("  secretName: shop", "  secretNme: shop");
    let out = kubectl_with_input(
        &[
            "-n",
            &ns.name,
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
        ],
        &misspelled,
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("field not declared in schema"),
        "the API server took a Certificate with a misspelled field: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The examples, unchanged: first a dry run, then for real.
    let _bundle = DeleteBundle(
        doc_of_kind("bundle.yaml", "Bundle")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let dir = example_path("");
    for dry_run in [true, false] {
        let mut args = vec!["-n", &ns.name, "apply", "--server-side"];
        if dry_run {
            args.push("--dry-run=server");
        }
        args.extend(["-f", dir.to_str().unwrap()]);
        let applied = kubectl_ok(&args, "");
        for object in [
            "issuer.cert-manager.io/",
            "certificate.cert-manager.io/",
            "bundle.trust.cert-manager.io/",
            "clientcertificateset.certpin.dev/",
        ] {
            assert!(applied.contains(object), "{object} not applied: {applied}");
        }
    }

    // cert-manager's and trust-manager's part, from the stored objects.
    let issuer_name = doc_of_kind("certificate.yaml", "Issuer")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let certificate_name = doc_of_kind("certificate.yaml", "Certificate")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let issuer = get(&ns.name, "issuer.cert-manager.io", &issuer_name);
    let certificate = get(&ns.name, "certificate.cert-manager.io", &certificate_name);
    let common_name = issue(&ns, &issuer, &certificate).await;
    let bundle = get("default", "bundle.trust.cert-manager.io", &_bundle.0);
    let partners = fixture("ca/partner-bundle.pem");
    bundle_target(&bundle, &trust, &ns.name, &partners).await;

    // The app the set names (pods simulated by kwok).
    let set_doc = doc_of_kind("clientcertificateset.yaml", "ClientCertificateSet");
    let set_name = set_doc["metadata"]["name"].as_str().unwrap();
    let app = set_doc["spec"]["app"]["deployment"].as_str().unwrap();
    create_deployment(&ns, &deployment(app, 1, &["mendix"])).await;

    let op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    let set = wait_until(&sets, set_name, T, "Ready", ready).await;
    let status = set.status.unwrap();
    eprintln!(
        "certificates: {:?}\nCA certificates: {:?}",
        status
            .certificates
            .iter()
            .map(|c| (&c.subject, &c.key_algorithm, &c.not_after))
            .collect::<Vec<_>>(),
        status
            .ca_certificates
            .iter()
            .map(|c| &c.subject)
            .collect::<Vec<_>>()
    );
    let cert = &status.certificates[0];
    assert!(
        cert.subject.as_deref().unwrap_or("").contains(&common_name),
        "{:?}",
        cert.subject
    );
    assert_eq!(cert.key_algorithm.as_deref(), Some("EC P-256"));
    let ca_subjects: Vec<&str> = status
        .ca_certificates
        .iter()
        .filter_map(|c| c.subject.as_deref())
        .collect();
    for want in ["partner root CA", "partner intermediate CA"] {
        assert!(
            ca_subjects.iter().any(|s| s.contains(want)),
            "{want} not among {ca_subjects:?}"
        );
    }

    // The names are what connects the examples: a set naming another key
    // than the Bundle's target is not Ready.
    let key = bundle["spec"]["target"]["configMap"]["key"]
        .as_str()
        .unwrap();
    let wrong = example("clientcertificateset.yaml").replace(&format!("key: {key}"), "key: ca.crt");
    assert_ne!(wrong, example("clientcertificateset.yaml"));
    kubectl_ok(
        &["-n", &ns.name, "apply", "--server-side", "-f", "-"],
        &wrong,
    );
    wait_until(
        &sets,
        set_name,
        T,
        "not Ready: KeyNotFound",
        not_ready_with("KeyNotFound"),
    )
    .await;
    drop(op);
}
