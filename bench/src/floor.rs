//! The floor: a program that makes exactly the writes certpin must make for a
//! new set (finalizer, rendered ConfigMap, rendered Secret, Deployment wiring,
//! status), with certpin's concurrency, in one pass and without reading or
//! validating anything. What the API server allows is the floor certpin's
//! convergence is compared with.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use certpin::resource::ClientCertificateSet;
use certpin::testing::build::{self, Rendered};
use certpin::testing::names;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const MANAGER: &str = "certpin-floor";

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    /// The namespaces whose sets the floor handles.
    namespaces: HashSet<String>,
    /// (uid, generation) already written: the store may lag behind the
    /// floor's own writes, and the floor must not write twice.
    done: Mutex<HashSet<(String, i64)>>,
}

/// The floor's own finalizer (a write of the same kind as certpin's).
const FINALIZER: &str = "bench.certpin.dev/floor";

/// `namespaces`: one, or several separated by commas (the floor then
/// watches sets in every namespace and handles only theirs).
pub async fn run(namespaces: String, concurrency: u16) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let namespaces: HashSet<String> = namespaces.split(',').map(str::to_string).collect();
    let sets: Api<ClientCertificateSet> = match namespaces.iter().next() {
        Some(ns) if namespaces.len() == 1 => Api::namespaced(client.clone(), ns),
        _ => Api::all(client.clone()),
    };
    let ctx = Arc::new(Ctx {
        client,
        namespaces,
        done: Mutex::new(HashSet::new()),
    });
    Controller::new(sets, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "floor reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn ready(set: &ClientCertificateSet) -> bool {
    set.status.as_ref().is_some_and(|s| {
        s.observed_generation == set.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn reconcile(set: Arc<ClientCertificateSet>, ctx: Arc<Ctx>) -> Result<Action, FloorError> {
    let key = (
        set.uid().unwrap_or_default(),
        set.metadata.generation.unwrap_or(0),
    );
    let ns = set.namespace().unwrap_or_default();
    if !ctx.namespaces.contains(&ns)
        || ready(&set)
        || ctx.done.lock().map(|d| d.contains(&key)).unwrap_or(false)
    {
        return Ok(Action::await_change());
    }
    let ns = ns.as_str();
    let name = set.name_any();
    let apply = PatchParams::apply(MANAGER).force();
    let sets: Api<ClientCertificateSet> = Api::namespaced(ctx.client.clone(), ns);
    if !set.finalizers().iter().any(|f| f == FINALIZER) {
        let body = json!({"metadata": {"finalizers": [FINALIZER]}});
        sets.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    let rendered = placeholder(&set);
    // At once, as certpin writes them: the floor is the best the API server
    // allows, not a slower sequence.
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let cm_body = Patch::Apply(build::config_map_object(&set, ns, &rendered));
    let secret_body = Patch::Apply(build::secret_object(&set, ns, &rendered));
    futures::try_join!(
        config_maps.patch(&rendered.name, &apply, &cm_body),
        secrets.patch(&rendered.name, &apply, &secret_body),
    )?;
    let containers = if set.spec.app.containers.is_empty() {
        vec!["app".to_string()]
    } else {
        set.spec.app.containers.clone()
    };
    let (kind, target) = set.spec.app.target();
    let fragment = build::workload_fragment(
        &set,
        ns,
        kind,
        target,
        &rendered,
        &containers,
        &rendered.config_hash,
    );
    Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .patch(target, &apply, &Patch::Apply(fragment))
        .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "status": {
            "observedGeneration": set.metadata.generation,
            "certificateCount": set.spec.certificates.len(),
            "conditions": [{"type": "Ready", "status": "True", "reason": "Applied",
                            "message": "floor", "lastTransitionTime": now,
                            "observedGeneration": set.metadata.generation}],
        }
    });
    sets.patch_status(&name, &apply, &Patch::Apply(status))
        .await?;
    if let Ok(mut d) = ctx.done.lock() {
        d.insert(key);
    }
    Ok(Action::await_change())
}

/// Rendered objects of the size certpin writes (a ~1.2 KiB file per
/// certificate and the three settings), with no decoding or encoding.
fn placeholder(set: &ClientCertificateSet) -> Rendered {
    let mut files = BTreeMap::new();
    let mut keys = Vec::new();
    let mut paths = BTreeMap::new();
    let mut passwords = Vec::new();
    for c in &set.spec.certificates {
        let content = vec![0x30; 1200];
        let key = names::file_name(&c.name, &content);
        paths.insert(c.name.clone(), names::file_path(set, &key));
        files.insert(key.clone(), ByteString(content));
        keys.push(key);
        passwords.push("x".repeat(32));
    }
    let secret = BTreeMap::from([(
        names::KEY_PASSWORDS.to_string(),
        ByteString(passwords.join(",").into_bytes()),
    )]);
    let mut config_map = BTreeMap::new();
    let certs: Vec<&str> = paths.values().map(String::as_str).collect();
    config_map.insert(names::KEY_CERTIFICATES.into(), certs.join(","));
    config_map.insert(names::KEY_USAGES.into(), "{}".into());
    let hash = format!("floor-{}", set.metadata.generation.unwrap_or(0));
    Rendered {
        name: names::rendered(set),
        config_map,
        secret,
        files,
        retained: BTreeMap::new(),
        keys,
        ca_keys: Vec::new(),
        ca_paths: BTreeMap::new(),
        paths,
        input_hash: hash.clone(),
        config_hash: hash,
        reused: false,
        rendered_at: "floor".into(),
    }
}
