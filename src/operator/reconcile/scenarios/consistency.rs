//! A rendering never disagrees with itself: whatever write of a rotation
//! fails, a pod or container that starts afterwards reads a ConfigMap whose
//! files are in the Secret and whose passwords open them, and the next pass
//! finishes the rotation.

use http::Method;
use serde_json::json;

use super::fake::Repeat;
use super::world::*;
use crate::pkcs12;

/// What a container starting now reads: every file the ConfigMap names is
/// in the Secret and its password (same position) opens it; every pinned
/// and CA path is one of those files.
fn consistent(w: &World) -> Result<(), String> {
    let cm = w.config_map("s-certpin").ok_or("no ConfigMap")?;
    let secret = w.secret("s-certpin").ok_or("no Secret")?;
    let (cm, data) = (cm.data.unwrap_or_default(), secret.data.unwrap_or_default());
    let passwords = data
        .get("ClientCertificatePasswords")
        .map(|p| String::from_utf8_lossy(&p.0).to_string())
        .unwrap_or_default();
    let paths: Vec<&str> = cm["ClientCertificates"].split(',').collect();
    let passwords: Vec<&str> = passwords.split(',').collect();
    if paths.len() != passwords.len() {
        return Err(format!(
            "{} files, {} passwords",
            paths.len(),
            passwords.len()
        ));
    }
    for (path, password) in paths.iter().zip(&passwords) {
        let file = path.rsplit('/').next().unwrap_or_default();
        let bytes = data
            .get(file)
            .ok_or(format!("{file} is not in the Secret"))?;
        pkcs12::decode_pkcs12(&bytes.0, password).map_err(|p| format!("{file}: {}", p.message))?;
    }
    let usages: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&cm["ClientCertificateUsages"]).map_err(|e| e.to_string())?;
    match usages
        .values()
        .find(|p| !p.is_empty() && !paths.contains(&p.as_str()))
    {
        Some(p) => Err(format!("{p} is pinned but not in ClientCertificates")),
        None => Ok(()),
    }
}

#[tokio::test]
async fn a_write_that_fails_during_a_rotation_leaves_one_rendering_and_the_next_pass_finishes() {
    for (failing, code) in [
        ("/secrets/s-certpin", 500),
        ("/configmaps/s-certpin", 500),
        ("/configmaps/s-certpin", 422),
        ("/deployments/app", 500),
    ] {
        let w = World::new();
        w.deployment("app", 1, &["mendix"]);
        w.create_set("s", json!({"app": {"deployment": "app"}}));
        w.pass_ok("s").await;
        w.pass_rolled_out("s", "app").await;
        let before = template_hash(&w.deployment_now("app"));
        w.put_cert("openssl-ec384-modern.p12", PASSWORD);
        w.fake
            .fail(Method::PATCH, failing, code, "injected", Repeat::Once);
        let _ = w.pass("s").await;
        consistent(&w).unwrap_or_else(|e| panic!("after {failing} failed ({code}): {e}"));
        w.pass_ok("s").await;
        consistent(&w).unwrap_or_else(|e| panic!("after the next pass ({failing}): {e}"));
        let s = w.set("s");
        assert_eq!(
            s.status
                .and_then(|st| st.certificates.first()?.key_algorithm.clone()),
            Some("EC P-384".into()),
            "{failing}: the rotation is applied"
        );
        assert_ne!(template_hash(&w.deployment_now("app")), before, "{failing}");
    }
}
