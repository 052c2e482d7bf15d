//! The CLI as a developer uses it: exit codes, JSON shape, and the brief's
//! example rendered exactly as the brief shows it.

use std::process::Command;

fn certpin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certpin"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fx(name: &str) -> String {
    format!(
        "{}/tests/fixtures/pkcs12/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn validate_exit_codes_and_json() {
    let pw = [("PW", "changeit")];
    let (code, out, _) = certpin(
        &[
            "validate",
            &fx("keytool-rsa-legacy.p12"),
            "--password-env",
            "PW",
        ],
        &pw,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RSA (2048 bits)"));
    assert!(!out.contains("changeit"), "validate printed the password");

    let (code, out, _) = certpin(
        &[
            "validate",
            &fx("python-expired.p12"),
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
        &pw,
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["reason"], "expired");
    assert_eq!(v["certificate"]["notAfter"], "2020-01-01T00:00:00Z");
    for key in ["valid", "reason", "message", "warnings", "certificate"] {
        assert!(v.get(key).is_some(), "JSON lacks {key}");
    }
    assert!(!out.contains("changeit"));

    let (code, out, _) = certpin(
        &[
            "validate",
            &fx("openssl-rsa-modern.p12"),
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
        &[("PW", "nope")],
    );
    assert_eq!(code, 1);
    assert!(out.contains("\"wrong-password\""));
    assert!(!out.contains("nope"));

    // Usage errors: exit 2.
    assert_eq!(certpin(&["validate", "/nonexistent.p12"], &[]).0, 2);
    assert_eq!(
        certpin(
            &[
                "validate",
                &fx("openssl-rsa-modern.p12"),
                "--password-env",
                "UNSET_VAR_X"
            ],
            &[]
        )
        .0,
        2
    );
    assert_eq!(certpin(&["validate"], &[]).0, 2);
    assert_eq!(certpin(&["settings", "--pin", "Module.X"], &[]).0, 2);
}

#[test]
fn settings_prints_the_briefs_example_exactly() {
    let env = [("MX1", "changeit"), ("MX2", "changeit")];
    let (code, out, err) = certpin(
        &[
            "settings",
            "--cert",
            &fx("openssl-rsa-modern.p12"),
            "--password-env",
            "MX1",
            "--runtime-path",
            r"D:\App\Mx1.pfx",
            "--pin",
            "Module.WebService1",
            "--cert",
            &fx("openssl-ec256-legacy.p12"),
            "--password-env",
            "MX2",
            "--runtime-path",
            r"D:\App\Mx2.pfx",
            "--pin",
            "www.server-to-contact.com",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "ClientCertificates = D:\\App\\Mx1.pfx,D:\\App\\Mx2.pfx\n\
         ClientCertificatePasswords = changeit,changeit\n\
         ClientCertificateUsages = { \"Module.WebService1\": \"D:\\\\App\\\\Mx1.pfx\", \"www.server-to-contact.com\": \"D:\\\\App\\\\Mx2.pfx\" }\n"
    );
    // The second example: one certificate, a web service that gets none.
    let (code, out, _) = certpin(
        &[
            "settings",
            "-o",
            "json",
            "--cert",
            &fx("openssl-rsa-modern.p12"),
            "--password-env",
            "MX1",
            "--runtime-path",
            r"D:\App\Mx1.pfx",
            "--pin",
            "Module.WebService1",
            "--no-certificate-for",
            "Module.WebService2",
        ],
        &env,
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["ClientCertificateUsages"],
        r#"{ "Module.WebService1": "D:\\App\\Mx1.pfx", "Module.WebService2": "" }"#
    );
}

#[test]
fn settings_refuses_what_the_format_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "change,it\n").unwrap();
    let (code, out, _) = certpin(
        &[
            "settings",
            "-o",
            "json",
            "--cert",
            &fx("openssl-rsa-modern.p12"),
            "--password-file",
            pwfile.to_str().unwrap(),
            "--pin",
            "https://api.example.com/x",
        ],
        &[],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reasons: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"wrong-password"), "{reasons:?}");
    assert!(reasons.contains(&"comma-in-password"), "{reasons:?}");
    assert!(reasons.contains(&"invalid-pin"), "{reasons:?}");
    assert!(out.contains("use \\\"api.example.com\\\""), "{out}");
    assert!(v.get("ClientCertificatePasswords").is_none());
}

#[test]
fn settings_reads_a_local_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fx("openssl-rsa-legacy.p12"), dir.path().join("a.p12")).unwrap();
    std::fs::write(dir.path().join("a.pw"), "changeit\n").unwrap();
    let file = dir.path().join("settings.yaml");
    std::fs::write(
        &file,
        "certificates:\n  - file: a.p12\n    runtimePath: /app/a.p12\n    passwordFile: a.pw\n    pinTo: [api.example.com]\nnoCertificateFor: [Mod.Ws]\n",
    )
    .unwrap();
    let (code, out, err) = certpin(&["settings", "--file", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            r#"ClientCertificateUsages = { "api.example.com": "/app/a.p12", "Mod.Ws": "" }"#
        ),
        "{out}"
    );
}

fn ca(name: &str) -> String {
    format!("{}/tests/fixtures/ca/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_ca_judges_a_bundle_and_never_prints_a_key() {
    let (code, out, _) = certpin(&["validate", "--ca", &ca("partner-bundle.pem")], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 2 CA certificate(s)"), "{out}");
    assert!(
        out.contains("partner root CA") && out.contains("intermediate"),
        "{out}"
    );
    let (code, out, _) = certpin(&["validate", "--ca", &ca("expired-ca.crt")], &[]);
    assert_eq!(code, 0, "expired is a warning: {out}");
    assert!(out.contains("warning:      expired:"), "{out}");
    let (code, out, _) = certpin(
        &["validate", "--ca", &ca("bundle-with-key.pem"), "-o", "json"],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], "PrivateKeyInBundle");
    let key = std::fs::read_to_string(ca("bundle-with-key.pem")).unwrap();
    let line = key
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(1)
        .unwrap();
    assert!(!out.contains(line));
    let (code, _, _) = certpin(&["validate", "--ca", &ca("garbage.bin")], &[]);
    assert_eq!(code, 1);
}

#[test]
fn settings_prints_ca_certificates_one_file_each() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let (code, out, err) = certpin(
        &[
            "settings",
            "--ca",
            &ca("cert-manager-ca.crt"),
            "--ca",
            &ca("partner-bundle.pem"),
            "--ca-dir",
            dir_s,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("CACertificates = "))
        .unwrap_or_else(|| panic!("no CACertificates in {out}"));
    let paths: Vec<&str> = line.split(',').collect();
    assert_eq!(
        paths[0],
        ca("cert-manager-ca.crt"),
        "a single PEM is used as is"
    );
    assert_eq!(paths.len(), 3, "{paths:?}");
    for p in &paths[1..] {
        assert!(p.starts_with(dir_s), "{p}");
        let text = std::fs::read_to_string(p).unwrap();
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 1, "{p}");
    }
    assert!(!out.contains("ClientCertificates ="), "{out}");
    // Without --ca-dir a bundle cannot be used: a usage error that says why.
    let (code, _, err) = certpin(&["settings", "--ca", &ca("partner-bundle.pem")], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--ca-dir"), "{err}");
}
