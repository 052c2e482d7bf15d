//! The plan for each messy edit, from live objects written as JSON.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::*;
use crate::resource::WorkloadRecord;

const NOW: &str = "2026-12-07T04:00:00Z";

fn set(target: &str, restart: &str, containers: &[&str], status: Value) -> ClientCertificateSet {
    let mut v = json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": "s", "namespace": "n", "uid": "uid-s", "generation": 2},
        "spec": {"app": {"deployment": target, "containers": containers}, "restart": restart,
                 "certificates": [{"name": "a", "tls": {"secretName": "a"}}]}
    });
    if !status.is_null() {
        v["status"] = status;
    }
    serde_json::from_value(v).unwrap()
}

fn rendered() -> Rendered {
    Rendered {
        name: "s-certpin".into(),
        config_map: BTreeMap::from([("ClientCertificates".into(), "/x/a-0.pfx".into())]),
        secret: BTreeMap::from([(
            "ClientCertificatePasswords".into(),
            ByteString(b"pw".to_vec()),
        )]),
        files: BTreeMap::from([("a-0.pfx".into(), ByteString(b"p12".to_vec()))]),
        retained: BTreeMap::new(),
        keys: vec!["a-0.pfx".into()],
        ca_keys: Vec::new(),
        ca_paths: BTreeMap::new(),
        paths: BTreeMap::from([("a".into(), "/x/a-0.pfx".into())]),
        input_hash: "in".into(),
        config_hash: "h2".into(),
        reused: false,
        rendered_at: "t".into(),
    }
}

/// A Deployment with containers `m` and `sidecar`; `extra` merged into metadata.
fn deployment(name: &str, replicas: i32, meta: Value) -> Workload {
    let mut v = json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "41"},
        "spec": {"replicas": replicas, "selector": {},
                 "template": {"spec": {"containers": [{"name": "m", "image": "i"}, {"name": "sidecar", "image": "i"}]}}}
    });
    for (k, val) in meta.as_object().unwrap() {
        v["metadata"][k] = val.clone();
    }
    Workload::from_value(WorkloadKind::Deployment, v).unwrap()
}

