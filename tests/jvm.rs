//! What the JVM (the app runtime) accepts: certpin's verdict must agree with
//! java.security.KeyStore on every fixture, and every file certpin writes must
//! load in the JVM and authenticate a mutual-TLS call.

mod support;

use certpin::pkcs12::{self, Policy, Profile, Reason};
use support::jvm;

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn certpin_finds_exactly_the_files_the_jvm_refuses() {
    let dir = fixtures().join("pkcs12");
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap();
    // Only files certpin can decode and that hold one matching key are
    // "loadable" questions; the rest certpin refuses for other reasons.
    let default_java = &jvm::javas()[0];
    let out = jvm::run(
        default_java,
        "LoadPkcs12.java",
        &[dir.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let java_verdicts: std::collections::HashMap<String, String> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let mut f = l.splitn(3, '\t');
                (
                    f.next().unwrap().to_string(),
                    f.next().unwrap().to_string() + "\t" + f.next().unwrap_or(""),
                )
            })
            .collect();
    let mut compared = 0;
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, password) = (f[0], f[1]);
        let data = std::fs::read(dir.join(file)).unwrap();
        let Ok(decoded) = pkcs12::decode_pkcs12(&data, password) else {
            continue;
        };
        let certpin_says_jvm_loads = decoded.jvm_refusals.is_empty();
        let java = &java_verdicts[file];
        let java_loads = java.starts_with("ok\t1");
        assert_eq!(
            certpin_says_jvm_loads,
            java_loads,
            "{file}: certpin says the JVM {} it, the JVM said: {java}",
            if certpin_says_jvm_loads {
                "loads"
            } else {
                "refuses"
            }
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} fixtures compared");
}

#[test]
fn jvm_refusal_causes_are_named() {
    let dir = fixtures().join("pkcs12");
    for (file, password, cause) in [
        ("openssl-rsa-pbes2-3des.p12", "changeit", "DES-EDE3-CBC"),
        ("openssl-rsa-pbes2-aes192.p12", "changeit", "AES-192-CBC"),
        (
            "openssl-rsa-nonascii-modern.p12",
            "pässwörd-ключ-密码",
            "non-ASCII",
        ),
        (
            "openssl-rsa-nonascii-legacy.p12",
            "pässwörd-ключ-密码",
            "non-ASCII",
        ),
    ] {
        let d = pkcs12::decode_pkcs12(&std::fs::read(dir.join(file)).unwrap(), password).unwrap();
        let err = pkcs12::judge(&d, &Policy::at(chrono::Utc::now())).unwrap_err();
        assert_eq!(err.reason, Reason::JvmIncompatible);
        assert!(err.message.contains(cause), "{file}: {}", err.message);
    }
}

