//! A new set, an idle pass, retargeting, and a container dropped from the list.

use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;

use super::world::*;
use crate::names::{FINALIZER, KEY_CERTIFICATES, KEY_PASSWORDS};

#[tokio::test]
async fn a_new_set_is_finalized_rendered_wired_and_ready_and_an_idle_pass_writes_nothing() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));

    let mark = w.fake.mark();
    let action = w.pass_ok("s").await;
    let mut writes = w.writes_since(mark);
    writes.sort();
    assert_eq!(
        writes,
        [
            "PATCH clientcertificatesets/s json-patch -",
            "PATCH clientcertificatesets/s/status apply certpin",
            "PATCH configmaps/s-certpin apply certpin",
            "PATCH deployments/app apply certpin",
            "PATCH secrets/s-certpin apply certpin",
            "POST events json -",
            "POST events json -",
        ],
        "a new set costs seven writes (an Event about the set, one about the Deployment it restarted)"
    );
    // Not Ready until the rollout that carries the settings is complete.
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let s = w.set("s");
    assert_eq!(ready(&s).1, "RolloutInProgress");
    assert_eq!(condition(&s, "Reconciling").reason, "RolloutInProgress");
    assert!(!has_condition(&s, "Stalled"));
    let mark = w.fake.mark();
    assert_eq!(
        w.pass_rolled_out("s", "app").await,
        Action::requeue(Duration::from_secs(3600))
    );
    assert_eq!(
        w.writes_since(mark),
        ["PATCH clientcertificatesets/s/status apply certpin"],
        "the rollout's end costs the status write alone"
    );

    let s = w.set("s");
    assert_eq!(
        s.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_string()][..])
    );
    assert!(is_ready(&s), "{:?}", ready(&s));
    assert!(!has_condition(&s, "Reconciling"));
    let st = s.status.clone().unwrap();
    assert_eq!(condition(&s, "Applied").reason, "Applied");
    assert_eq!(condition(&s, "CertificatesValid").status, "True");
    assert_eq!(st.certificates[0].state, "Valid");
    assert_eq!(st.certificate_count, Some(1));
    let hash = st.applied_hash.clone().expect("an applied hash");
    assert!(st.last_restart.is_some(), "a Rolling first wiring rolls");

    let cm = w.config_map("s-certpin").expect("the rendered ConfigMap");
    let path = &cm.data.as_ref().unwrap()[KEY_CERTIFICATES];
    assert!(
        path.starts_with("/etc/certpin/client-certificates/client-"),
        "{path}"
    );
    assert_eq!(st.certificates[0].path.as_ref(), Some(path));
    let secret = w.secret("s-certpin").expect("the rendered Secret");
    let data = secret.data.as_ref().unwrap();
    assert!(data.contains_key(KEY_PASSWORDS));
    let file = path.rsplit('/').next().unwrap();
    assert!(
        data.contains_key(file),
        "the file the setting names is in the Secret"
    );
    for owned in [&cm.metadata, &secret.metadata] {
        let owner = &owned.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid)),
            ("ClientCertificateSet", s.metadata.uid.as_ref())
        );
    }

    let d = w.deployment_now("app");
    assert!(wired(&containers(&d)[0]));
    assert_eq!(claim_uid(&d), s.metadata.uid);
    assert_eq!(set_annotation(&d).as_deref(), Some("s"));
    assert_eq!(template_hash(&d).as_deref(), Some(hash.as_str()));
    let volumes = d
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap();
    let secret_volume = volumes[0].secret.as_ref().unwrap();
    assert_eq!(secret_volume.secret_name.as_deref(), Some("s-certpin"));
    assert_eq!(
        containers(&d)[0].image.as_deref(),
        Some("example.invalid/mendix:1")
    );
    assert_eq!(records(&s), ["app"]);
    let record = &st.workloads[0];
    assert_eq!(record.uid, d.metadata.uid);
    assert_eq!(record.containers, ["mendix"]);
    assert_eq!(record.rendered.as_deref(), Some("s-certpin"));
    let applied: Vec<_> = w
        .events()
        .into_iter()
        .filter(|(t, r, _)| t == "Normal" && r == "Applied")
        .collect();
    assert_eq!(applied.len(), 1);
    assert!(applied[0].2.contains(&hash), "{}", applied[0].2);

    // Nothing changed: the pass reads and writes nothing at all.
    let versions = (
        w.version_of_deployment("app"),
        w.version_of_secret("s-certpin"),
        w.fake
            .with(|st| st.version::<crate::resource::ClientCertificateSet>(NS, "s")),
    );
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
    assert_eq!(
        versions,
        (
            w.version_of_deployment("app"),
            w.version_of_secret("s-certpin"),
            w.fake
                .with(|st| st.version::<crate::resource::ClientCertificateSet>(NS, "s")),
        )
    );
    assert_eq!(w.set("s").status, s.status);
}

