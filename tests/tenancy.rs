//! The tenant boundary on the local control plane: a set may make certpin do
//! only what its author may do (the chart's ValidatingAdmissionPolicy asks
//! the authorizer about the requesting user), certpin never takes over an
//! object it did not make, and limits are enforced at admission.

mod support;

use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

fn set(name: &str, restart: &str, secret: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": "app"}, "restart": restart, "certificates": [{"name": "client",
            "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
            "password": {"secretName": secret, "key": "password"}, "pinTo": ["api.example.com"]}]}
    }))
    .unwrap()
}

/// A Role named `user` in the namespace with `rules` (and every verb on
/// sets), bound to ServiceAccount `user`.
fn role(ns: &str, user: &str, rules: &str) -> String {
    role_for(ns, user, user, rules)
}

fn role_for(ns: &str, name: &str, user: &str, rules: &str) -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {ns}}}
rules:
- {{apiGroups: [certpin.dev], resources: [clientcertificatesets], verbs: [get, list, watch, create, update, patch, delete]}}
{rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects: [{{kind: ServiceAccount, name: {user}, namespace: {ns}}}]
"#
    )
}

fn sa(ns: &TestNamespace, name: &str) -> String {
    format!("system:serviceaccount:{}:{name}", ns.name)
}

/// The API's refusal of a create, as text (panics when it was accepted).
async fn refused(sets: &Api<ClientCertificateSet>, s: &ClientCertificateSet) -> String {
    match sets.create(&PostParams::default(), s).await {
        Ok(_) => panic!("{:?} was accepted", s.metadata.name),
        Err(kube::Error::Api(e)) => {
            assert!(e.code == 403 || e.code == 422, "{e:?}");
            e.message
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_set_may_make_certpin_do_only_what_its_author_may_do() {
    let ns = TestNamespace::new("tenant").await;
    install_crd(&ns.client).await;
    install_tenant_boundary().await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    let deployments: Api<Deployment> = ns.api();
    let _op = Operator::start(&ns.name);
    let n = &ns.name;
    kubectl_apply(&role(n, "sets-only", ""));
    kubectl_apply(&role(
        n,
        "patcher",
        "- {apiGroups: [apps], resources: [deployments], verbs: [get, patch]}",
    ));
    kubectl_apply(&role(
        n,
        "reader",
        "- {apiGroups: [apps], resources: [deployments], verbs: [get, patch]}\n\
         - {apiGroups: [\"\"], resources: [secrets], resourceNames: [cert, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19], verbs: [get]}\n\
         - {apiGroups: [\"\"], resources: [secrets, configmaps], verbs: [create]}",
    ));
    kubectl_apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: editor, namespace: {n}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}\n\
         subjects: [{{kind: ServiceAccount, name: editor, namespace: {n}}}]\n"
    ));
    kubectl_apply(&role_for(n, "editor-sets", "editor", ""));
    let before = deployments
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // The policy takes effect a moment after it is created: wait until a
    // dry run as the set-only tenant is refused.
    let tenant: Api<ClientCertificateSet> =
        Api::namespaced(client_as(&sa(&ns, "sets-only")).await, n);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(T, "the tenant boundary in force", || {
        let (tenant, dry) = (tenant.clone(), dry.clone());
        async move {
            tenant
                .create(&dry, &set("probe", "Rolling", "cert"))
                .await
                .is_err()
        }
    })
    .await;

    // May manage sets, nothing else: refused, naming what is missing.
    let message = refused(&tenant, &set("s", "Rolling", "cert")).await;
    assert!(
        message.contains("may not patch Deployment app")
            && message.contains("deployments, verb patch"),
        "{message}"
    );
    // May patch the Deployment but not read the Secret: no oracle on it.
    let patcher: Api<ClientCertificateSet> =
        Api::namespaced(client_as(&sa(&ns, "patcher")).await, n);
    let message = refused(&patcher, &set("s", "Rolling", "cert")).await;
    assert!(
        message.contains("may not read Secret cert") && message.contains("secrets, verb get"),
        "{message}"
    );
    // May do all a Rolling set does, but not scale: StopStart is refused.
    let reader: Api<ClientCertificateSet> = Api::namespaced(client_as(&sa(&ns, "reader")).await, n);
    let message = refused(&reader, &set("s", "StopStart", "cert")).await;
    assert!(
        message.contains("may not scale Deployment app") && message.contains("deployments/scale"),
        "{message}"
    );
    // Nothing of it reached the app or the cluster.
    assert!(
        ns.api::<ClientCertificateSet>()
            .get_opt("s")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        deployments
            .get("app")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before,
        "the Deployment was touched"
    );

    // Rights on named Secrets only: each is checked, the most the chart
    // allows (20) within what the API server lets one request cost.
    let names: Vec<String> = std::iter::once("cert".to_string())
        .chain((1..20).map(|i| format!("c{i}")))
        .collect();
    let certificates: Vec<Value> = names
        .iter()
        .map(|c| {
            json!({"name": c, "pkcs12": {"secretName": c, "key": "certificate.pfx"},
                   "password": {"secretName": c, "key": "password"}})
        })
        .collect();
    let many: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": "many"},
        "spec": {"app": {"deployment": "app"}, "certificates": certificates}
    }))
    .unwrap();
    reader.create(&dry, &many).await.unwrap();
    let mut other = many.clone();
    let seventh = &mut other.spec.certificates[7];
    seventh.pkcs12.as_mut().unwrap().secret_name = "c20".into();
    seventh.password.as_mut().unwrap().secret_name = "c20".into();
    let message = refused(&reader, &other).await;
    assert!(message.contains("may not read Secret c20"), "{message}");
    let mut more = many.clone();
    let mut extra = more.spec.certificates[0].clone();
    extra.name = "c20".into();
    extra.pkcs12.as_mut().unwrap().secret_name = "c20".into();
    extra.password.as_mut().unwrap().secret_name = "c20".into();
    more.spec.certificates.push(extra);
    let message = refused(&reader, &more).await;
    assert!(message.contains("at most 20 Secrets"), "{message}");

    // The other workload kind and the CA bundles are checked the same way:
    // the reader may patch Deployments only, and read no ConfigMap.
    let mut sts = set("s", "Rolling", "cert");
    sts.spec.app = serde_json::from_value(json!({"statefulSet": "app"})).unwrap();
    let message = refused(&reader, &sts).await;
    assert!(
        message.contains("may not patch StatefulSet app")
            && message.contains("statefulsets, verb patch"),
        "{message}"
    );
    let mut trusting = set("s", "Rolling", "cert");
    trusting.spec.ca_certificates = serde_json::from_value(json!([
        {"name": "partner", "configMap": {"name": "partner-bundle", "key": "ca.crt"}}]))
    .unwrap();
    let message = refused(&reader, &trusting).await;
    assert!(
        message.contains("may not read ConfigMap partner-bundle")
            && message.contains("configmaps, verb get"),
        "{message}"
    );
    trusting.spec.ca_certificates = serde_json::from_value(json!([
        {"name": "partner", "secret": {"secretName": "not-yours", "key": "ca.crt"}}]))
    .unwrap();
    let message = refused(&reader, &trusting).await;
    assert!(
        message.contains("may not read Secret not-yours"),
        "{message}"
    );
    trusting.spec.ca_certificates = serde_json::from_value(json!([
        {"name": "partner", "secret": {"secretName": "c5", "key": "ca.crt"}}]))
    .unwrap();
    reader.create(&dry, &trusting).await.unwrap();

    // What the reader may do, it may ask certpin to do.
    reader
        .create(&PostParams::default(), &set("s", "Rolling", "cert"))
        .await
        .unwrap();
    let sets: Api<ClientCertificateSet> = ns.api();
    wait_until(&sets, "s", T, "Ready", ready).await;
    // A namespace editor (the built-in edit role, with sets) may too.
    let editor: Api<ClientCertificateSet> = Api::namespaced(client_as(&sa(&ns, "editor")).await, n);
    editor
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restart": "StopStart"}})),
        )
        .await
        .unwrap();

    // A spec change by the patcher is checked again; a label is not.
    let err = patcher
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"noCertificateFor": ["Other.Service"]}})),
        )
        .await
        .unwrap_err();
    // (It may neither scale the Deployment, which StopStart now needs, nor
    // read the Secret; the API names the first.)
    assert!(err.to_string().contains(":patcher may not"), "{err}");
    patcher
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    // certpin's own finalizer and status writes pass the policy: the
    // editor's change is applied and the set deletes cleanly.
    wait_until(&sets, "s", T, "Ready after the editor's change", ready).await;
    sets.delete("s", &DeleteParams::default()).await.unwrap();
    wait_for(T, "the set gone", || {
        let sets = sets.clone();
        async move { sets.get_opt("s").await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test]
async fn an_object_of_anothers_under_the_rendered_name_survives_the_sets_whole_life() {
    let ns = TestNamespace::new("theirs").await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 1, &["mendix"])).await;
    // Someone's own Secret, named as certpin would name the set's.
    put_secret(&ns, "s-certpin", &[("theirs", b"keep me")], None).await;
    let secrets: Api<Secret> = ns.api();
    let before = secrets.get("s-certpin").await.unwrap();
    let _op = Operator::start(&ns.name);
    let sets: Api<ClientCertificateSet> = ns.api();
    sets.create(&PostParams::default(), &set("s", "Rolling", "cert"))
        .await
        .unwrap();
    let s = wait_until(
        &sets,
        "s",
        T,
        "RenderedNameInUse",
        not_ready_with("RenderedNameInUse"),
    )
    .await;
    let message = &s.status.unwrap().conditions[0].message;
    assert!(message.contains("Secret \"s-certpin\""), "{message}");
    let deployments: Api<Deployment> = ns.api();
    let d = deployments.get("app").await.unwrap();
    assert!(
        !d.metadata
            .labels
            .unwrap_or_default()
            .contains_key("certpin.dev/set-uid"),
        "wired although refused"
    );
    sets.delete("s", &DeleteParams::default()).await.unwrap();
    wait_for(T, "the set gone", || {
        let sets = sets.clone();
        async move { sets.get_opt("s").await.unwrap().is_none() }
    })
    .await;
    // Garbage collection has had its chance: the owner is gone.
    let after = secrets.get("s-certpin").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.metadata.owner_references, None);
    assert_eq!(
        after.data.unwrap()["theirs"],
        ByteString(b"keep me".to_vec())
    );
}

