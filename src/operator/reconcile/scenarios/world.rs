//! A namespace in the fake API server with certpin's context, and what the
//! scenarios assert with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fake::{Fake, Logged};
use crate::names::{ANN_CONFIG_HASH, ANN_SET, ANN_STOP_START, LABEL_SET_UID, VOLUME};
use crate::operator::context::Context;
use crate::operator::error::{PassError, Result};
use crate::operator::reconcile::decide::restart::{StopStartRecord, record_of};
use crate::resource::ClientCertificateSet;

pub const NS: &str = "shop";
pub const PASSWORD: &[u8] = b"changeit";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/pkcs12/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

pub struct World {
    pub fake: Fake,
    pub ctx: Arc<Context>,
}

impl World {
    /// A namespace with the Secret `cert` (a PKCS12 file and its password).
    pub fn new() -> World {
        World::with_quiet(Duration::ZERO)
    }

    /// As `new`, with a quiet window (`--debounce-ms`) of `quiet`.
    pub fn with_quiet(quiet: Duration) -> World {
        let fake = Fake::default();
        let ctx = Context::with_limits(
            fake.client(),
            Duration::from_secs(3600),
            crate::operator::decoding::Limits::default(),
            quiet,
        );
        let w = World { fake, ctx };
        w.put_cert("openssl-ec256-modern.p12", PASSWORD);
        w
    }

