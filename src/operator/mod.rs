//! The operator: watches ClientCertificateSets, the Secrets they reference
//! and the Deployments they wire, and runs the reconcile pipeline.

mod boundary;
mod context;
mod decoding;
pub mod error;
mod faults;
mod http;
mod lock;
mod memory;
mod metrics;
mod name_index;
pub(crate) mod reconcile;
mod triggers;
pub(crate) mod workarounds;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::PredicateConfig;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

use crate::resource::ClientCertificateSet;
use context::Context;
use error::{PassError, StartError};
use memory::Key;
use name_index::NameIndex;
use workarounds::repoll;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only these namespaces (comma-separated or repeated; default: all namespaces).
    #[arg(long = "namespace", env = "CERTPIN_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// How many sets are reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Reconcile every set at least this often (seconds), even when nothing
    /// changed: re-checks expiry and repairs drift the watches missed.
    #[arg(long, env = "CERTPIN_RESYNC_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
    /// After a change to a Secret or ConfigMap that sets use, their passes
    /// write nothing until those inputs have been quiet this long (ms), so
    /// that changes that arrive together restart an app once: a `kubectl
    /// apply` of a file and its password, a script's loop of API calls,
    /// cert-manager's renewal. Each further change within the wait starts
    /// it again; a burst that never pauses holds a restart at most 10 s.
    /// The pass reads and validates during the wait. Changes to a set are
    /// not delayed. A pipeline that rotates several Secrets of one set
    /// seconds apart can set e.g. 2000; 0 reacts to every change at once.
    #[arg(long, env = "CERTPIN_DEBOUNCE_MS", default_value_t = 500)]
    pub debounce_ms: u64,
    /// How many certificate files are decoded at once, on threads of their
    /// own (default: the CPUs the process may use).
    #[arg(long, env = "CERTPIN_DECODE_PARALLELISM", value_parser = clap::value_parser!(u16).range(1..))]
    pub decode_parallelism: Option<u16>,
    /// A file whose decoding takes longer than this (seconds) is refused as
    /// too costly; its encrypted parts ask for more key derivation than
    /// their structure showed.
    #[arg(long, env = "CERTPIN_DECODE_DEADLINE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub decode_deadline_seconds: u64,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CERTPIN_LOG_JSON")]
    pub log_json: bool,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "CERTPIN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Elect a leader on a Lease, so that only one replica reconciles.
    #[arg(long, env = "CERTPIN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, env = "CERTPIN_LEASE_NAME", default_value = "certpin")]
    pub lease_name: String,
    /// Seconds a leader holds the Lease without renewing it; a new leader takes over after at most this.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's identity in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Act as this user (e.g. system:serviceaccount:NS:NAME), as `kubectl --as` does: to check
    /// that a ServiceAccount's RBAC is enough.
    #[arg(long, hide = true)]
    pub impersonate: Option<String>,
    #[command(flatten)]
    pub boundary: boundary::BoundaryArgs,
}

/// Runs the operator until a signal (`Ok`) or a fatal error, which is
/// logged before it is returned.
pub fn run(args: RunArgs) -> Result<(), StartError> {
    crate::telemetry::init(args.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))
        .inspect_err(|e| error!(error = %e, "certpin could not start"))?;
    rt.block_on(run_operator(args))
        .inspect_err(|e| error!(error = %e, "certpin stopped"))
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

/// The sets in `ns` that name the object `name` (a Secret, ConfigMap or
/// workload, by `index`): the index's candidates, each checked against the
/// store (the index may hold a set deleted while the watch relisted).
fn sets_using(
    index: &NameIndex,
    store: &Store<ClientCertificateSet>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<ClientCertificateSet>> {
    index
        .sets_using(ns, name)
        .into_iter()
        .map(|set| ObjectRef::new(&set).within(ns))
        .filter(|r| {
            store
                .get(r)
                .is_some_and(|set| (index.references)(&set).contains(name))
        })
        .collect()
}

async fn client(args: &RunArgs) -> Result<Client, StartError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    if let Some(user) = &args.impersonate {
        config.auth_info.impersonate = Some(user.clone());
    }
    Ok(Client::try_from(config)?)
}

fn decode_limits(args: &RunArgs) -> decoding::Limits {
    decoding::Limits {
        parallelism: args
            .decode_parallelism
            .map_or(decoding::Limits::default().parallelism, usize::from),
        deadline: Duration::from_secs(args.decode_deadline_seconds),
    }
}