#[tokio::test]
async fn limits_and_names_are_refused_at_admission() {
    let ns = TestNamespace::new("limits").await;
    install_crd(&ns.client).await;
    let sets: Api<ClientCertificateSet> = ns.api();
    let with = |certificates: Value| -> ClientCertificateSet {
        serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "s"},
            "spec": {"app": {"deployment": "app"}, "certificates": certificates}
        }))
        .unwrap()
    };
    let cert = |name: &str, secret: &str, pins: Vec<String>| {
        json!({"name": name, "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
               "password": {"secretName": secret, "key": "password"}, "pinTo": pins})
    };
    // One pin over 253 characters.
    let long = vec!["a".repeat(300)];
    let message = refused(&sets, &with(json!([cert("c", "cert", long)]))).await;
    assert!(message.contains("pinTo"), "{message}");
    // A URL as a pin (the runtime would never match it).
    let url = vec!["https://api.example.com/x".to_string()];
    let message = refused(&sets, &with(json!([cert("c", "cert", url)]))).await;
    assert!(message.contains("pinTo"), "{message}");
    // A name that is not a DNS name would reach a URL.
    let message = refused(&sets, &with(json!([cert("c", "secret?x=1", vec![])]))).await;
    assert!(message.contains("secretName"), "{message}");
    // Pins that are each fine but together exceed what one environment
    // variable holds.
    let many: Vec<String> = (0..256)
        .map(|i| format!("{i:03}-{}", "h".repeat(240)))
        .collect();
    let message = refused(
        &sets,
        &with(json!([
            cert("a", "cert", many.clone()),
            cert("b", "cert", many)
        ])),
    )
    .await;
    assert!(message.contains("128 KiB"), "{message}");
}
