//! Messy edits on the local control plane: retargeting (also half-way
//! through a StopStart), switching strategy mid-stop, removing a container,
//! two sets racing for one Deployment, a copied claim, collisions with the
//! app's own template, and a write the API server refuses.

mod support;

use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, rollout_complete, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

fn set(name: &str, spec: Value) -> ClientCertificateSet {
    let mut spec = spec;
    spec["certificates"] = json!([{"name": "client",
        "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
        "password": {"secretName": "cert", "key": "password"}, "pinTo": ["api.example.com"]}]);
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

async fn namespace(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    ns
}

async fn app(ns: &TestNamespace, d: &Deployment) -> Deployment {
    create_deployment(ns, d).await;
    let api: Api<Deployment> = ns.api();
    let name = d.metadata.name.clone().unwrap();
    wait_until(&api, &name, T, "rollout", rollout_complete()).await
}

fn containers(d: &Deployment) -> Vec<Container> {
    d.spec.clone().unwrap().template.spec.unwrap().containers
}

/// No trace of certpin in the pod template or the metadata.
fn unwired(d: &Deployment) -> bool {
    let spec = d.spec.clone().unwrap().template.spec.unwrap();
    let meta = &d.metadata;
    spec.volumes.unwrap_or_default().is_empty()
        && spec.containers.iter().all(|c| {
            c.env.as_ref().is_none_or(Vec::is_empty)
                && c.volume_mounts.as_ref().is_none_or(Vec::is_empty)
        })
        && !meta
            .labels
            .clone()
            .unwrap_or_default()
            .keys()
            .any(|k| k.starts_with("certpin.dev/"))
        && !meta
            .annotations
            .clone()
            .unwrap_or_default()
            .keys()
            .any(|k| k.starts_with("certpin.dev/"))
}

fn wired(container: &Container) -> bool {
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    env.contains(&"MXRUNTIME_ClientCertificates")
        && env.contains(&"MXRUNTIME_ClientCertificatePasswords")
        && container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "certpin-client-certificates")
}

