//! Rendering the app runtime's client-certificate settings (pure).
//!
//! `ClientCertificates` and `ClientCertificatePasswords` are comma-separated
//! lists in the same order; `ClientCertificateUsages` is a JSON object from
//! endpoint to path, where `""` means "present no certificate".

use std::collections::BTreeMap;

use crate::endpoint::check_pin;
use crate::pkcs12::{Problem, Reason};

/// One certificate file as the runtime will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFile {
    /// Name used in messages (the set's certificate name, or the file name).
    pub name: String,
    pub path: String,
    pub password: String,
    pub pins: Vec<String>,
}

impl CertificateFile {
    pub fn new(name: &str, path: &str, password: &str, pins: &[&str]) -> Self {
        CertificateFile {
            name: name.into(),
            path: path.into(),
            password: password.into(),
            pins: pins.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// The three runtime settings. `usages` is `None` when nothing is pinned
/// (the runtime then offers the certificates to every server that asks).
#[derive(Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub certificates: String,
    pub passwords: String,
    pub usages: Option<String>,
}

impl std::fmt::Debug for RuntimeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeSettings")
            .field("certificates", &self.certificates)
            .field("passwords", &"<redacted>")
            .field("usages", &self.usages)
            .finish()
    }
}

/// Renders the settings, or every reason they cannot be represented.
pub fn render(
    files: &[CertificateFile],
    no_certificate_for: &[String],
) -> Result<RuntimeSettings, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut paths: Vec<&CertificateFile> = Vec::new();
    for f in files {
        problems.extend(file_problems(f));
        match paths.iter().find(|p| p.path == f.path) {
            Some(other) if other.password != f.password => problems.push(Problem::new(
                Reason::DuplicatePath,
                format!(
                    "{} and {} name the same path {:?} with different passwords",
                    other.name, f.name, f.path
                ),
            )),
            Some(_) => {}
            None => paths.push(f),
        }
    }
    let usages = usages(files, no_certificate_for, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let usages = (!usages.is_empty()).then(|| {
        let pairs: Vec<String> = usages
            .iter()
            .map(|(k, v)| format!("{}: {}", json_string(k), json_string(v)))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    });
    let joined = |part: fn(&CertificateFile) -> &str| -> String {
        paths.iter().map(|f| part(f)).collect::<Vec<_>>().join(",")
    };
    Ok(RuntimeSettings {
        certificates: joined(|f| &f.path),
        passwords: joined(|f| &f.password),
        usages,
    })
}

/// What one file's path and password cannot be in the comma-separated settings.
fn file_problems(f: &CertificateFile) -> Vec<Problem> {
    let mut problems = Vec::new();
    if f.path.contains(',') {
        problems.push(Problem::new(
            Reason::CommaInPath,
            format!(
                "the path of {} ({:?}) contains a comma; ClientCertificates is comma-separated, so rename the file",
                f.name, f.path
            ),
        ));
    }
    if f.password.contains(',') {
        problems.push(Problem::new(
            Reason::CommaInPassword,
            format!(
                "the password of {} contains a comma; ClientCertificatePasswords is comma-separated, so the \
                 runtime would split it: re-export the file with a password without commas",
                f.name
            ),
        ));
    }
    if f.password.is_empty() {
        problems.push(Problem::new(
            Reason::EmptyPassword,
            format!(
                "{} has an empty password; an empty element in ClientCertificatePasswords is read as \"no \
                 password configured\", so re-export the file with a password",
                f.name
            ),
        ));
    }
    problems
}