/// Every profile's output, from legacy, modern, odd and PEM inputs, loads in
/// every installed JVM and authenticates a mutual-TLS call on loopback.
#[test]
fn reencoded_files_authenticate_mutual_tls_in_every_jvm() {
    let dir = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let p12 = |f: &str, pw: &str| {
        pkcs12::decode_pkcs12(&std::fs::read(dir.join("pkcs12").join(f)).unwrap(), pw).unwrap()
    };
    let pem = |c: &str, k: &str| {
        pkcs12::decode_pem(
            &std::fs::read(dir.join("pem").join(c)).unwrap(),
            &std::fs::read(dir.join("pem").join(k)).unwrap(),
        )
        .unwrap()
    };
    let inputs = [
        ("rsa-legacy", p12("openssl-rsa-legacy.p12", "changeit")),
        (
            "rsa-nonascii",
            p12("openssl-rsa-nonascii-modern.p12", "pässwörd-ключ-密码"),
        ),
        (
            "rsa-pbes2-3des",
            p12("openssl-rsa-pbes2-3des.p12", "changeit"),
        ),
        ("ec384", p12("openssl-ec384-modern.p12", "changeit")),
        ("ed25519", p12("openssl-ed25519-modern.p12", "changeit")),
        ("keytool-legacy", p12("keytool-rsa-legacy.p12", "changeit")),
        ("pem-ec-sec1", pem("ec256-tls.crt", "ec256-sec1.key")),
        ("pem-rsa-pkcs1", pem("rsa-tls.crt", "rsa-pkcs1.key")),
    ];
    let server = dir.join("pkcs12/server-ec256.p12");
    let ca = dir.join("pem/ca-chain.crt");
    for java in jvm::javas() {
        for (name, decoded) in &inputs {
            // keytool's self-signed certificate is not issued by the test CA.
            if *name == "keytool-legacy" {
                continue;
            }
            for profile in [Profile::Modern, Profile::Legacy] {
                let enc = pkcs12::encode(decoded, "client", profile).unwrap();
                let path = tmp.path().join(format!("{name}-{profile:?}.p12"));
                std::fs::write(&path, &enc.pkcs12).unwrap();
                let out = jvm::run(
                    &java,
                    "MtlsCheck.java",
                    &[
                        path.to_str().unwrap(),
                        server.to_str().unwrap(),
                        ca.to_str().unwrap(),
                    ],
                    &[
                        ("CLIENT_PASSWORD", enc.password.as_str()),
                        ("SERVER_PASSWORD", "changeit"),
                    ],
                );
                let seen = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{} {name} {profile:?}: {}{}",
                    java.display(),
                    seen,
                    String::from_utf8_lossy(&out.stderr)
                );
                let cn = decoded
                    .facts
                    .subject
                    .split(", ")
                    .find(|p| p.starts_with("CN="))
                    .unwrap()
                    .to_string();
                assert!(
                    seen.contains(&cn),
                    "{name}: server saw {seen}, expected {cn}"
                );
            }
        }
    }
    // The keytool input loads (no CA to authenticate against, but loading is the point).
    let enc = pkcs12::encode(&inputs[5].1, "client", Profile::Legacy).unwrap();
    let path = tmp.path().join("keytool.p12");
    std::fs::write(&path, &enc.pkcs12).unwrap();
    let out = jvm::run(
        &jvm::javas()[0],
        "LoadPkcs12.java",
        &["--file", path.to_str().unwrap(), "--password-env", "P"],
        &[("P", enc.password.as_str())],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\tok\t1\t"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The runtime's outgoing TLS call configured only from its settings
/// (tests/java/RuntimeClient.java): with CACertificates set it trusts exactly
/// those files, one certificate each; without it, the JVM's default trust,
/// which does not know the partner's private CA.
#[test]
fn runtime_client_trusts_exactly_the_ca_settings() {
    const MOUNT: &str = "/etc/certpin/client-certificates";
    let dir = fixtures();
    let java = &jvm::javas()[0];
    // `ca`: (fixture under tests/fixtures/ca, name in the mounted volume);
    // None leaves CACertificates unset.
    let call = |ca: Option<&[(&str, &str)]>| {
        let tmp = tempfile::tempdir().unwrap();
        let (settings, files) = (tmp.path().join("settings"), tmp.path().join("files"));
        std::fs::create_dir_all(&settings).unwrap();
        std::fs::create_dir_all(&files).unwrap();
        std::fs::copy(
            dir.join("pkcs12/openssl-rsa-modern.p12"),
            files.join("c-1.pfx"),
        )
        .unwrap();
        let client = format!("{MOUNT}/c-1.pfx");
        std::fs::write(settings.join("ClientCertificates"), &client).unwrap();
        std::fs::write(settings.join("ClientCertificatePasswords"), "changeit").unwrap();
        std::fs::write(
            settings.join("ClientCertificateUsages"),
            format!(r#"{{"localhost": "{client}"}}"#),
        )
        .unwrap();
        if let Some(ca) = ca {
            let mut paths = vec![];
            for (fixture, name) in ca {
                std::fs::copy(dir.join("ca").join(fixture), files.join(name)).unwrap();
                paths.push(format!("{MOUNT}/{name}"));
            }
            std::fs::write(settings.join("CACertificates"), paths.join(",")).unwrap();
        }
        let out = jvm::run(
            java,
            "RuntimeClient.java",
            &[
                settings.to_str().unwrap(),
                MOUNT,
                files.to_str().unwrap(),
                "localhost",
                dir.join("ca/partner-server.p12").to_str().unwrap(),
                dir.join("pem/ca-chain.crt").to_str().unwrap(),
            ],
            &[("SERVER_PASSWORD", "changeit")],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // a) The partner's root and intermediate, one file each: the call goes
    // through and the partner sees the client certificate.
    let (code, stdout, stderr) = call(Some(&[
        ("partner-root.crt", "ca-0.crt"),
        ("partner-intermediate.crt", "ca-1.crt"),
    ]));
    assert_eq!(code, Some(0), "a) {stdout}{stderr}");
    assert!(stdout.contains("CN=partner-a client"), "a) {stdout}");

    // The root alone is enough: the server sends the intermediate.
    let (code, stdout, stderr) = call(Some(&[("partner-root.crt", "ca-0.crt")]));
    assert_eq!(code, Some(0), "a, root only) {stdout}{stderr}");
    assert!(
        stdout.contains("CN=partner-a client"),
        "a, root only) {stdout}"
    );

    // b) No CACertificates: the JVM's default trust does not know the partner CA.
    let (code, stdout, stderr) = call(None);
    assert_eq!(code, Some(2), "b) {stdout}{stderr}");
    assert!(
        stderr.contains("PKIX") || stderr.contains("certification path"),
        "b) {stderr}"
    );

    // c) A bundle in one file: the runtime wants one certificate per file.
    let (code, stdout, stderr) = call(Some(&[("partner-bundle.pem", "ca-0.crt")]));
    assert_eq!(code, Some(3), "c) {stdout}{stderr}");
    assert!(stderr.contains("holds 3 certificates"), "c) {stderr}");

    // d) Another CA only: the partner's chain does not lead to it.
    let (code, stdout, stderr) = call(Some(&[("cert-manager-ca.crt", "ca-0.crt")]));
    assert_eq!(code, Some(2), "d) {stdout}{stderr}");
    assert!(
        stderr.contains("PKIX") || stderr.contains("certification path"),
        "d) {stderr}"
    );
}