pub async fn run_operator(args: RunArgs) -> Result<(), StartError> {
    let client = client(&args).await?;
    let ctx = Context::with_limits(
        client.clone(),
        Duration::from_secs(args.resync_seconds),
        decode_limits(&args),
        Duration::from_millis(args.debounce_ms),
    );
    let ready = Arc::new(AtomicBool::new(false));
    serve_health(&args, &ctx, ready.clone());
    // Fail early and clearly when the CRD is missing or access is denied.
    for ns in namespaces(&args) {
        let sets: Api<ClientCertificateSet> = api(&client, ns);
        if let Err(e) = sets.list(&kube::api::ListParams::default().limit(1)).await {
            error!(error = %e, namespace = ns.unwrap_or("<all>"), "cannot list ClientCertificateSets: is the CRD installed (kubectl apply --server-side -f crds/) and may certpin list them?");
            return Err(e.into());
        }
    }
    boundary::spawn(
        client.clone(),
        ctx.metrics.clone(),
        &args.boundary,
        &args.namespaces,
    );
    ready.store(true, Ordering::Relaxed);
    if !args.leader_election {
        ctx.metrics.set_leader(true);
        run_controllers(&args, &client, ctx).await;
        return Ok(());
    }
    run_as_leader(&args, &client, ctx).await
}

/// `/metrics`, `/healthz` and `/readyz`, in the background.
fn serve_health(args: &RunArgs, ctx: &Context, ready: Arc<AtomicBool>) {
    let health = http::Health {
        metrics: ctx.metrics.clone(),
        ready,
    };
    let addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, health).await {
            error!(error = %e, %addr, "the metrics endpoint failed");
        }
    });
}

/// Waits for the Lease, runs the controllers while it is held, and exits
/// when it is lost, so that only the leader writes.
async fn run_as_leader(
    args: &RunArgs,
    client: &Client,
    ctx: Arc<Context>,
) -> Result<(), StartError> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "certpin".into()),
            &crate::pkcs12::generate_password()[..8]
        )
    });
    let duration = args.lease_duration_seconds.max(3);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(format!("certpin-lease-{identity}"))
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "waiting to become the leader");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return Err(StartError::Lease("the lease task ended".into())) },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
    info!(%identity, "became the leader");
    ctx.metrics.set_leader(true);
    let metrics = ctx.metrics.clone();
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow() {
                metrics.set_leader(false);
                return;
            }
        }
    };
    let result = tokio::select! {
        _ = run_controllers(args, client, ctx) => Ok(()),
        _ = lost => Err(StartError::Lease("lost the lease to another replica; exiting so that only the leader writes".into())),
    };
    drop(leader);
    // Hand the Lease over at once instead of letting it expire.
    if let Ok(Ok(manager)) = task.await
        && let Err(e) = manager.release().await
    {
        warn!(error = %e, "releasing the lease failed");
    }
    result
}

fn namespaces(args: &RunArgs) -> Vec<Option<&str>> {
    if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().map(|n| Some(n.as_str())).collect()
    }
}

/// One controller per watched namespace (or one for all), until a signal.
async fn run_controllers(args: &RunArgs, client: &Client, ctx: Arc<Context>) {
    let runs = namespaces(args)
        .into_iter()
        .map(|ns| run_controller(args, client, ns, ctx.clone()));
    futures::future::join_all(runs).await;
}

async fn run_controller(args: &RunArgs, client: &Client, ns: Option<&str>, ctx: Arc<Context>) {
    let (reader, writer) = reflector::store();
    let indexes = Indexes::default();
    let controller =
        Controller::for_stream(set_changes(client, ns, writer, indexes.clone()), reader)
            .with_config(ControllerConfig::default().concurrency(args.concurrency));
    let store = controller.store();
    info!(
        namespace = ns.unwrap_or("<all>"),
        "certpin controller starting"
    );
    let triggered = triggers_of(client, ns, &ctx, &store, indexes);
    let results = controller.reconcile_on(triggered).shutdown_on_signal().run(
        reconcile::reconcile,
        error_policy,
        ctx,
    );
    repoll::drive(results, repoll::REPOLL, |res| match res {
        Ok((obj, _)) => tracing::debug!(set = %obj.name, namespace = ?obj.namespace, "reconciled"),
        Err(e) => warn!(error = error::with_causes(&e), "reconcile failed"),
    })
    .await;
    info!(
        namespace = ns.unwrap_or("<all>"),
        "certpin controller stopped"
    );
}

