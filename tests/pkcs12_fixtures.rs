//! Every fixture written by scripts/gen-fixtures (OpenSSL 3, keytool, Python
//! cryptography) gets exactly the verdict the manifest records.

use certpin::pkcs12::{self, Policy, Reason};

struct Row {
    file: String,
    password: String,
    expect: String,
    key: String,
}

fn manifest() -> Vec<Row> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pkcs12");
    std::fs::read_to_string(format!("{dir}/manifest.tsv"))
        .expect("manifest.tsv (run scripts/gen-fixtures)")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                file: format!("{dir}/{}", f[0]),
                password: f[1].into(),
                expect: f[2].into(),
                key: f[3].into(),
            }
        })
        .collect()
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[test]
fn every_fixture_gets_the_recorded_verdict() {
    let rows = manifest();
    assert!(rows.len() >= 30, "fixtures missing");
    for row in rows {
        let data = std::fs::read(&row.file).unwrap();
        let verdict = pkcs12::decode_pkcs12(&data, &row.password)
            .and_then(|d| pkcs12::judge(&d, &Policy::at(now())).map(|_| d));
        match (row.expect.as_str(), verdict) {
            ("ok", Ok(d)) => {
                let expected_alg = match row.key.as_str() {
                    "rsa-2048" => ("RSA", 2048),
                    "rsa-3072" => ("RSA", 3072),
                    "ec-p256" => ("EC P-256", 256),
                    "ec-p384" => ("EC P-384", 384),
                    "ed25519" => ("Ed25519", 256),
                    other => panic!("unknown key type {other}"),
                };
                assert_eq!(
                    (d.facts.key_algorithm.as_str(), d.facts.key_size),
                    expected_alg,
                    "{}",
                    row.file
                );
            }
            ("ok", Err(p)) => panic!("{}: expected valid, got {p}", row.file),
            (code, Ok(_)) => panic!("{}: expected {code}, got valid", row.file),
            (code, Err(p)) => {
                assert_eq!(p.reason.code(), code, "{}: {}", row.file, p.message);
                assert!(!p.message.contains(&row.password) || row.password.is_empty());
            }
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/pkcs12/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn wrong_password_is_named_for_modern_legacy_and_keytool_files() {
    for f in [
        "openssl-rsa-modern.p12",
        "openssl-rsa-legacy.p12",
        "keytool-rsa-modern.p12",
        "keytool-rsa-legacy.p12",
    ] {
        let err = pkcs12::decode_pkcs12(&fixture(f), "not-the-password").unwrap_err();
        assert_eq!(err.reason, Reason::WrongPassword, "{f}");
    }
}

#[test]
fn facts_describe_the_end_entity_certificate_and_its_chain() {
    let d = pkcs12::decode_pkcs12(&fixture("openssl-rsa-chain-reversed.p12"), "changeit").unwrap();
    assert_eq!(d.facts.subject, "CN=partner-a client, O=certpin tests");
    assert_eq!(d.facts.issuer, "CN=certpin test intermediate CA, O=certpin");
    assert_eq!(d.facts.chain_length, 3);
    assert_eq!(d.facts.encryption, "modern");
    assert!(
        d.facts.encryption_detail.contains("AES-256-CBC"),
        "{}",
        d.facts.encryption_detail
    );
    assert_eq!(d.facts.sha256_fingerprint.len(), 32 * 3 - 1);
    let legacy = pkcs12::decode_pkcs12(&fixture("openssl-rsa-legacy.p12"), "changeit").unwrap();
    assert_eq!(legacy.facts.encryption, "legacy");
    assert!(
        legacy
            .facts
            .encryption_detail
            .contains("pbeWithSHAAnd40BitRC2-CBC")
    );
    assert!(
        legacy
            .facts
            .encryption_detail
            .contains("pbeWithSHAAnd3-KeyTripleDES-CBC")
    );
    // Same certificate, same fingerprint, whatever the container.
    assert_eq!(legacy.facts.sha256_fingerprint, d.facts.sha256_fingerprint);
}

#[test]
fn expiry_within_the_threshold_is_valid_with_a_warning() {
    let d = pkcs12::decode_pkcs12(&fixture("openssl-ec256-modern.p12"), "changeit").unwrap();
    let mut policy = Policy::at(d.facts.not_after - chrono::Duration::days(10));
    let warnings = pkcs12::judge(&d, &policy).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].to_string().starts_with("expiring-soon: "),
        "{warnings:?}"
    );
    policy.warn_within = chrono::Duration::days(5);
    assert!(pkcs12::judge(&d, &policy).unwrap().is_empty());
    policy.now = d.facts.not_after + chrono::Duration::seconds(1);
    assert_eq!(
        pkcs12::judge(&d, &policy).unwrap_err().reason,
        Reason::Expired
    );
}

#[test]
fn unsupported_encryption_names_the_scheme() {
    let err = pkcs12::decode_pkcs12(&fixture("openssl-rsa-rc4.p12"), "changeit").unwrap_err();
    assert!(
        err.message.contains("pbeWithSHAAnd128BitRC4"),
        "{}",
        err.message
    );
    let err = pkcs12::decode_pkcs12(&fixture("openssl-rsa-rc2-128.p12"), "changeit").unwrap_err();
    assert!(
        err.message.contains("pbeWithSHAAnd128BitRC2-CBC"),
        "{}",
        err.message
    );
}

#[test]
fn jvm_refusals_name_the_cause_and_are_warnings_when_reencoding() {
    let d = pkcs12::decode_pkcs12(&fixture("openssl-rsa-pbes2-3des.p12"), "changeit").unwrap();
    let err = pkcs12::judge(&d, &Policy::at(now())).unwrap_err();
    assert_eq!(err.reason, Reason::JvmIncompatible);
    assert!(err.message.contains("DES-EDE3-CBC"), "{}", err.message);
    let lenient = Policy {
        jvm_strict: false,
        ..Policy::at(now())
    };
    let warnings = pkcs12::judge(&d, &lenient).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.kind == pkcs12::WarningKind::ReEncodedForJvm)
    );
    let d = pkcs12::decode_pkcs12(
        &fixture("openssl-rsa-nonascii-modern.p12"),
        "pässwörd-ключ-密码",
    )
    .unwrap();
    let err = pkcs12::judge(&d, &Policy::at(now())).unwrap_err();
    assert!(err.message.contains("non-ASCII"), "{}", err.message);
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/pem/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn pem_pairs_as_cert_manager_writes_them_decode() {
    for (crt, key, alg, chain) in [
        ("rsa-tls.crt", "rsa-pkcs1.key", "RSA", 3),
        ("rsa-tls.crt", "rsa-pkcs8.key", "RSA", 3),
        ("ec256-tls.crt", "ec256-sec1.key", "EC P-256", 2),
        ("ed25519-tls.crt", "ed25519-pkcs8.key", "Ed25519", 1),
    ] {
        let d =
            pkcs12::decode_pem(&pem(crt), &pem(key)).unwrap_or_else(|e| panic!("{crt}/{key}: {e}"));
        assert_eq!(d.facts.key_algorithm, alg);
        assert_eq!(d.facts.chain_length, chain, "{crt}");
        assert_eq!(d.facts.encryption, "pem");
    }
    let err = pkcs12::decode_pem(&pem("ec256-tls.crt"), &pem("rsa-pkcs1.key")).unwrap_err();
    assert_eq!(err.reason, Reason::KeyMismatch);
    let err = pkcs12::decode_pem(&pem("rsa-tls.crt"), b"not pem").unwrap_err();
    assert_eq!(err.reason, Reason::NoPrivateKey);
}