#[tokio::test]
async fn retargeting_wires_the_new_deployment_unwires_the_old_and_records_only_the_new() {
    let w = World::new();
    w.deployment("one", 1, &["mendix"]);
    w.deployment("two", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "one"}}));
    w.pass_ok("s").await;
    assert!(wired(&containers(&w.deployment_now("one"))[0]));
    let rendered = w.version_of_secret("s-certpin");

    w.edit_set("s", json!({"spec": {"app": {"deployment": "two"}}}));
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    w.rolls_then_ready("s", "two").await;
    let s = w.set("s");
    assert_eq!(records(&s), ["two"]);
    let one = w.deployment_now("one");
    assert!(unwired(&one), "one still carries certpin's wiring");
    assert_eq!(
        containers(&one)[0].image.as_deref(),
        Some("example.invalid/mendix:1")
    );
    let two = w.deployment_now("two");
    assert!(wired(&containers(&two)[0]));
    assert_eq!(claim_uid(&two), s.metadata.uid);
    assert_eq!(
        w.version_of_secret("s-certpin"),
        rendered,
        "the same certificates: the rendering is reused, not rewritten"
    );
    // The new target is wired before the old one is unwired.
    let order: Vec<String> = w
        .writes_since(mark)
        .into_iter()
        .filter(|l| l.contains("deployments/"))
        .collect();
    assert_eq!(
        order,
        [
            "PATCH deployments/two apply certpin",
            "PATCH deployments/one apply certpin"
        ]
    );
}

#[tokio::test]
async fn a_container_removed_from_the_list_loses_its_wiring_the_others_keep_it() {
    let w = World::new();
    w.deployment("app", 1, &["mendix", "sidecar"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert!(containers(&w.deployment_now("app")).iter().all(wired));
    let hash = template_hash(&w.deployment_now("app"));

    w.edit_set("s", json!({"spec": {"app": {"containers": ["mendix"]}}}));
    w.pass_ok("s").await;
    w.rolls_then_ready("s", "app").await;
    let s = w.set("s");
    let cs = containers(&w.deployment_now("app"));
    assert!(wired(&cs[0]), "mendix keeps its wiring");
    assert!(
        cs[1].env.as_ref().is_none_or(Vec::is_empty)
            && cs[1].volume_mounts.as_ref().is_none_or(Vec::is_empty),
        "the sidecar still carries certpin's env or mount"
    );
    assert_eq!(cs[1].image.as_deref(), Some("example.invalid/sidecar:1"));
    assert_eq!(s.status.unwrap().workloads[0].containers, ["mendix"]);
    assert_eq!(
        template_hash(&w.deployment_now("app")),
        hash,
        "the content did not change"
    );
}

/// A recorded workload that was deleted is dropped from the records, so
/// later passes neither list it nor sweep the namespace for it.
#[tokio::test]
async fn a_deleted_workload_leaves_the_records_and_idle_passes_stop_looking_for_it() {
    use k8s_openapi::api::apps::v1::Deployment;
    let w = World::new();
    w.deployment("one", 1, &["mendix"]);
    w.deployment("two", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "one"}}));
    w.pass_ok("s").await;
    // `one` goes, then the set is retargeted: the pass that wires `two`
    // finds nothing to unwire.
    w.fake.with(|st| st.remove::<Deployment>(NS, "one"));
    w.edit_set("s", json!({"spec": {"app": {"deployment": "two"}}}));
    w.pass_ok("s").await;
    w.rolls_then_ready("s", "two").await;
    let s = w.set("s");
    assert_eq!(records(&s), ["two"]);
    // An idle pass reads no list of Deployments.
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let lists: Vec<String> = w.fake.since(mark, |log| {
        log.iter()
            .filter(|l| l.path.ends_with("/deployments") || l.path.ends_with("/deployments/one"))
            .map(describe)
            .collect()
    });
    assert!(lists.is_empty(), "{lists:?}");
}