fn ours(stop: Option<(i32, &str)>) -> Value {
    let mut m = json!({"labels": {"certpin.dev/set-uid": "uid-s"}, "annotations": {"certpin.dev/set": "s"}});
    if let Some((replicas, phase)) = stop {
        m["annotations"]["certpin.dev/stop-start"] =
            json!(format!(r#"{{"replicas":{replicas},"phase":"{phase}"}}"#));
    }
    m
}

fn plan_of(set: &ClientCertificateSet, target: Option<&Workload>, others: &[Workload]) -> Plan {
    let r = rendered();
    plan(
        set,
        "n",
        Some(&r),
        &Live {
            target,
            claimant: None,
            others,
            foreign: &[],
            now: NOW,
            pods_run_rendering: false,
        },
    )
}

fn wire(p: &Plan) -> &Wire {
    match &p.target {
        Target::Wire(w) => w,
        other => panic!("not wired: {other:?}"),
    }
}

#[test]
fn retargeting_during_a_stop_start_restores_the_old_workload_and_unwires_it() {
    let s = set("new", "StopStart", &[], Value::Null);
    let old = deployment("old", 0, ours(Some((3, "Stopping"))));
    let new = deployment("new", 2, json!({}));
    let p = plan_of(&s, Some(&new), std::slice::from_ref(&old));
    assert_eq!(
        p.release,
        [Release {
            kind: WorkloadKind::Deployment,
            name: "old".into(),
            restore: Some(3)
        }]
    );
    let w = wire(&p);
    assert_eq!(w.restart, Restart::StopStart);
    assert_eq!(
        w.precondition.as_deref(),
        Some("41"),
        "the claim is conditional"
    );
}

#[test]
fn switching_to_rolling_during_a_stop_resumes_the_app_with_the_new_settings() {
    for strategy in ["Rolling", "Manual"] {
        let s = set("app", strategy, &[], Value::Null);
        let d = deployment("app", 0, ours(Some((3, "Stopping"))));
        let p = plan_of(&s, Some(&d), &[]);
        assert_eq!(
            wire(&p).restart,
            Restart::Resume { replicas: 3 },
            "{strategy}"
        );
        assert_eq!(wire(&p).precondition, None, "already claimed by the set");
    }
}

#[test]
fn invalid_input_during_a_stop_still_ends_the_stop() {
    let s = set("app", "StopStart", &[], Value::Null);
    let d = deployment("app", 0, ours(Some((2, "Stopping"))));
    let p = plan(
        &s,
        "n",
        None,
        &Live {
            target: Some(&d),
            claimant: None,
            others: &[],
            foreign: &[],
            now: NOW,
            pods_run_rendering: false,
        },
    );
    match p.target {
        Target::Refuse { refusal, restore } => {
            assert_eq!(refusal.why, Reason::InvalidInput);
            assert_eq!(restore, Some(2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_container_removed_from_the_list_is_a_change_even_when_the_rest_is_in_place() {
    let s = set("app", "Rolling", &["m"], Value::Null);
    let r = rendered();
    let both = build::workload_fragment(
        &s,
        "n",
        WorkloadKind::Deployment,
        "app",
        &r,
        &["m".into(), "sidecar".into()],
        "h2",
    );
    // The live object: what wiring both containers produced.
    let mut live = deployment("app", 1, ours(None)).to_value();
    json_patch::merge(&mut live, &both);
    let mut containers = both["spec"]["template"]["spec"]["containers"].clone();
    for c in containers.as_array_mut().unwrap() {
        c["image"] = json!("i");
    }
    live["spec"]["template"]["spec"]["containers"] = containers;
    let live = Workload::from_value(WorkloadKind::Deployment, live).unwrap();
    assert!(
        !wire(&plan_of(
            &set("app", "Rolling", &[], Value::Null),
            Some(&live),
            &[]
        ))
        .change,
        "wired as wanted: nothing to write"
    );
    let w = plan_of(&s, Some(&live), &[]);
    assert!(wire(&w).change, "sidecar still carries the wiring");
    assert_eq!(wire(&w).containers, ["m"]);
}

#[test]
fn the_apps_own_mount_at_the_mount_path_is_refused_and_nothing_is_written() {
    let mut s = set("app", "Rolling", &[], Value::Null);
    s.spec.mount_path = "/data".into();
    let mut d = deployment("app", 1, json!({}));
    d.pod_spec_mut().unwrap().containers[1].volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "data", "mountPath": "/data"})).unwrap(),
    ]);
    match plan_of(&s, Some(&d), &[]).target {
        Target::Refuse { refusal, restore } => {
            assert_eq!(refusal.why, Reason::MountPathInUse);
            assert!(
                refusal.message.contains("\"sidecar\""),
                "{}",
                refusal.message
            );
            assert_eq!(restore, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_claim_in_force_is_a_conflict_a_copied_one_is_taken_conditionally() {
    let s = set("app", "Rolling", &[], Value::Null);
    let claimed = deployment(
        "app",
        1,
        json!({"labels": {"certpin.dev/set-uid": "uid-o"}, "annotations": {"certpin.dev/set": "o"}}),
    );
    let other: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": "o", "namespace": "n", "uid": "uid-o"},
        "spec": {"app": {"deployment": "app"}, "certificates": []}
    }))
    .unwrap();
    let r = rendered();
    let live = |claimant| Live {
        target: Some(&claimed),
        claimant,
        others: &[],
        foreign: &[],
        now: NOW,
        pods_run_rendering: false,
    };
    let p = plan(&s, "n", Some(&r), &live(Some(&other)));
    assert!(
        matches!(&p.target, Target::Refuse { refusal, .. } if refusal.why == Reason::Conflict),
        "{p:?}"
    );
    let mut elsewhere = other.clone();
    elsewhere.spec.app.deployment = Some("original".into());
    let p = plan(&s, "n", Some(&r), &live(Some(&elsewhere)));
    assert_eq!(wire(&p).precondition.as_deref(), Some("41"));
}

#[test]
fn records_follow_the_outcome() {
    let s = set("new", "Rolling", &[], Value::Null);
    let old_record = WorkloadRecord {
        kind: "Deployment".into(),
        name: "old".into(),
        ..Default::default()
    };
    let new = deployment("new", 1, json!({}));
    let old = deployment("old", 1, ours(None));
    let p = plan_of(&s, Some(&new), std::slice::from_ref(&old));
    let wired = records(
        std::slice::from_ref(&old_record),
        &s,
        &p,
        &Outcome::Wired { restarted: true },
        Some(&new),
    );
    assert_eq!(wired.len(), 1);
    assert_eq!(
        (wired[0].name.as_str(), wired[0].uid.as_deref()),
        ("new", Some("uid-new"))
    );
    let refused = records(
        std::slice::from_ref(&old_record),
        &s,
        &p,
        &Outcome::Refused(Refusal {
            why: Reason::Forbidden,
            message: String::new(),
        }),
        Some(&new),
    );
    assert_eq!(refused, [old_record], "not unwired: still recorded");
    let stopping = records(&[], &s, &p, &Outcome::Stopping { pods: 1 }, Some(&new));
    let names: Vec<&str> = stopping.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["new", "old"]);
}

#[test]
fn an_object_of_anothers_under_a_rendered_name_is_refused_and_a_stop_still_ends() {
    let s = set("app", "StopStart", &[], Value::Null);
    let d = deployment("app", 0, ours(Some((2, "Stopping"))));
    let r = rendered();
    let foreign = ["Secret \"s-certpin\"".to_string()];
    let p = plan(
        &s,
        "n",
        Some(&r),
        &Live {
            target: Some(&d),
            claimant: None,
            others: &[],
            foreign: &foreign,
            now: NOW,
            pods_run_rendering: false,
        },
    );
    match p.target {
        Target::Refuse { refusal, restore } => {
            assert_eq!(refusal.why, Reason::RenderedNameInUse);
            assert!(
                refusal.message.contains("Secret \"s-certpin\""),
                "{}",
                refusal.message
            );
            assert_eq!(restore, Some(2));
        }
        other => panic!("{other:?}"),
    }
}

/// A Deployment of `replicas` that the Rolling set `s` has wired with
/// `rendered()`, its template hash replaced by `hash` when given.
fn wired(replicas: i32, hash: Option<&str>) -> Workload {
    let unwired = deployment("app", replicas, json!({}));
    let s = set("app", "Rolling", &[], Value::Null);
    let fragment = wire(&plan_of(&s, Some(&unwired), &[])).fragment.clone();
    let mut v = unwired.to_value();
    crate::operator::reconcile::scenarios::fake::merge(&mut v, &fragment);
    if let Some(h) = hash {
        v["spec"]["template"]["metadata"]["annotations"]["certpin.dev/config-hash"] = json!(h);
    }
    Workload::from_value(WorkloadKind::Deployment, v).unwrap()
}

const RESTARTED: &str = "certpin.dev/restarted-at";

fn restart_record(w: &Wire) -> Option<&str> {
    w.fragment["metadata"]["annotations"][RESTARTED].as_str()
}

#[test]
fn a_rolling_change_records_its_restart_on_the_workload_and_keeps_it_after() {
    let s = set("app", "Rolling", &[], Value::Null);
    // The template is at an older rendering (h1): the pods roll, at NOW.
    let p = plan_of(&s, Some(&wired(2, Some("h1"))), &[]);
    assert!(wire(&p).rolls);
    assert_eq!(restart_record(wire(&p)), Some(NOW));
    // Wired and recorded: the record is kept as it is, nothing to write.
    let mut v = wired(2, None).to_value();
    v["metadata"]["annotations"][RESTARTED] = json!("2026-01-01T00:00:00Z");
    let d = Workload::from_value(WorkloadKind::Deployment, v).unwrap();
    let p = plan_of(&s, Some(&d), &[]);
    assert!(!wire(&p).change);
    assert_eq!(restart_record(wire(&p)), Some("2026-01-01T00:00:00Z"));
    // No pods: nothing restarted, nothing recorded.
    let p = plan_of(&s, Some(&wired(0, Some("h1"))), &[]);
    assert_eq!(restart_record(wire(&p)), None);
}

#[test]
fn a_manual_template_left_at_an_older_rendering_is_no_restart() {
    // Manual keeps the live template hash (h1) when the rendering is h2,
    // and the restart record as it was.
    let mut v = wired(2, Some("h1")).to_value();
    v["metadata"]["annotations"][RESTARTED] = json!("2026-01-01T00:00:00Z");
    let d = Workload::from_value(WorkloadKind::Deployment, v).unwrap();
    let s = set("app", "Manual", &[], json!({"appliedHash": "h1"}));
    let p = plan_of(&s, Some(&d), &[]);
    assert!(!wire(&p).change);
    assert!(!wire(&p).rolls);
    assert_eq!(restart_record(wire(&p)), Some("2026-01-01T00:00:00Z"));
}