async fn patch_set(sets: &Api<ClientCertificateSet>, name: &str, patch: Value) {
    sets.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Deletes the set and waits until it is gone (its finalizer released).
async fn delete_set(sets: &Api<ClientCertificateSet>, name: &str) {
    sets.delete(name, &DeleteParams::default()).await.unwrap();
    let api = sets.clone();
    let name = name.to_string();
    wait_for(T, "the set is gone", || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test]
async fn retargeting_unwires_the_old_deployment_and_deletion_unwires_the_new() {
    let ns = namespace("edit-retarget").await;
    app(&ns, &deployment("one", 1, &["mendix"])).await;
    app(&ns, &deployment("two", 1, &["mendix"])).await;
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    sets.create(
        &PostParams::default(),
        &set("s", json!({"app": {"deployment": "one"}})),
    )
    .await
    .unwrap();
    wait_until(&sets, "s", T, "Ready on one", ready).await;
    assert!(wired(
        &containers(&deployments.get("one").await.unwrap())[0]
    ));

    patch_set(&sets, "s", json!({"spec": {"app": {"deployment": "two"}}})).await;
    let s = wait_until(&sets, "s", T, "Ready on two", ready).await;
    let records: Vec<String> = s
        .status
        .unwrap()
        .workloads
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(records, ["two"]);
    wait_until(
        &deployments,
        "one",
        T,
        "one unwired",
        |d: Option<&Deployment>| d.is_some_and(unwired),
    )
    .await;
    assert!(wired(
        &containers(&deployments.get("two").await.unwrap())[0]
    ));

    delete_set(&sets, "s").await;
    for name in ["one", "two"] {
        assert!(
            unwired(&deployments.get(name).await.unwrap()),
            "{name} still wired"
        );
    }
}

/// A wired StopStart set whose rotation stopped half-way (the operator
/// killed once the app is at zero), then the set edited by `edit`; a new
/// operator must bring the stopped app back to 3 replicas whatever the edit.
async fn edit_during_stop_start(
    prefix: &str,
    edit: Value,
) -> (
    TestNamespace,
    Operator,
    Api<Deployment>,
    Api<ClientCertificateSet>,
) {
    let ns = namespace(prefix).await;
    app(&ns, &deployment("app", 3, &["mendix"])).await;
    app(&ns, &deployment("other", 1, &["mendix"])).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    sets.create(
        &PostParams::default(),
        &set(
            "s",
            json!({"app": {"deployment": "app"}, "restart": "StopStart"}),
        ),
    )
    .await
    .unwrap();
    {
        let _first = Operator::start_with(&ns.name, "-first", &[]);
        wait_until(&sets, "s", T, "Ready", ready).await;
        wait_until(&deployments, "app", T, "rollout", rollout_complete()).await;
    }
    // A rotation, and an operator that dies once the app is at zero.
    put_secret(
        &ns,
        "cert",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec384-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    let mut crashing = Operator::start_with_env(
        &ns.name,
        "-crash",
        &[],
        &[("CERTPIN_CRASH_AFTER", "scale-zero")],
    );
    assert!(crashing.wait_exit(T), "never reached scale-zero");
    let d = deployments.get("app").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(0), "stopped");
    patch_set(&sets, "s", edit).await;
    let op = Operator::start(&ns.name);
    wait_until(&sets, "s", T, "Ready after the edit", ready).await;
    wait_until(
        &deployments,
        "app",
        T,
        "app back at 3 without a record",
        started_without_record(3),
    )
    .await;
    wait_until(&deployments, "app", T, "app rolled out", rollout_complete()).await;
    (ns, op, deployments, sets)
}

#[tokio::test]
async fn retargeting_half_way_through_a_stop_start_brings_the_old_app_back_unwired() {
    let (_ns, _op, deployments, sets) = edit_during_stop_start(
        "edit-ss-retarget",
        json!({"spec": {"app": {"deployment": "other"}}}),
    )
    .await;
    assert!(
        unwired(&deployments.get("app").await.unwrap()),
        "old app still wired"
    );
    assert!(wired(
        &containers(&deployments.get("other").await.unwrap())[0]
    ));
    delete_set(&sets, "s").await;
    assert!(unwired(&deployments.get("other").await.unwrap()));
}

#[tokio::test]
async fn switching_to_rolling_half_way_through_a_stop_start_starts_the_app_wired() {
    let (_ns, _op, deployments, _sets) =
        edit_during_stop_start("edit-ss-rolling", json!({"spec": {"restart": "Rolling"}})).await;
    assert!(wired(
        &containers(&deployments.get("app").await.unwrap())[0]
    ));
    assert!(unwired(&deployments.get("other").await.unwrap()));
}

#[tokio::test]
async fn each_applied_event_carries_the_hash_it_applied() {
    let ns = namespace("edit-events").await;
    app(&ns, &deployment("app", 1, &["mendix"])).await;
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(
        &PostParams::default(),
        &set("s", json!({"app": {"deployment": "app"}})),
    )
    .await
    .unwrap();
    let first = wait_until(&sets, "s", T, "Ready", ready).await;
    let h1 = first.status.unwrap().applied_hash.unwrap();
    put_secret(
        &ns,
        "cert",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec384-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    let second = wait_until(&sets, "s", T, "rotated", ready_with_key("EC P-384")).await;
    let h2 = second.status.unwrap().applied_hash.unwrap();
    assert_ne!(h1, h2);
    // Within the series window: the second Applied is not folded into the first.
    for h in [h1, h2] {
        wait_for(T, &format!("an Applied Event with hash {h}"), || async {
            kubectl_events(&ns, "s")
                .lines()
                .any(|l| l.starts_with("Applied") && l.contains(&h))
        })
        .await;
    }
}

#[tokio::test]
async fn a_container_removed_from_the_list_loses_its_wiring() {
    let ns = namespace("edit-containers").await;
    app(&ns, &deployment("app", 1, &["mendix", "sidecar"])).await;
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    sets.create(
        &PostParams::default(),
        &set("s", json!({"app": {"deployment": "app"}})),
    )
    .await
    .unwrap();
    wait_until(&sets, "s", T, "Ready", ready).await;
    assert!(
        containers(&deployments.get("app").await.unwrap())
            .iter()
            .all(wired)
    );

    patch_set(
        &sets,
        "s",
        json!({"spec": {"app": {"containers": ["mendix"]}}}),
    )
    .await;
    wait_until(&sets, "s", T, "Ready", ready).await;
    let d = wait_until(
        &deployments,
        "app",
        T,
        "sidecar unwired",
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                let cs = containers(d);
                cs[1].env.as_ref().is_none_or(Vec::is_empty)
                    && cs[1].volume_mounts.as_ref().is_none_or(Vec::is_empty)
            })
        },
    )
    .await;
    assert!(wired(&containers(&d)[0]), "mendix keeps its wiring");
}

