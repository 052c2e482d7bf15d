//! A wrong password: refused with its reason, nothing applied, the last
//! good rendering kept; and no secret material in any request body but the
//! rendered Secret's own writes.

use base64::Engine as _;
use serde_json::json;

use super::world::*;
use crate::names::KEY_PASSWORDS;

const WRONG: &[u8] = b"wrong-Pa55word-7f3e";

fn b64(b: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(b)
        .into_bytes()
}

/// No request body but a write of the rendered Secret carries any of
/// `needles` (raw or base64); `what` names them without showing them.
fn nowhere_but_the_rendered_secret(w: &World, needles: &[(&str, Vec<u8>)]) {
    let rendered = format!("/api/v1/namespaces/{NS}/secrets/s-certpin");
    w.fake.since(0, |log| {
        for l in log.iter().filter(|l| l.path != rendered) {
            for (what, needle) in needles {
                assert!(
                    !l.body_contains(needle) && !l.body_contains(&b64(needle)),
                    "{what} is in the body of {}",
                    describe(l)
                );
            }
        }
    });
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_its_reason_and_nothing_is_applied() {
    let w = World::new();
    w.put_cert("openssl-ec256-modern.p12", WRONG);
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    let before = w.version_of_deployment("app");
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s), ("False".into(), "WrongPassword".into()));
    assert_eq!(condition(&s, "CertificatesValid").reason, "WrongPassword");
    assert_eq!(condition(&s, "Applied").reason, "InvalidInput");
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.certificates[0].state, "wrong-password");
    assert_eq!(st.applied_hash, None);
    assert_eq!(w.version_of_deployment("app"), before);
    assert!(w.secret("s-certpin").is_none() && w.config_map("s-certpin").is_none());
    let mut writes = w.writes_since(0);
    writes.sort();
    assert_eq!(
        writes,
        [
            "PATCH clientcertificatesets/s json-patch -",
            "PATCH clientcertificatesets/s/status apply certpin",
            "POST events json -",
        ]
    );
    assert!(w.warning("WrongPassword").is_some());
    nowhere_but_the_rendered_secret(
        &w,
        &[
            ("the password", WRONG.to_vec()),
            ("the PKCS12 file", fixture("openssl-ec256-modern.p12")),
        ],
    );
}

#[tokio::test]
async fn a_password_gone_wrong_keeps_the_last_good_rendering_and_wiring() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let good = w.set("s").status.unwrap().applied_hash.unwrap();
    let rendered = w.secret("s-certpin").unwrap();
    let (secret_version, deployment_version) = (
        w.version_of_secret("s-certpin"),
        w.version_of_deployment("app"),
    );

    w.put_cert("openssl-ec256-modern.p12", WRONG);
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s), ("False".into(), "WrongPassword".into()));
    let applied = condition(&s, "Applied");
    assert_eq!(applied.reason, "InvalidInput");
    assert!(applied.message.contains(&good), "{}", applied.message);
    assert_eq!(
        s.status.as_ref().unwrap().applied_hash.as_ref(),
        Some(&good)
    );
    assert_eq!(w.version_of_secret("s-certpin"), secret_version);
    assert_eq!(w.version_of_deployment("app"), deployment_version);
    assert!(wired(&containers(&w.deployment_now("app"))[0]));
    assert_eq!(
        w.writes_since(mark)
            .into_iter()
            .filter(|l| !l.contains("clientcertificatesets/s") && !l.contains("events"))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "invalid input changed something that runs"
    );
    assert!(w.warning("WrongPassword").is_some());

    // The input passwords, the input file, and what certpin generated: in
    // the rendered Secret's writes only.
    let data = rendered.data.unwrap();
    let generated = String::from_utf8(data[KEY_PASSWORDS].0.clone()).unwrap();
    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("the good password", PASSWORD.to_vec()),
        ("the wrong password", WRONG.to_vec()),
        ("the input PKCS12 file", fixture("openssl-ec256-modern.p12")),
    ];
    for p in generated.split(',') {
        needles.push(("a generated password", p.as_bytes().to_vec()));
    }
    for (k, v) in &data {
        if k != KEY_PASSWORDS {
            needles.push(("a rendered file", v.0.clone()));
        }
    }
    nowhere_but_the_rendered_secret(&w, &needles);
}