    /// The Secret `cert`, created or rotated.
    pub fn put_cert(&self, file: &str, password: &[u8]) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("cert".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                ("certificate.pfx".to_string(), ByteString(fixture(file))),
                ("password".to_string(), ByteString(password.to_vec())),
            ])),
            ..Default::default()
        };
        self.input(&secret);
    }

    /// A Secret or ConfigMap a set may name, created or changed, as the
    /// watch would report it.
    pub fn input<K: serde::Serialize + kube::Resource<DynamicType = ()>>(&self, o: &K) {
        use crate::operator::name_index::{referenced_config_maps, referenced_secrets};
        self.fake.insert(o);
        let name = o.meta().name.as_deref().unwrap_or_default();
        let names_of = match K::kind(&()).as_ref() {
            "Secret" => referenced_secrets,
            _ => referenced_config_maps,
        };
        for set in self.fake.with(|st| st.all::<ClientCertificateSet>(NS)) {
            if names_of(&set).contains(name) {
                let key = crate::operator::memory::Key::set(NS, &kube::ResourceExt::name_any(&set));
                self.ctx
                    .memory
                    .touch(&key, std::time::Instant::now(), self.ctx.quiet);
            }
        }
    }

    /// A Deployment as tests/support makes them (containers with only an image).
    pub fn deployment(&self, name: &str, replicas: i32, containers: &[&str]) {
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": format!("example.invalid/{c}:1")}))
            .collect();
        self.deployment_from(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}
            }
        }));
    }

    pub fn deployment_from(&self, d: Value) {
        let mut d: Deployment = serde_json::from_value(d).expect("a Deployment");
        d.metadata.namespace = Some(NS.into());
        self.fake.insert(&d);
    }

    /// The Deployment controller's part: every replica of the current
    /// template updated and available.
    pub fn roll_out(&self, name: &str) {
        let d = self.deployment_now(name);
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = json!({
            "observedGeneration": d.metadata.generation,
            "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
        });
        self.fake
            .with(|s| s.set_status::<Deployment>(NS, name, status));
    }

    /// A pass that must succeed, after the Deployment controller rolled
    /// `app` out.
    pub async fn pass_rolled_out(&self, name: &str, app: &str) -> Action {
        self.roll_out(app);
        self.pass_ok(name).await
    }

    /// The set waits for the rollout of `app` (Ready False, Reconciling),
    /// and is Ready once the Deployment controller has rolled it out.
    pub async fn rolls_then_ready(&self, name: &str, app: &str) {
        let s = self.set(name);
        assert_eq!(ready(&s).1, "RolloutInProgress", "{:?}", ready(&s));
        assert_eq!(condition(&s, "Reconciling").status, "True");
        self.pass_rolled_out(name, app).await;
        let s = self.set(name);
        assert!(is_ready(&s), "after the rollout: {:?}", ready(&s));
    }

    /// A running pod of Deployment `app` (labels `app=<app>`).
    pub fn pod(&self, app: &str, name: &str) {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .expect("a Pod");
        self.fake.insert(&pod);
    }

    /// A pod that Deployment `app`'s controller made from its current
    /// template (it carries the template's annotations), created now.
    pub fn pod_of_template(&self, app: &str, name: &str) {
        let annotations = self
            .deployment_now(app)
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app},
                "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .expect("a Pod");
        self.fake.insert(&pod);
    }

    pub fn remove_pod(&self, name: &str) {
        self.fake
            .with(|s| s.remove::<k8s_openapi::api::core::v1::Pod>(NS, name));
    }

    /// A set with the certificate of Secret `cert`, pinned to api.example.com.
    pub fn create_set(&self, name: &str, spec: Value) {
        let mut spec = spec;
        spec["certificates"] = json!([{"name": "client",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"}, "pinTo": ["api.example.com"]}]);
        let set: ClientCertificateSet = serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": name, "namespace": NS}, "spec": spec
        }))
        .expect("a set");
        self.fake.insert(&set);
    }

    /// A set with exactly this spec (no client certificate added).
    pub fn create_set_as_is(&self, name: &str, spec: Value) {
        let set: ClientCertificateSet = serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": name, "namespace": NS}, "spec": spec
        }))
        .expect("a set");
        self.fake.insert(&set);
    }

    /// `kubectl patch --type=merge` of the set.
    pub fn edit_set(&self, name: &str, patch: Value) {
        self.fake
            .with(|s| s.merge::<ClientCertificateSet>(NS, name, patch));
    }

    /// `kubectl delete` of a set that has finalizers: it is marked.
    pub fn delete_set(&self, name: &str) {
        self.fake
            .with(|s| s.mark_deleted::<ClientCertificateSet>(NS, name));
    }

    /// One reconcile pass over the set as the API server has it now.
    pub async fn pass(&self, name: &str) -> Result<Action, PassError> {
        let set = self.set(name);
        super::super::reconcile(Arc::new(set), self.ctx.clone()).await
    }

    /// certpin restarted: a new context (empty decode cache and memory) on
    /// the same API server.
    pub fn restart_operator(&mut self) {
        self.ctx = Context::new(self.fake.client(), Duration::from_secs(3600));
    }

    /// The decodes this context has run (cache misses).
    pub fn decodes(&self) -> u64 {
        self.ctx.metrics.decodes.get()
    }

    /// A pass that must succeed.
    pub async fn pass_ok(&self, name: &str) -> Action {
        self.pass_alone_ok(name).await
    }

    /// Whether `app`'s rollout triggers passes of set `name`.
    pub fn follows(&self, name: &str, app: &str) -> bool {
        let workload = crate::operator::memory::Key::new("Deployment", NS, app);
        self.ctx.memory.follower(&workload) == Some(crate::operator::memory::Key::set(NS, name))
    }

    /// A pass that must succeed, and nothing more.
    pub async fn pass_alone_ok(&self, name: &str) -> Action {
        match self.pass(name).await {
            Ok(a) => a,
            Err(e) => panic!("the pass over {name} failed: {e}"),
        }
    }

    pub fn set(&self, name: &str) -> ClientCertificateSet {
        self.set_opt(name)
            .unwrap_or_else(|| panic!("no set {name}"))
    }

    pub fn set_opt(&self, name: &str) -> Option<ClientCertificateSet> {
        self.fake.get(NS, name)
    }

    pub fn deployment_now(&self, name: &str) -> Deployment {
        self.fake
            .get(NS, name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    pub fn config_map(&self, name: &str) -> Option<ConfigMap> {
        self.fake.get(NS, name)
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.fake.get(NS, name)
    }

    pub fn version_of_deployment(&self, name: &str) -> Option<String> {
        self.fake.with(|s| s.version::<Deployment>(NS, name))
    }

    pub fn version_of_secret(&self, name: &str) -> Option<String> {
        self.fake.with(|s| s.version::<Secret>(NS, name))
    }

    /// (type, reason, note) of every Event certpin published.
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.fake.with(|s| {
            s.all::<Event>(NS)
                .into_iter()
                .map(|e| {
                    (
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.note.unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    pub fn warning(&self, reason: &str) -> Option<String> {
        self.events()
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == reason)
            .map(|(_, _, note)| note)
    }

    /// The writes (non-GET requests) made since `mark`, as
    /// "METHOD path content-type manager".
    pub fn writes_since(&self, mark: usize) -> Vec<String> {
        self.fake.since(mark, |log| {
            log.iter().filter(|l| l.is_write()).map(describe).collect()
        })
    }
}

pub fn describe(l: &Logged) -> String {
    let short = match l.content_type.as_deref() {
        Some("application/apply-patch+yaml") => "apply",
        Some("application/merge-patch+json") => "merge",
        Some("application/json-patch+json") => "json-patch",
        Some("application/json") => "json",
        Some(other) => other,
        None => "-",
    };
    let path = l
        .path
        .strip_prefix(&format!("/api/v1/namespaces/{NS}/"))
        .or_else(|| {
            l.path
                .split_once(&format!("/namespaces/{NS}/"))
                .map(|(_, p)| p)
        })
        .unwrap_or(&l.path);
    format!(
        "{} {path} {short} {}",
        l.method,
        l.field_manager.as_deref().unwrap_or("-")
    )
}

/// Whether the set has a condition of this type at all.
pub fn has_condition(set: &ClientCertificateSet, type_: &str) -> bool {
    set.status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == type_)
}

pub fn condition<'a>(set: &'a ClientCertificateSet, type_: &str) -> &'a Condition {
    set.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// (status, reason) of the Ready condition.
pub fn ready(set: &ClientCertificateSet) -> (String, String) {
    let c = condition(set, "Ready");
    (c.status.clone(), c.reason.clone())
}

pub fn is_ready(set: &ClientCertificateSet) -> bool {
    ready(set) == ("True".into(), "Applied".into())
        && set.status.as_ref().unwrap().observed_generation == set.metadata.generation
}

/// The names of the workloads the status records.
pub fn records(set: &ClientCertificateSet) -> Vec<String> {
    set.status
        .iter()
        .flat_map(|s| &s.workloads)
        .map(|w| w.name.clone())
        .collect()
}

pub fn containers(d: &Deployment) -> Vec<Container> {
    d.spec.clone().unwrap().template.spec.unwrap().containers
}

pub fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

pub fn stop_record(d: &Deployment) -> Option<StopStartRecord> {
    record_of(&super::super::kinds::Workload::Deployment(d.clone()))
}

pub fn has_stop_annotation(d: &Deployment) -> bool {
    d.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_STOP_START))
}

pub fn claim_uid(d: &Deployment) -> Option<String> {
    d.metadata.labels.as_ref()?.get(LABEL_SET_UID).cloned()
}

pub fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(ANN_CONFIG_HASH)
        .cloned()
}

