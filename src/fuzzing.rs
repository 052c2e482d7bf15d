//! The bodies of the fuzz targets (fuzz/), kept in the library so that the
//! inputs the fuzzer found are replayed as regression tests
//! (tests/fuzz_regressions.rs) by the normal test suite.

use chrono::{TimeZone, Utc};

use crate::pkcs12::{self, Policy};
use crate::settings::{CertificateFile, render};

/// First byte: password length; then the password; the rest is the file.
pub fn pkcs12_decode(input: &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let password = String::from_utf8_lossy(&rest[..n]);
    let data = &rest[n..];
    let _ = pkcs12::inspect(data);
    if let Ok(d) = pkcs12::decode_pkcs12(data, &password) {
        let at = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let _ = pkcs12::judge(&d, &Policy::at(at));
        let _ = pkcs12::encode(&d, "fuzz", pkcs12::Profile::Legacy);
    }
}

/// Certificate and key PEM, separated by the first NUL byte.
pub fn pem_decode(input: &[u8]) {
    let (crt, key) = match input.iter().position(|b| *b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let _ = pkcs12::decode_pem(crt, key);
}

/// Lines `path<TAB>password<TAB>pin pin ...`; lines starting with `!` name
/// endpoints that get no certificate. Whatever renders must parse back to
/// the same mapping, as the runtime reads it.
pub fn render_settings(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut files = Vec::new();
    let mut none = Vec::new();
    for (i, line) in text.lines().enumerate().take(64) {
        if let Some(endpoint) = line.strip_prefix('!') {
            none.push(endpoint.to_string());
            continue;
        }
        let mut f = line.split('\t');
        files.push(CertificateFile {
            name: format!("c{i}"),
            path: f.next().unwrap_or_default().to_string(),
            password: f.next().unwrap_or_default().to_string(),
            pins: f
                .next()
                .unwrap_or_default()
                .split(' ')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    let Ok(s) = render(&files, &none) else { return };
    let paths: Vec<&str> = s.certificates.split(',').collect();
    let passwords: Vec<&str> = s.passwords.split(',').collect();
    assert_eq!(paths.len(), passwords.len(), "lists out of step");
    for f in &files {
        let i = paths
            .iter()
            .position(|p| *p == f.path)
            .expect("every path is listed");
        assert_eq!(
            passwords[i], f.password,
            "password not at its path's position"
        );
    }
    if let Some(u) = &s.usages {
        let usages: std::collections::BTreeMap<String, String> =
            serde_json::from_str(u).expect("usages are JSON");
        for f in &files {
            for p in &f.pins {
                assert_eq!(usages.get(p), Some(&f.path), "pin {p:?} lost");
            }
        }
        for n in &none {
            assert_eq!(usages.get(n).map(String::as_str), Some(""), "{n:?} lost");
        }
        for v in usages.values() {
            assert!(
                v.is_empty() || paths.contains(&v.as_str()),
                "usage path not in ClientCertificates"
            );
        }
    }
}

/// A CA bundle as a set names it: whatever parses renders to files that
/// each parse back to exactly that certificate.
pub fn ca_bundle(input: &[u8]) {
    let Ok(certs) = crate::ca::parse_bundle(input) else {
        return;
    };
    for c in &certs {
        let again = crate::ca::parse_bundle(c.pem().as_bytes()).expect("a rendered file parses");
        assert_eq!(
            again.as_slice(),
            std::slice::from_ref(c),
            "a rendered file is its certificate"
        );
    }
}