#[test]
fn reencoded_files_decode_again_to_the_same_certificate() {
    for profile in [pkcs12::Profile::Modern, pkcs12::Profile::Legacy] {
        for f in [
            "openssl-rsa-legacy.p12",
            "openssl-ec384-modern.p12",
            "openssl-ed25519-modern.p12",
        ] {
            let d = pkcs12::decode_pkcs12(&fixture(f), "changeit").unwrap();
            let enc = pkcs12::encode(&d, "partner-a", profile).unwrap();
            assert_eq!(enc.password.len(), 32);
            assert!(enc.password.chars().all(|c| c.is_ascii_alphanumeric()));
            let again = pkcs12::decode_pkcs12(&enc.pkcs12, &enc.password).unwrap();
            assert_eq!(again.facts.sha256_fingerprint, d.facts.sha256_fingerprint);
            assert_eq!(again.facts.chain_length, d.facts.chain_length);
            let expected = if profile == pkcs12::Profile::Modern {
                "modern"
            } else {
                "legacy"
            };
            assert_eq!(again.facts.encryption, expected);
            assert!(again.jvm_refusals.is_empty());
        }
    }
}

#[test]
fn pem_cache_keys_are_taken_over_raw_bytes() {
    // Two keys that differ only in invalid UTF-8 must not share a cache key.
    let crt = pem("ec256-tls.crt");
    assert_ne!(
        pkcs12::pem_content_key(&crt, &[0xff, 0x01]),
        pkcs12::pem_content_key(&crt, &[0xfe, 0x01])
    );
    assert_ne!(
        pkcs12::pem_content_key(&crt, b"k"),
        pkcs12::content_key(&crt, "k")
    );
}