/// Which sets name which objects, per kind of object, kept from the set
/// watch.
#[derive(Clone)]
struct Indexes {
    secrets: Arc<NameIndex>,
    config_maps: Arc<NameIndex>,
    deployments: Arc<NameIndex>,
    stateful_sets: Arc<NameIndex>,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            secrets: Arc::new(NameIndex::of(name_index::referenced_secrets)),
            config_maps: Arc::new(NameIndex::of(name_index::referenced_config_maps)),
            deployments: Arc::new(NameIndex::of(name_index::targeted_deployments)),
            stateful_sets: Arc::new(NameIndex::of(name_index::targeted_stateful_sets)),
        }
    }
}

impl Indexes {
    fn all(&self) -> [&Arc<NameIndex>; 4] {
        [
            &self.secrets,
            &self.config_maps,
            &self.deployments,
            &self.stateful_sets,
        ]
    }
}

/// The sets, kept in the store and the indexes. A set is reconciled when
/// its spec changes, a reconcile request arrives or it is deleted, not
/// when its status or finalizers do: certpin's own writes to it must not
/// trigger another pass.
fn set_changes(
    client: &Client,
    ns: Option<&str>,
    writer: reflector::store::Writer<ClientCertificateSet>,
    indexes: Indexes,
) -> impl futures::Stream<Item = Result<ClientCertificateSet, watcher::Error>> + Send + use<> {
    watcher(api::<ClientCertificateSet>(client, ns), list_config())
        .backoff(triggers::watch_backoff())
        .modify(slim)
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Apply(set) | watcher::Event::InitApply(set)) => {
                indexes.all().iter().for_each(|i| i.update(set));
            }
            Ok(watcher::Event::Delete(set)) => {
                indexes.all().iter().for_each(|i| i.remove(set));
            }
            _ => {}
        })
        .applied_objects()
        .predicate_filter(set_changed, PredicateConfig::default())
}

/// The sets that the changes of their Secrets, ConfigMaps and workloads
/// (and the status updates of a rollout a set follows) concern. An
/// input's change is recorded when it arrives: a pass writes only once the
/// set's inputs have been quiet for the window (`reconcile::quiet`), so
/// that a burst of rotations is one restart; a set triggered again while
/// its pass runs is passed once more after.
fn triggers_of(
    client: &Client,
    ns: Option<&str>,
    ctx: &Arc<Context>,
    store: &Store<ClientCertificateSet>,
    indexes: Indexes,
) -> impl futures::Stream<Item = ObjectRef<ClientCertificateSet>> + Send + use<> {
    let (secret_ctx, cm_ctx) = (ctx.clone(), ctx.clone());
    let (secret_store, cm_store) = (store.clone(), store.clone());
    let (secrets, config_maps) = (indexes.secrets, indexes.config_maps);
    let secret_sets = changes(
        referenced_events::<Secret>(client, ns),
        "Secret",
        move |s| {
            let ns = s.namespace().unwrap_or_default();
            touched(
                &secret_ctx,
                sets_using(&secrets, &secret_store, &ns, &s.name_any()),
            )
        },
    );
    let config_map_sets = changes(
        referenced_events::<ConfigMap>(client, ns),
        "ConfigMap",
        move |c| {
            let ns = c.namespace().unwrap_or_default();
            touched(
                &cm_ctx,
                sets_using(&config_maps, &cm_store, &ns, &c.name_any()),
            )
        },
    );
    let deployments = workload_events(client, ns, ctx.clone(), reconcile::deployment_stage);
    let stateful_sets = workload_events(client, ns, ctx.clone(), reconcile::stateful_set_stage);
    let workload_sets = futures::stream::select(
        changes(
            deployments,
            "Deployment",
            sets_targeting(store, indexes.deployments),
        ),
        changes(
            stateful_sets,
            "StatefulSet",
            sets_targeting(store, indexes.stateful_sets),
        ),
    );
    futures::stream::select(
        futures::stream::select(secret_sets, config_map_sets),
        workload_sets,
    )
}

fn touched(
    ctx: &Context,
    sets: Vec<ObjectRef<ClientCertificateSet>>,
) -> Vec<ObjectRef<ClientCertificateSet>> {
    let now = std::time::Instant::now();
    for r in &sets {
        let ns = r.namespace.as_deref().unwrap_or_default();
        tracing::debug!(namespace = ns, set = %r.name, "an input of the set changed");
        ctx.memory.touch(&Key::set(ns, &r.name), now, ctx.quiet);
    }
    sets
}

/// The sets that target a workload, by its watch event (`index`: the
/// sets of its kind by the name they target).
fn sets_targeting<K: kube::Resource>(
    store: &Store<ClientCertificateSet>,
    index: Arc<NameIndex>,
) -> impl Fn(K) -> Vec<ObjectRef<ClientCertificateSet>> + Send + 'static + use<K> {
    let store = store.clone();
    move |w| {
        sets_using(
            &index,
            &store,
            &w.namespace().unwrap_or_default(),
            &w.name_any(),
        )
    }
}

