//! The tenant boundary on the local control plane: a set may make certpin do
//! only what its author may do (the chart's ValidatingAdmissionPolicy asks
//! the authorizer about the requesting user), certpin never takes over an
//! object it did not make, and limits are enforced at admission.

mod support;

use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, poll_until, wait_for};
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
    poll_until(&sets, "s", T, "Ready", ready).await;
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
    poll_until(&sets, "s", T, "Ready after the editor's change", ready).await;
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
    let s = poll_until(
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

// ---------------------------------------------------------------------------
// The boundary on every verb (issue 39): a tenant who may patch only its own
// workloads may not, through an administrator's set, make certpin unwire,
// restart or abandon the administrator's app, by any write that changes
// what certpin does to it.

/// A tenant's rights: every verb on sets (with `role`, and deletecollection); patch (and scale) its own
/// Deployments `mine` and `mine2` and StatefulSet `mine-sts`; read the
/// Secret `cert`; create Secrets and ConfigMaps. Nothing on `app`.
const TENANT_RULES: &str = "\
- {apiGroups: [certpin.dev], resources: [clientcertificatesets], verbs: [deletecollection]}
- {apiGroups: [apps], resources: [deployments], resourceNames: [mine, mine2], verbs: [get, patch]}
- {apiGroups: [apps], resources: [deployments/scale], resourceNames: [mine, mine2], verbs: [get, update, patch]}
- {apiGroups: [apps], resources: [statefulsets], resourceNames: [mine-sts], verbs: [get, patch]}
- {apiGroups: [apps], resources: [statefulsets/scale], resourceNames: [mine-sts], verbs: [get, update, patch]}
- {apiGroups: [\"\"], resources: [secrets], resourceNames: [cert], verbs: [get]}
- {apiGroups: [\"\"], resources: [secrets, configmaps], verbs: [create]}";

const SET_UID: &str = "certpin.dev/set-uid";

/// A namespace with the administrator's Deployment `app`, wired by the
/// administrator's set `admins`, and the tenant's Deployment `mine`, wired
/// by the tenant's own set `own` (created by the tenant through the
/// boundary); certpin runs with the chart's RBAC for the namespace.
struct Bed {
    ns: TestNamespace,
    /// The administrator's view of the sets.
    sets: Api<ClientCertificateSet>,
    /// The tenant's.
    tenant: Api<ClientCertificateSet>,
    user: String,
    _op: Operator,
}

fn set_on(name: &str, app: Value, restart: &str) -> ClientCertificateSet {
    let mut s = set(name, restart, "cert");
    s.spec.app = serde_json::from_value(app).unwrap();
    s
}

/// The uid of the set whose wiring the workload carries.
fn claim<K: kube::Resource>(w: &K) -> Option<String> {
    w.meta().labels.as_ref()?.get(SET_UID).cloned()
}

impl Bed {
    async fn new(prefix: &str, restart: &str) -> Bed {
        let ns = TestNamespace::new(prefix).await;
        install_crd(&ns.client).await;
        let boundary = tenant_boundary_manifest();
        kubectl_apply(&boundary);
        put_cert_secret(&ns).await;
        for name in ["app", "mine", "mine2"] {
            create_deployment(&ns, &deployment(name, 1, &["mendix"])).await;
        }
        ns.api::<StatefulSet>()
            .create(&PostParams::default(), &stateful_set("mine-sts"))
            .await
            .unwrap();
        let n = &ns.name;
        let certpin = install_chart_rbac(n);
        let op = Operator::start_with(n, "", &[&format!("--impersonate={certpin}")]);
        kubectl_apply(&role(n, "tenant", TENANT_RULES));
        let user = sa(&ns, "tenant");
        let tenant: Api<ClientCertificateSet> = Api::namespaced(client_as(&user).await, n);
        let sets: Api<ClientCertificateSet> = ns.api();
        sets.create(
            &PostParams::default(),
            &set_on("admins", json!({"deployment": "app"}), restart),
        )
        .await
        .unwrap();
        poll_until(&sets, "admins", T, "the admin's set Ready", ready).await;
        // The boundary is in force once a dry run of what it refuses is
        // refused: deleting the administrator's set (checked since issue
        // 39); an older policy (CERTPIN_TEST_BOUNDARY) refuses only writes
        // of a spec.
        let older = std::env::var_os("CERTPIN_TEST_BOUNDARY").is_some();
        wait_for(T, "the tenant boundary in force", || {
            let tenant = tenant.clone();
            async move {
                if older {
                    let dry = PostParams {
                        dry_run: true,
                        ..PostParams::default()
                    };
                    let probe = set_on("probe", json!({"deployment": "app"}), "Rolling");
                    tenant.create(&dry, &probe).await.is_err()
                } else {
                    let dry = DeleteParams {
                        dry_run: true,
                        ..DeleteParams::default()
                    };
                    tenant.delete("admins", &dry).await.is_err()
                }
            }
        })
        .await;
        tenant
            .create(
                &PostParams::default(),
                &set_on("own", json!({"deployment": "mine"}), restart),
            )
            .await
            .unwrap();
        poll_until(&sets, "own", T, "the tenant's set Ready", ready).await;
        Bed {
            ns,
            sets,
            tenant,
            user,
            _op: op,
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        self.ns.api()
    }

    /// The administrator's set and app as they are now.
    async fn admins(&self) -> (ClientCertificateSet, Deployment) {
        let set = self.sets.get("admins").await.unwrap();
        let app = self.deployments().get("app").await.unwrap();
        (set, app)
    }

    /// Neither the administrator's set nor its app has changed since
    /// `before`, and the app still carries the set's wiring.
    async fn admins_unchanged(&self, before: &(ClientCertificateSet, Deployment)) {
        let (set, app) = self.admins().await;
        assert_eq!(
            set.metadata.resource_version,
            before.0.metadata.resource_version
        );
        assert_eq!(set.spec, before.0.spec);
        assert_eq!(
            set.metadata.finalizers,
            Some(vec!["certpin.dev/unwire".to_string()])
        );
        assert_eq!(set.metadata.deletion_timestamp, None);
        assert_eq!(app.metadata.generation, before.1.metadata.generation);
        assert_eq!(app.spec, before.1.spec);
        assert_eq!(
            claim(&app),
            set.metadata.uid,
            "the admin's app lost its wiring"
        );
    }

    /// The tenant's write, refused by the boundary: its message.
    async fn refused<T: std::fmt::Debug>(&self, result: kube::Result<T>) -> String {
        match result {
            Ok(o) => panic!("the tenant's write was accepted: {o:?}"),
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
                assert!(e.message.contains("denied request"), "{e:?}");
                e.message
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn no_patch(&self, what: &str) -> String {
        format!(
            "{} may not patch Deployment app in {} (deployments, verb patch), which certpin unwires {what}",
            self.user, self.ns.name
        )
    }

    async fn patch_as_tenant(
        &self,
        name: &str,
        patch: Value,
    ) -> kube::Result<ClientCertificateSet> {
        self.tenant
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }

    /// Waits until the Deployment `name` carries no set's wiring.
    async fn unwired(&self, name: &str) {
        poll_until(
            &self.deployments(),
            name,
            T,
            "unwired",
            |d: Option<&Deployment>| d.is_some_and(|d| claim(d).is_none()),
        )
        .await;
    }
}

impl Drop for Bed {
    /// certpin stops with the test: its finalizers would keep the
    /// namespace Terminating on the shared test bed. (The administrator
    /// passes the boundary.)
    fn drop(&mut self) {
        let ns = self.ns.name.as_str();
        let Ok(out) = std::process::Command::new("kubectl")
            .args(["-n", ns, "get", "clientcertificatesets", "-o", "name"])
            .output()
        else {
            return;
        };
        for set in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::process::Command::new("kubectl")
                .args(["-n", ns, "patch", set, "--type=merge"])
                .args(["-p", r#"{"metadata":{"finalizers":null}}"#])
                .output();
        }
    }
}

fn stateful_set(name: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "mendix", "image": "example.invalid/mendix:1"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn retargeting_an_admins_set_to_the_tenants_own_deployment_is_refused() {
    let bed = Bed::new("retarget", "Rolling").await;
    let before = bed.admins().await;
    let message = bed
        .refused(
            bed.patch_as_tenant("admins", json!({"spec": {"app": {"deployment": "mine2"}}}))
                .await,
        )
        .await;
    assert!(
        message.contains(&bed.no_patch("when this ClientCertificateSet no longer targets it")),
        "{message}"
    );
    // A whole replace is the same write.
    let mut replaced = before.0.clone();
    replaced.spec.app = serde_json::from_value(json!({"deployment": "mine2"})).unwrap();
    let message = bed
        .refused(
            bed.tenant
                .replace("admins", &PostParams::default(), &replaced)
                .await,
        )
        .await;
    assert!(message.contains(&bed.no_patch("when")), "{message}");
    // A label changes nothing certpin does.
    bed.patch_as_tenant("admins", json!({"metadata": {"labels": {"team": "b"}}}))
        .await
        .unwrap();
    let before = bed.admins().await;
    bed.admins_unchanged(&before).await;

    // Its own set the tenant may retarget: certpin unwires the old workload.
    bed.patch_as_tenant("own", json!({"spec": {"app": {"deployment": "mine2"}}}))
        .await
        .unwrap();
    poll_until(&bed.sets, "own", T, "Ready on mine2", ready).await;
    bed.unwired("mine").await;
    let own = bed.sets.get("own").await.unwrap();
    let mine2 = bed.deployments().get("mine2").await.unwrap();
    assert_eq!(claim(&mine2), own.metadata.uid);
    bed.admins_unchanged(&before).await;
}

#[tokio::test]
async fn switching_an_admins_set_to_the_tenants_own_stateful_set_is_refused() {
    let bed = Bed::new("kind", "Rolling").await;
    let before = bed.admins().await;
    // The kind switched, with the same name as the tenant's, and both named
    // (certpin would read the Deployment).
    for app in [
        json!({"deployment": null, "statefulSet": "mine-sts"}),
        json!({"deployment": "app", "statefulSet": "mine-sts"}),
    ] {
        let result = bed
            .patch_as_tenant("admins", json!({"spec": {"app": app}}))
            .await;
        match result {
            // The schema refuses both names before the policy sees them.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                assert!(
                    e.message
                        .contains("exactly one of deployment or statefulSet"),
                    "{e:?}"
                )
            }
            other => {
                let message = bed.refused(other).await;
                assert!(
                    message.contains(
                        &bed.no_patch("when this ClientCertificateSet no longer targets it")
                    ),
                    "{message}"
                );
            }
        }
    }
    bed.admins_unchanged(&before).await;

    // Its own set the tenant may switch to its StatefulSet.
    bed.patch_as_tenant(
        "own",
        json!({"spec": {"app": {"deployment": null, "statefulSet": "mine-sts"}}}),
    )
    .await
    .unwrap();
    bed.unwired("mine").await;
    let own = bed.sets.get("own").await.unwrap();
    poll_until(
        &bed.ns.api::<StatefulSet>(),
        "mine-sts",
        T,
        "wired by own",
        |s: Option<&StatefulSet>| s.is_some_and(|s| claim(s) == own.metadata.uid),
    )
    .await;
    bed.admins_unchanged(&before).await;
}

#[tokio::test]
async fn deleting_an_admins_set_is_refused() {
    let bed = Bed::new("delete", "StopStart").await;
    let before = bed.admins().await;
    let message = bed
        .refused(bed.tenant.delete("admins", &DeleteParams::default()).await)
        .await;
    assert!(
        message.contains(&bed.no_patch("when this ClientCertificateSet is deleted")),
        "{message}"
    );
    // Every set at once: the admin's is refused.
    let result = bed
        .tenant
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    let message = bed.refused(result).await;
    assert!(message.contains(&bed.no_patch("when")), "{message}");
    // Its own set the tenant may delete (the collection's delete stops at
    // the first refusal, or did it already): certpin, with the chart's
    // rights, through the boundary, unwires it and lets the set go.
    match bed.tenant.delete("own", &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("{e}"),
    }
    wait_for(T, "the tenant's set gone", || {
        let sets = bed.sets.clone();
        async move { sets.get_opt("own").await.unwrap().is_none() }
    })
    .await;
    bed.unwired("mine").await;
    bed.admins_unchanged(&before).await;

    // The scale of a StopStart set is checked too, and with it the patch.
    kubectl_apply(&role_for(
        &bed.ns.name,
        "tenant-app",
        "tenant",
        "- {apiGroups: [apps], resources: [deployments], resourceNames: [app], verbs: [patch]}",
    ));
    let no_scale = format!(
        "{} may not scale Deployment app in {} (deployments/scale, verb patch), which certpin starts again (restart: StopStart) when this ClientCertificateSet is deleted",
        bed.user, bed.ns.name
    );
    wait_for(T, "the tenant's patch right in force", || {
        let bed = &bed;
        let no_scale = no_scale.clone();
        async move {
            match bed
                .tenant
                .delete(
                    "admins",
                    &DeleteParams {
                        dry_run: true,
                        ..Default::default()
                    },
                )
                .await
            {
                Err(kube::Error::Api(e)) => e.message.contains(&no_scale),
                _ => false,
            }
        }
    })
    .await;
    bed.admins_unchanged(&before).await;

    // The administrator may delete it, and certpin (with the chart's RBAC,
    // through the boundary) unwires the app and removes its finalizer.
    bed.sets
        .delete("admins", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(T, "the admin's set gone", || {
        let sets = bed.sets.clone();
        async move { sets.get_opt("admins").await.unwrap().is_none() }
    })
    .await;
    bed.unwired("app").await;
}

#[tokio::test]
async fn removing_certpins_finalizer_from_an_admins_set_is_refused() {
    let bed = Bed::new("finalizer", "Rolling").await;
    let before = bed.admins().await;
    let what =
        "before its finalizer certpin.dev/unwire, removed here, lets this ClientCertificateSet go";
    let message = bed
        .refused(
            bed.patch_as_tenant("admins", json!({"metadata": {"finalizers": null}}))
                .await,
        )
        .await;
    assert!(message.contains(&bed.no_patch(what)), "{message}");
    // The same with a JSON patch, and next to another finalizer.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/metadata/finalizers", "value": ["example.com/keep"]}
    ]))
    .unwrap();
    let result = bed
        .tenant
        .patch("admins", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await;
    let message = bed.refused(result).await;
    assert!(message.contains(&bed.no_patch(what)), "{message}");
    // An owner would have the garbage collector delete the set.
    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "gone", "uid": "00000000-0000-0000-0000-000000000000"}]}});
    let message = bed
        .refused(bed.patch_as_tenant("admins", owner.clone()).await)
        .await;
    assert!(
        message.contains(&bed.no_patch(
            "when the garbage collector deletes this ClientCertificateSet for the owner added here"
        )),
        "{message}"
    );
    bed.admins_unchanged(&before).await;

    // Its own set's finalizer the tenant may remove.
    let own = bed
        .patch_as_tenant("own", json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    assert_eq!(own.metadata.finalizers, None);
    bed.admins_unchanged(&before).await;
}

/// The most authorizer checks one write makes: a retarget between two
/// StopStart workloads by a user whose rights name each of 20 Secrets,
/// within what the API server lets one request cost.
#[tokio::test]
async fn the_costliest_write_is_decided_within_the_cel_budget() {
    let bed = Bed::new("cost", "StopStart").await;
    let n = &bed.ns.name;
    let names: Vec<String> = std::iter::once("cert".to_string())
        .chain((1..20).map(|i| format!("c{i}")))
        .collect();
    kubectl_apply(&role(
        n,
        "named",
        &format!(
            "{}\n- {{apiGroups: [\"\"], resources: [secrets], resourceNames: [{}], verbs: [get]}}",
            TENANT_RULES,
            names.join(", ")
        ),
    ));
    let named: Api<ClientCertificateSet> =
        Api::namespaced(client_as(&sa(&bed.ns, "named")).await, n);
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
        "spec": {"app": {"deployment": "mine"}, "restart": "StopStart", "certificates": certificates}
    }))
    .unwrap();
    bed.sets
        .create(&PostParams::default(), &many)
        .await
        .unwrap();
    let retarget = json!({"spec": {"app": {"deployment": "mine2"}}});
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    // 27 checks: patch and scale of both workloads, whether the user may
    // read every Secret, each of the 20, creating Secrets and ConfigMaps.
    // (Polled: the role was just written.)
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match named.patch("many", &dry, &Patch::Merge(&retarget)).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("the retarget was not admitted: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // One Secret more is refused for the right, not for the cost.
    let mut more = serde_json::to_value(&many.spec).unwrap();
    more["app"] = json!({"deployment": "mine2"});
    more["certificates"][7]["pkcs12"]["secretName"] = json!("c20");
    more["certificates"][7]["password"]["secretName"] = json!("c20");
    let result = named
        .patch("many", &dry, &Patch::Merge(json!({"spec": more})))
        .await;
    let message = bed.refused(result).await;
    assert!(message.contains("may not read Secret c20"), "{message}");
    // Two checks more (a named CA ConfigMap) are over the budget: refused,
    // not let through. Kubernetes 1.30's cost accounting still affords
    // them, and refuses for the missing right instead.
    let mut over = serde_json::to_value(&many.spec).unwrap();
    over["app"] = json!({"deployment": "mine2"});
    over["caCertificates"] = json!([{"name": "p", "configMap": {"name": "ca", "key": "ca.crt"}}]);
    match named
        .patch("many", &dry, &Patch::Merge(json!({"spec": over})))
        .await
    {
        Err(kube::Error::Api(e)) => assert!(
            (e.code == 422 && e.message.contains("running out of cost budget"))
                || (e.code == 403 && e.message.contains("may not read ConfigMap ca")),
            "{e:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Without the right to scale the old workload, that is what is refused.
    let mut to_mine2 = serde_json::to_value(&many.spec).unwrap();
    to_mine2["app"] = json!({"deployment": "mine2"});
    let narrower = TENANT_RULES.replace(
        "resources: [deployments/scale], resourceNames: [mine, mine2]",
        "resources: [deployments/scale], resourceNames: [mine2]",
    );
    kubectl_apply(&role(
        n,
        "named",
        &format!(
            "{narrower}\n- {{apiGroups: [\"\"], resources: [secrets], resourceNames: [{}], verbs: [get]}}",
            names.join(", ")
        ),
    ));
    let want = format!(
        "may not scale Deployment mine in {n} (deployments/scale, verb patch), which certpin starts again (restart: StopStart) when this ClientCertificateSet no longer targets it"
    );
    wait_for(T, "the old workload's scale refused", || {
        let (named, dry, to_mine2, want) =
            (named.clone(), dry.clone(), to_mine2.clone(), want.clone());
        async move {
            match named
                .patch("many", &dry, &Patch::Merge(json!({"spec": to_mine2})))
                .await
            {
                Err(kube::Error::Api(e)) => e.code == 403 && e.message.contains(&want),
                _ => false,
            }
        }
    })
    .await;
}

/// A ValidatingAdmissionPolicy named `name` that matches what certpin's
/// does (and checks nothing), and its binding to namespace `ns` with
/// `actions`.
fn stand_in_boundary(name: &str, ns: &str, actions: &str) -> (String, String) {
    let policy = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [certpin.dev], apiVersions: ["*"], operations: [CREATE, UPDATE, DELETE], resources: [clientcertificatesets]}}
  validations: [{{expression: "true"}}]
"#
    );
    let binding = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [{actions}]
  matchResources:
    namespaceSelector:
      matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{ns}]}}]
