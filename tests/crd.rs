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
