//! The operator: watches ClientCertificateSets, the Secrets they reference
//! and the Deployments they wire, and runs the reconcile pipeline.

pub mod context;
pub mod error;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{error, info, warn};

use crate::resource::ClientCertificateSet;
use context::Context;
use error::Error;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CERTPIN_NAMESPACE")]
    pub namespace: Option<String>,
    /// How many sets are reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CERTPIN_LOG_JSON")]
    pub log_json: bool,
}

pub fn run(args: RunArgs) -> Result<i32, crate::cli::UsageError> {
    crate::telemetry::init(args.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::cli::UsageError(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        match run_operator(args).await {
            Ok(()) => Ok(0),
            Err(e) => {
                error!(error = %e, "certpin stopped");
                Ok(1)
            }
        }
    })
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The sets that reference the Secret `name` in `ns`.
fn sets_using_secret(
    store: &Store<ClientCertificateSet>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<ClientCertificateSet>> {
    store
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| {
            s.spec.certificates.iter().any(|c| {
                c.pkcs12.as_ref().is_some_and(|r| r.secret_name == name)
                    || c.password.as_ref().is_some_and(|r| r.secret_name == name)
                    || c.tls.as_ref().is_some_and(|r| r.secret_name == name)
            })
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn sets_wiring(
    store: &Store<ClientCertificateSet>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<ClientCertificateSet>> {
    store
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns) && s.spec.app.deployment == name)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

pub async fn run_operator(args: RunArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let ns = args.namespace.as_deref();
    let sets: Api<ClientCertificateSet> = api(&client, ns);
    // Fail early and clearly when the CRD is missing.
    if let Err(e) = sets.list(&kube::api::ListParams::default().limit(1)).await {
        error!(error = %e, "cannot list ClientCertificateSets: is the CRD installed (kubectl apply -f crds/)?");
        return Err(e.into());
    }
    let ctx = Context::new(client.clone());
    let controller = Controller::new(sets, watcher::Config::default().any_semantic()).with_config(
        ControllerConfig::default()
            .concurrency(args.concurrency)
            .debounce(Duration::from_millis(200)),
    );
    let store = controller.store();
    // Secrets and Deployments are watched as metadata only: certpin never
    // holds Secret data it does not need, and a changed resourceVersion is
    // all a trigger needs.
    let secret_store = store.clone();
    let secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    let deployment_store = store.clone();
    let deployments = watcher(
        api::<PartialObjectMeta<Deployment>>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    info!(
        namespace = ns.unwrap_or("<all>"),
        "certpin operator starting"
    );
    controller
        .watches_stream(secrets, move |s| {
            sets_using_secret(
                &secret_store,
                &s.namespace().unwrap_or_default(),
                &s.name_any(),
            )
        })
        .watches_stream(deployments, move |d| {
            sets_wiring(
                &deployment_store,
                &d.namespace().unwrap_or_default(),
                &d.name_any(),
            )
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => {
                    tracing::debug!(set = %obj.name, namespace = ?obj.namespace, "reconciled")
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    info!("certpin operator stopped");
    Ok(())
}

fn error_policy(set: Arc<ClientCertificateSet>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(namespace = set.namespace().unwrap_or_default(), set = set.name_any(), error = %err, reason = err.metric_label(), "reconcile error; retrying");
    Action::requeue(Duration::from_secs(5))
}
