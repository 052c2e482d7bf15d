//! crds/ holds exactly what `certpin crd` prints; regenerate with
//! `cargo run -- crd > crds/clientcertificateset.yaml`.

#[test]
fn checked_in_crd_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/clientcertificateset.yaml"
    );
    let checked_in = std::fs::read_to_string(path).expect("crds/clientcertificateset.yaml");
    assert!(
        checked_in == certpin::cli::crd_yaml(),
        "crds/ is stale: run `cargo run -- crd > crds/clientcertificateset.yaml`"
    );
}

#[test]
fn crd_carries_the_schema_rules_the_api_server_enforces() {
    let yaml = certpin::cli::crd_yaml();
    for needle in [
        "certificate names must be unique",
        "give exactly one of pkcs12 or tls",
        "a pkcs12 certificate needs a password",
        "- Rolling",
        "- StopStart",
        "- Manual",
        "subresources:",
        "shortNames:",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}

/// `kubectl explain` has something to say about every field, and the root
/// says what a set is (not kube-derive's placeholder).
#[test]
fn every_field_has_a_description() {
    let yaml = certpin::cli::crd_yaml();
    let crd: yaml_serde::Value = yaml_serde::from_str(yaml.split_once("---\n").unwrap().1).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let root = schema["description"].as_str().unwrap_or_default();
    assert!(
        root.starts_with("A ClientCertificateSet gives one app"),
        "root description: {root:?}"
    );
    fn walk(node: &yaml_serde::Value, path: &str, missing: &mut Vec<String>, total: &mut usize) {
        if let Some(props) = node["properties"].as_mapping() {
            for (k, p) in props {
                let path = format!("{path}.{}", k.as_str().unwrap_or_default());
                *total += 1;
                if p["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(path.clone());
                }
                walk(p, &path, missing, total);
            }
        }
        if !node["items"].is_null() {
            walk(&node["items"], &format!("{path}[]"), missing, total);
        }
    }
    let (mut missing, mut total) = (Vec::new(), 0);
    walk(schema, "", &mut missing, &mut total);
    assert!(total > 40, "only {total} properties seen");
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "fields without a description"
    );
}