#[tokio::test]
async fn two_sets_created_together_one_wins_and_a_copied_claim_is_no_conflict() {
    let ns = namespace("edit-race").await;
    app(&ns, &deployment("app", 1, &["mendix"])).await;
    let _op = Operator::start_with(&ns.name, "", &["--concurrency", "4"]);
    let sets: Api<ClientCertificateSet> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let pp = PostParams::default();
    let (set_a, set_b) = (
        set("a", json!({"app": {"deployment": "app"}})),
        set("b", json!({"app": {"deployment": "app"}})),
    );
    let (a, b) = futures::join!(sets.create(&pp, &set_a), sets.create(&pp, &set_b));
    a.unwrap();
    b.unwrap();
    let settled = |s: Option<&ClientCertificateSet>| ready(s) || not_ready_with("Conflict")(s);
    let a = wait_until(&sets, "a", T, "a settled", settled).await;
    let b = wait_until(&sets, "b", T, "b settled", settled).await;
    assert_ne!(ready(Some(&a)), ready(Some(&b)), "exactly one set is Ready");
    let winner = if ready(Some(&a)) { a } else { b };
    let d = deployments.get("app").await.unwrap();
    assert_eq!(
        d.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("certpin.dev/set-uid"),
        winner.metadata.uid.as_ref(),
        "the Ready set holds the claim"
    );

    // A copy of the app's manifest that kept the wired Deployment's
    // metadata carries the winner's claim; a third set that targets the
    // copy is not in conflict with it.
    let mut copy = deployment("app", 1, &["mendix"]);
    copy.metadata = kube::api::ObjectMeta {
        name: Some("copy".into()),
        labels: d.metadata.labels.clone(),
        annotations: d.metadata.annotations.clone(),
        ..Default::default()
    };
    copy.status = None;
    create_deployment(&ns, &copy).await;
    sets.create(
        &PostParams::default(),
        &set("c", json!({"app": {"deployment": "copy"}})),
    )
    .await
    .unwrap();
    let c = wait_until(&sets, "c", T, "c Ready", ready).await;
    let copy = deployments.get("copy").await.unwrap();
    assert_eq!(
        copy.metadata
            .labels
            .unwrap_or_default()
            .get("certpin.dev/set-uid"),
        c.metadata.uid.as_ref()
    );
}

/// A Deployment whose container mounts its own volume at `/data` and sets
/// `env` itself.
fn own_template(name: &str, env: Value) -> Deployment {
    let mut d = serde_json::to_value(deployment(name, 1, &["mendix"])).unwrap();
    d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    d["spec"]["template"]["spec"]["containers"][0]["env"] = env;
    serde_json::from_value(d).unwrap()
}