/// The container gets both settings from `<set>-certpin` (never a literal)
/// and mounts certpin's volume read-only at `mount_path`.
pub fn wired_to(c: &Container, rendered: &str, mount_path: &str) -> bool {
    let from = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .is_some_and(|e| {
                e.value.is_none()
                    && e.value_from.as_ref().is_some_and(|f| {
                        f.config_map_key_ref
                            .as_ref()
                            .is_some_and(|r| r.name == rendered)
                            || f.secret_key_ref
                                .as_ref()
                                .is_some_and(|r| r.name == rendered)
                    })
            })
    };
    from("MXRUNTIME_ClientCertificates")
        && from("MXRUNTIME_ClientCertificatePasswords")
        && c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == VOLUME && m.mount_path == mount_path && m.read_only == Some(true))
}

pub fn wired(c: &Container) -> bool {
    wired_to(c, "s-certpin", "/etc/certpin/client-certificates")
}

/// No trace of certpin in the pod template or the metadata.
pub fn unwired(d: &Deployment) -> bool {
    let spec = d.spec.clone().unwrap().template.spec.unwrap();
    let certpin = |k: &String| k.starts_with("certpin.dev/");
    spec.volumes.unwrap_or_default().is_empty()
        && spec.containers.iter().all(|c| {
            c.env.as_ref().is_none_or(Vec::is_empty)
                && c.volume_mounts.as_ref().is_none_or(Vec::is_empty)
        })
        && !d.metadata.labels.iter().flatten().any(|(k, _)| certpin(k))
        && !d
            .metadata
            .annotations
            .iter()
            .flatten()
            .any(|(k, _)| certpin(k))
        && template_hash(d).is_none()
}

/// The annotation naming the set, on the workload.
pub fn set_annotation(d: &Deployment) -> Option<String> {
    d.metadata.annotations.as_ref()?.get(ANN_SET).cloned()
}