/// The usages, endpoint to path, first come first listed; each pin that is
/// invalid or pinned twice is a problem.
fn usages(
    files: &[CertificateFile],
    no_certificate_for: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<(String, String)> {
    let mut usages: Vec<(String, String)> = Vec::new();
    // Lower-cased endpoint -> who pinned it.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |endpoint: &str, who: String, path: &str| {
        if let Err(p) = check_pin(endpoint) {
            problems.push(Problem::new(p.reason, format!("{who}: {}", p.message)));
            return;
        }
        // Host names are case-insensitive; two spellings would be ambiguous.
        let key = endpoint.to_ascii_lowercase();
        if let Some(first) = owner.get(&key) {
            let same = if *first == who {
                " twice".to_string()
            } else {
                format!(" by {first} and by {who}")
            };
            problems.push(Problem::new(
                Reason::DuplicatePin,
                format!(
                    "endpoint {endpoint:?} is pinned{same}; each endpoint can have one certificate"
                ),
            ));
            return;
        }
        owner.insert(key, who);
        usages.push((endpoint.to_string(), path.to_string()));
    };
    for f in files {
        for pin in &f.pins {
            claim(pin, f.name.clone(), &f.path);
        }
    }
    for endpoint in no_certificate_for {
        claim(endpoint, "noCertificateFor".into(), "");
    }
    usages
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_briefs_examples_render_exactly_as_the_brief_shows() {
        let files = [
            CertificateFile::new("Mx1", r"D:\App\Mx1.pfx", "secret1", &["Module.WebService1"]),
            CertificateFile::new(
                "Mx2",
                r"D:\App\Mx2.pfx",
                "secret2",
                &["www.server-to-contact.com"],
            ),
        ];
        let s = render(&files, &[]).unwrap();
        assert_eq!(s.certificates, r"D:\App\Mx1.pfx,D:\App\Mx2.pfx");
        assert_eq!(s.passwords, "secret1,secret2");
        assert_eq!(
            s.usages.as_deref(),
            Some(
                r#"{ "Module.WebService1": "D:\\App\\Mx1.pfx", "www.server-to-contact.com": "D:\\App\\Mx2.pfx" }"#
            )
        );
        let files = [CertificateFile::new(
            "Mx1",
            r"D:\App\Mx1.pfx",
            "secret1",
            &["Module.WebService1"],
        )];
        let s = render(&files, &["Module.WebService2".to_string()]).unwrap();
        assert_eq!(
            s.usages.as_deref(),
            Some(r#"{ "Module.WebService1": "D:\\App\\Mx1.pfx", "Module.WebService2": "" }"#)
        );
    }

    #[test]
    fn without_pins_there_is_no_usages_setting() {
        let s = render(&[CertificateFile::new("a", "/c/a.pfx", "pw", &[])], &[]).unwrap();
        assert_eq!(s.usages, None);
        assert_eq!(s.certificates, "/c/a.pfx");
    }

    #[test]
    fn format_limits_are_refused_with_their_reasons() {
        let f = CertificateFile::new;
        // (files, noCertificateFor, the one reason expected)
        let cases: [(Vec<CertificateFile>, &[&str], &str); 8] = [
            (vec![f("a", "/c/a,b.pfx", "pw", &[])], &[], "comma-in-path"),
            (
                vec![f("a", "/c/a.pfx", "p,w", &[])],
                &[],
                "comma-in-password",
            ),
            (
                vec![
                    f("a", "/c/a.pfx", "pw", &[]),
                    f("b", "/c/a.pfx", "other", &[]),
                ],
                &[],
                "duplicate-path",
            ),
            (vec![f("a", "/c/a.pfx", "", &[])], &[], "empty-password"),
            (
                vec![f("a", "/c/a.pfx", "pw", &["x.example", "x.example"])],
                &[],
                "duplicate-pin",
            ),
            (
                vec![
                    f("a", "/c/a.pfx", "pw", &["x.example"]),
                    f("b", "/c/b.pfx", "pw", &["X.example"]),
                ],
                &[],
                "duplicate-pin",
            ),
            (
                vec![f("a", "/c/a.pfx", "pw", &["M.S"])],
                &["M.S"],
                "duplicate-pin",
            ),
            (
                vec![f("a", "/c/a.pfx", "pw", &["https://x.example/"])],
                &[],
                "invalid-pin",
            ),
        ];
        for (files, none, expected) in cases {
            let none: Vec<String> = none.iter().map(|s| s.to_string()).collect();
            let codes: Vec<&str> = render(&files, &none)
                .unwrap_err()
                .iter()
                .map(|p| p.reason.code())
                .collect();
            assert_eq!(codes, [expected], "{files:?}");
        }
        let msg = &render(&[f("a", "/c/a.pfx", "top,secret", &[])], &[]).unwrap_err()[0].message;
        assert!(
            !msg.contains("top,secret"),
            "a message leaked the password: {msg}"
        );
    }

    /// Parses the settings back the way the runtime reads them.
    fn parse_back(s: &RuntimeSettings) -> (Vec<(String, String)>, BTreeMap<String, String>) {
        let paths: Vec<&str> = s.certificates.split(',').collect();
        let passwords: Vec<&str> = s.passwords.split(',').collect();
        assert_eq!(paths.len(), passwords.len());
        let usages: BTreeMap<String, String> = s
            .usages
            .as_deref()
            .map(|u| serde_json::from_str(u).unwrap())
            .unwrap_or_default();
        for path in usages.values() {
            assert!(
                path.is_empty() || paths.contains(&path.as_str()),
                "usage path {path:?} not in ClientCertificates"
            );
        }
        (
            paths
                .iter()
                .zip(passwords)
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            usages,
        )
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9 ._\\-\\\\/:\u{e9}\u{4e2d}\"]{1,12}"
    }

    proptest! {
        #[test]
        fn accepted_inputs_parse_back_to_the_same_mapping(
            certs in proptest::collection::vec((segment(), segment(), proptest::collection::vec("[A-Za-z][A-Za-z0-9.\\-]{0,10}", 0..4)), 1..5),
            none in proptest::collection::vec("[A-Za-z][A-Za-z0-9.]{0,10}", 0..3),
        ) {
            let files: Vec<CertificateFile> = certs.iter().enumerate().map(|(i, (path, pw, pins))| CertificateFile {
                name: format!("c{i}"),
                path: format!("{path}{i}"),
                password: pw.clone(),
                pins: pins.iter().map(|p| format!("{p}{i}")).collect(),
            }).collect();
            if let Ok(s) = render(&files, &none) {
                let (pairs, usages) = parse_back(&s);
                let expected: Vec<(String, String)> = files.iter().map(|f| (f.path.clone(), f.password.clone())).collect();
                prop_assert_eq!(pairs, expected);
                let mut expected_usages = BTreeMap::new();
                for f in &files { for p in &f.pins { expected_usages.insert(p.clone(), f.path.clone()); } }
                for n in &none { expected_usages.insert(n.clone(), String::new()); }
                prop_assert_eq!(usages, expected_usages);
            } else {
                // Refused only for a reason the format cannot carry.
                let problems = render(&files, &none).unwrap_err();
                for p in problems {
                    prop_assert!(matches!(p.reason, Reason::DuplicatePin | Reason::DuplicatePath | Reason::CommaInPath | Reason::CommaInPassword | Reason::EmptyPassword | Reason::InvalidPin));
                }
            }
        }
    }
}