#[tokio::test]
async fn collisions_with_the_apps_own_template_are_refused_untouched_and_deletable() {
    let ns = namespace("edit-collide").await;
    app(&ns, &own_template("mounted", json!([]))).await;
    app(
        &ns,
        &own_template(
            "literal",
            json!([{"name": "MXRUNTIME_ClientCertificates", "value": "/old/a.pfx"}]),
        ),
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    let before_mounted = deployments.get("mounted").await.unwrap();
    let before_literal = deployments.get("literal").await.unwrap();
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(
        &PostParams::default(),
        &set(
            "m",
            json!({"app": {"deployment": "mounted"}, "mountPath": "/data"}),
        ),
    )
    .await
    .unwrap();
    sets.create(
        &PostParams::default(),
        &set("l", json!({"app": {"deployment": "literal"}})),
    )
    .await
    .unwrap();
    let m = wait_until(
        &sets,
        "m",
        T,
        "MountPathInUse",
        not_ready_with("MountPathInUse"),
    )
    .await;
    let msg = &m.status.unwrap().conditions[0].message;
    assert!(msg.contains("\"data\"") && msg.contains("/data"), "{msg}");
    wait_until(
        &sets,
        "l",
        T,
        "SettingSetByApp",
        not_ready_with("SettingSetByApp"),
    )
    .await;
    wait_event(&ns, "l", "SettingSetByApp").await;
    for (name, before) in [("mounted", &before_mounted), ("literal", &before_literal)] {
        let now = deployments.get(name).await.unwrap();
        assert_eq!(
            now.metadata.generation, before.metadata.generation,
            "{name} was changed"
        );
        assert_eq!(now.spec, before.spec, "{name} was changed");
    }
    delete_set(&sets, "m").await;
    delete_set(&sets, "l").await;
    assert_eq!(
        deployments.get("mounted").await.unwrap().spec,
        before_mounted.spec
    );
}

/// Waits for a Warning Event about the set with this reason.
async fn wait_event(ns: &TestNamespace, set: &str, reason: &str) {
    wait_for(T, &format!("a {reason} Event"), || async {
        kubectl_events(ns, set)
            .lines()
            .any(|l| l.starts_with(reason))
    })
    .await;
}

fn kubectl_events(ns: &TestNamespace, set: &str) -> String {
    let out = std::process::Command::new("kubectl")
        .args(["get", "events", "-n", &ns.name, "--field-selector"])
        .arg(format!("involvedObject.name={set}"))
        .args(["-o", "custom-columns=REASON:.reason,NOTE:.message"])
        .output()
        .expect("kubectl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Role with what the operator needs in one namespace, but `patch` on
/// Deployments only when `may_patch`.
fn operator_role(ns: &str, may_patch: bool) -> String {
    let deployment_verbs = if may_patch {
        "[get, list, watch, patch]"
    } else {
        "[get, list, watch]"
    };
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: operator, namespace: {ns}}}
rules:
- {{apiGroups: [certpin.dev], resources: [clientcertificatesets, clientcertificatesets/status], verbs: ["*"]}}
- {{apiGroups: [""], resources: [secrets, configmaps], verbs: [get, list, watch, create, patch, update]}}
- {{apiGroups: [""], resources: [pods], verbs: [list]}}
- {{apiGroups: [apps], resources: [deployments], verbs: {deployment_verbs}}}
- {{apiGroups: [apps], resources: [deployments/scale], verbs: [patch]}}
- {{apiGroups: [events.k8s.io], resources: [events], verbs: [create, patch]}}
- {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: operator, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: operator}}
subjects: [{{kind: ServiceAccount, name: operator, namespace: {ns}}}]
"#
    )
}

#[tokio::test]
async fn a_write_the_api_server_refuses_is_on_status_with_its_message() {
    let ns = namespace("edit-refused").await;
    app(&ns, &deployment("app", 1, &["mendix"])).await;
    // The operator acts as a ServiceAccount that may not patch Deployments.
    kubectl_apply(&operator_role(&ns.name, false));
    let sa = format!("system:serviceaccount:{}:operator", ns.name);
    let _op = Operator::start_with(&ns.name, "", &[&format!("--impersonate={sa}")]);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(
        &PostParams::default(),
        &set("s", json!({"app": {"deployment": "app"}})),
    )
    .await
    .unwrap();
    let s = wait_until(
        &sets,
        "s",
        T,
        "Forbidden on status",
        not_ready_with("Forbidden"),
    )
    .await;
    let message = &s.status.unwrap().conditions[0].message;
    assert!(
        message.contains("403") && message.contains("deployments"),
        "not the API's message: {message}"
    );
    wait_event(&ns, "s", "Forbidden").await;
    assert!(unwired(&ns.api::<Deployment>().get("app").await.unwrap()));
    // Granted, the set is retried by itself (no watched object changes).
    kubectl_apply(&operator_role(&ns.name, true));
    wait_until(
        &sets,
        "s",
        Duration::from_secs(180),
        "Ready once granted",
        ready,
    )
    .await;
}