"#
    );
    (policy, binding)
}

/// Waits until certpin's metrics show the boundary gauge as `series`.
fn wait_gauge(op: &Operator, series: &str) {
    let want = format!("certpin_tenant_boundary_installed{series}");
    let deadline = std::time::Instant::now() + T;
    loop {
        if http_ok(&op.healthz_url()) && http_get(&op.metrics_url()).contains(&want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {want} in:\n{}\nlog:\n{}",
            if http_ok(&op.healthz_url()) {
                http_get(&op.metrics_url())
            } else {
                String::new()
            },
            op.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn certpin_reports_whether_its_tenant_boundary_is_installed() {
    let ns = TestNamespace::new("report").await;
    install_crd(&ns.client).await;
    let n = &ns.name;
    // A stand-in of this test's own, so that the shared one stays in force.
    let name = format!("certpin-test-{n}");
    let (policy, audit_only) = stand_in_boundary(&name, n, "Audit");
    let (_, denying) = stand_in_boundary(&name, n, "Deny");
    let flag = format!("--tenant-boundary={name}");
    let op = Operator::start_with(n, "", &[&flag, "--tenant-boundary-check-seconds=1"]);
    wait_gauge(&op, r#"{state="policy-missing"} 0"#);
    assert!(
        op.log_text().contains("the tenant boundary's ValidatingAdmissionPolicy is not installed; without it, a user who may write ClientCertificateSets can make certpin patch and restart any Deployment or StatefulSet"),
        "{}",
        op.log_text()
    );
    kubectl_apply(&policy);
    wait_gauge(&op, r#"{state="binding-missing"} 0"#);
    kubectl_apply(&audit_only);
    wait_gauge(&op, r#"{state="not-matching"} 0"#);
    assert!(
        op.log_text().contains("do not include Deny"),
        "{}",
        op.log_text()
    );
    kubectl_apply(&denying);
    wait_gauge(&op, r#"{state="installed"} 1"#);
    assert!(
        op.log_text()
            .contains("the tenant boundary is installed and bound")
    );
    // Removed again: noticed at the next check.
    let deleted = std::process::Command::new("kubectl")
        .args([
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &name,
        ])
        .status()
        .unwrap();
    assert!(deleted.success());
    wait_gauge(&op, r#"{state="policy-missing"} 0"#);

    // Not told which policy: says so. With the chart's namespaced RBAC
    // (watchNamespaces), certpin may not read cluster-scoped objects.
    let none = Operator::start_with(n, "-none", &[]);
    wait_gauge(&none, r#"{state="not-configured"} 0"#);
    assert!(
        none.log_text()
            .contains("the tenant boundary is not checked (no --tenant-boundary)")
    );
    // With the chart's namespaced RBAC (watchNamespaces) certpin may read
    // its own boundary's two objects, by name, and nothing else.
    let certpin = install_chart_rbac(n);
    let own = format!("certpin-{n}-tenant-boundary");
    let (policy, denying) = stand_in_boundary(&own, n, "Deny");
    kubectl_apply(&policy);
    kubectl_apply(&denying);
    let as_certpin = format!("--impersonate={certpin}");
    let namespaced = Operator::start_with(
        n,
        "-namespaced",
        &[&format!("--tenant-boundary={own}"), &as_certpin],
    );
    wait_gauge(&namespaced, r#"{state="installed"} 1"#);
    let other = Operator::start_with(n, "-other", &[&flag, &as_certpin]);
    wait_gauge(&other, r#"{state="unreadable"} 0"#);
    assert!(
        other
            .log_text()
            .contains("cannot tell whether the tenant boundary is installed"),
        "{}",
        other.log_text()
    );
    let deleted = std::process::Command::new("kubectl")
        .args([
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy,clusterrolebinding,clusterrole",
            &own,
        ])
        .status()
        .unwrap();
    assert!(deleted.success());
}