/// The sets that a watched object's events concern. A watch error is
/// logged; the watch's backoff retries it.
fn changes<K, S>(
    events: S,
    kind: &'static str,
    sets: impl Fn(K) -> Vec<ObjectRef<ClientCertificateSet>> + Send + 'static,
) -> impl futures::Stream<Item = ObjectRef<ClientCertificateSet>> + Send
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    events
        .filter_map(move |e| async move {
            e.inspect_err(|e| warn!(error = %e, kind, "watch failed; retrying"))
                .ok()
        })
        .flat_map(move |o| futures::stream::iter(sets(o)))
}

// Secrets, ConfigMaps and workloads are watched as metadata only: certpin
// never holds Secret data it does not need, and a changed resourceVersion
// is all a trigger needs.

/// The Secrets or ConfigMaps sets may reference: every change counts.
fn referenced_events<K>(
    client: &Client,
    ns: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api::<PartialObjectMeta<K>>(client, ns), list_config())
        .backoff(triggers::watch_backoff())
        .touched_objects()
}

/// A workload matters when its spec or annotations change or it goes,
/// not on each status update of a rollout (only on those that change the
/// step the set following that rollout reports), nor when the change is
/// the echo of certpin's own wiring patch.
fn workload_events<K>(
    client: &Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    stage: fn(&K) -> Option<u64>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + use<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let following = ctx.clone();
    triggers::changed_or_deleted(
        watcher(api::<K>(client, ns), list_config()).backoff(triggers::watch_backoff()),
        triggers::spec_and_annotations,
        stage,
        move |key, value| ctx.memory.is_echo(key, value),
        move |key, stage| following.memory.stage_news(key, stage),
    )
}

/// Lists are consistent reads (the default), not `any_semantic`: after an
/// etcd restart a list from the watch cache can be older than the oldest
/// event the cache still holds, so every watch from it fails with 410 and the
/// stream loops, missing changes for minutes (seen in the control-plane
/// restart test). Since Kubernetes 1.34 consistent lists come from the
/// watch cache too.
fn list_config() -> watcher::Config {
    watcher::Config::default()
}

/// Drops what certpin never reads from the sets it keeps in memory: the
/// field managers' records and kubectl's copy of the last applied manifest
/// are most of a set's size (about half of the store at 1000 sets).
fn slim(set: &mut ClientCertificateSet) {
    set.metadata.managed_fields = None;
    if let Some(a) = set.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What of a set, when it changes, calls for a reconcile.
fn set_changed(set: &ClientCertificateSet) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    set.metadata.generation.hash(&mut h);
    set.metadata.deletion_timestamp.is_some().hash(&mut h);
    // An annotation changes no generation: without this, a request would
    // wait for the next resync.
    reconcile::reconcile_requested(set).hash(&mut h);
    Some(h.finish())
}

fn error_policy(set: Arc<ClientCertificateSet>, err: &PassError, ctx: Arc<Context>) -> Action {
    let reason = err.source.metric_label();
    ctx.metrics
        .failures
        .get_or_create(&metrics::ReasonLabel {
            reason: format!("error-{reason}"),
        })
        .inc();
    warn!(
        namespace = set.namespace().unwrap_or_default(),
        set = set.name_any(),
        step = %err.step,
        error = error::with_causes(err),
        reason,
        "reconcile error; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(annotations: serde_json::Value, status: serde_json::Value) -> ClientCertificateSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "s", "generation": 1, "annotations": annotations},
            "spec": {"app": {"deployment": "app"}}, "status": status,
        }))
        .expect("a set")
    }

    #[test]
    fn a_reconcile_request_passes_the_filter_and_certpins_own_status_does_not() {
        let plain = set(serde_json::json!({}), serde_json::json!({}));
        let echoed = set(
            serde_json::json!({}),
            serde_json::json!({"lastHandledReconcileAt": "x"}),
        );
        let flux = set(
            serde_json::json!({"reconcile.fluxcd.io/requestedAt": "x"}),
            serde_json::json!({}),
        );
        let ours = set(
            serde_json::json!({"certpin.dev/reconcile-requested-at": "y"}),
            serde_json::json!({}),
        );
        assert_eq!(set_changed(&plain), set_changed(&echoed));
        assert_ne!(set_changed(&plain), set_changed(&flux));
        assert_ne!(set_changed(&flux), set_changed(&ours));
    }
}
