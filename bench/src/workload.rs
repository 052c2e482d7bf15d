//! The objects a run creates, and the clocks that watch them converge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use certpin::resource::ClientCertificateSet;
use certpin::testing::names;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::pool::{PASSWORD, Pool};

/// How many creates the bench keeps in flight, like a `kubectl apply` of a
/// large manifest or a GitOps sync.
const CREATE_CONCURRENCY: usize = 16;

pub fn set_name(i: usize) -> String {
    format!("set-{i}")
}
pub fn app_name(i: usize) -> String {
    format!("app-{i}")
}
pub fn secret_name(i: usize, which: char) -> String {
    format!("cert-{i}-{which}")
}

/// Where one tool's N apps (and their sets) live: one namespace, or spread
/// over several, app i in namespace i / per. The Deployment controller lists
/// every ReplicaSet of a Deployment's namespace in each sync, so with all N
/// apps in one namespace its work per rollout grows with N; spread, N =
/// 10,000 measures certpin and not that.
#[derive(Clone, Debug)]
pub struct Spread {
    pub namespaces: Vec<String>,
    per: usize,
}

impl Spread {
    /// All apps in `ns`.
    pub fn one(ns: &str) -> Spread {
        Spread {
            namespaces: vec![ns.to_string()],
            per: usize::MAX,
        }
    }

    /// `n` apps, `per` to a namespace (`base-0`, `base-1`, ...); with `per`
    /// 0 or at least `n`, all in `base`.
    pub fn new(base: &str, n: usize, per: usize) -> Spread {
        if per == 0 || per >= n {
            return Spread::one(base);
        }
        Spread {
            namespaces: (0..n.div_ceil(per))
                .map(|j| format!("{base}-{j}"))
                .collect(),
            per,
        }
    }

    /// The index in `namespaces` of app (and set) `i`.
    fn index(&self, i: usize) -> usize {
        (i / self.per).min(self.namespaces.len() - 1)
    }

    /// The namespace of app (and set) `i`.
    pub fn of(&self, i: usize) -> &str {
        &self.namespaces[self.index(i)]
    }

    /// How many of `n` apps live in each namespace.
    fn counts(&self, n: usize) -> Vec<(&str, usize)> {
        let mut counts: Vec<(&str, usize)> =
            self.namespaces.iter().map(|ns| (ns.as_str(), 0)).collect();
        for i in 0..n {
            counts[self.index(i)].1 += 1;
        }
        counts
    }

    pub fn names(&self) -> Vec<&str> {
        self.namespaces.iter().map(String::as_str).collect()
    }
}

/// Runs `f(i)` for i in 0..n with bounded concurrency.
pub async fn for_each<F, Fut>(n: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter((0..n).map(Ok::<usize, anyhow::Error>))
        .try_for_each_concurrent(concurrency, f)
        .await
}

pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(
        name,
        &PatchParams::apply("certpin-bench"),
        &Patch::Apply(ns),
    )
    .await?;
    Ok(())
}

pub fn deployment(name: &str, annotations: Value, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/bench-app:1"}]}
            }
        }
    }))?)
}

pub fn pkcs12_secret(name: &str, p12: &[u8]) -> Result<Secret> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {"keystore.p12": b64.encode(p12), "password": b64.encode(PASSWORD)}
    }))?)
}

pub fn set(i: usize) -> Result<ClientCertificateSet> {
    let cert = |which: char, pins: Value| {
        json!({
            "name": format!("partner-{which}"),
            "pkcs12": {"secretName": secret_name(i, which), "key": "keystore.p12"},
            "password": {"secretName": secret_name(i, which), "key": "password"},
            "pinTo": pins,
        })
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": set_name(i)},
        "spec": {
            "app": {"deployment": app_name(i)},
            "certificates": [
                cert('a', json!(["Module.WebService1", format!("api.a{i}.example")])),
                cert('b', json!([format!("api.b{i}.example")])),
            ],
            "restart": "Rolling",
        }
    }))?)
}

pub async fn create_ignoring_exists<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// N apps, each with two PKCS12 Secrets of its own content, all Available.
/// With zero replicas a rollout has no pods to wait for: the Deployment
/// controller completes it as soon as it observes the new template, so
/// convergence at N = 5000 and more is measured without the rollouts.
pub async fn apps(
    client: &Client,
    spread: &Spread,
    n: usize,
    pool: &Pool,
    replicas: i32,
) -> Result<()> {
    for ns in &spread.namespaces {
        namespace(client, ns).await?;
    }
    for_each(n, CREATE_CONCURRENCY, |i| {
        let ns = spread.of(i);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        async move {
            for (k, which) in ['a', 'b'].into_iter().enumerate() {
                let s = pkcs12_secret(&secret_name(i, which), &pool.file(2 * i + k)?)?;
                create_ignoring_exists(&secrets, &s).await?;
            }
            create_ignoring_exists(
                &deployments,
                &deployment(&app_name(i), json!({}), replicas)?,
            )
            .await
        }
    })
    .await?;
    for (ns, count) in spread.counts(n) {
        wait_available(client, ns, count, Duration::from_secs(120 + n as u64 / 2)).await?;
    }
    Ok(())
}

/// Unrelated Secrets (2 KiB each), as a busy namespace has.
pub async fn noise(client: &Client, ns: &str, count: usize) -> Result<()> {
    namespace(client, ns).await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let have = api.list_metadata(&ListParams::default()).await?.items.len();
    if have >= count {
        return Ok(());
    }
    eprintln!("bench: creating {} unrelated Secrets in {ns}", count - have);
    for_each(count, 32, |i| {
        let api = api.clone();
        async move {
            let s: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("noise-{i}")},
                "stringData": {"blob": format!("{i:0>2048}")}
            }))?;
            create_ignoring_exists(&api, &s).await
        }
    })
    .await
}

async fn wait_available(client: &Client, ns: &str, n: usize, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.list(&ListParams::default()).await?;
        let available = list.items.iter().filter(|d| rollout_complete(d, 1)).count();
        if available >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{available} of {n} Deployments in {ns} available after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Deployment at generation >= `min_generation` has rolled out completely.
pub fn rollout_complete(d: &Deployment, min_generation: i64) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    generation >= min_generation
        && s.observed_generation.unwrap_or(0) >= generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.ready_replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
}

fn wired(d: &Deployment) -> bool {
    template_annotations(d).contains_key(names::ANN_CONFIG_HASH)
}

pub fn template_annotations(d: &Deployment) -> std::collections::BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

pub fn set_ready(s: &ClientCertificateSet) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.observed_generation.is_some()
            && st.observed_generation == s.metadata.generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// When each set became Ready and each app finished its rollout, as seen by
/// watches started before the first create.
#[derive(Default)]
pub struct Clocks {
    pub created: Mutex<HashMap<String, Instant>>,
    pub ready: Mutex<HashMap<String, Instant>>,
    pub rolled_out: Mutex<HashMap<String, Instant>>,
}

pub struct Observer {
    pub clocks: Arc<Clocks>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn observe(client: &Client, spread: &Spread) -> Result<Observer> {
    let clocks = Arc::new(Clocks::default());
    let watches = 2 * spread.namespaces.len();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(watches);
    let mut tasks = Vec::new();
    for ns in &spread.namespaces {
        tasks.extend(observe_namespace(client, ns, &clocks, tx.clone()));
    }
    for _ in 0..watches {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("the bench's own watches did not start")?;
    }
    Ok(Observer { clocks, tasks })
}

/// The two watches of one namespace (sets and Deployments); each sends on
/// `tx` once it has listed.
fn observe_namespace(
    client: &Client,
    ns: &str,
    clocks: &Arc<Clocks>,
    tx: tokio::sync::mpsc::Sender<()>,
) -> [tokio::task::JoinHandle<()>; 2] {
    let sets: Api<ClientCertificateSet> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let c = clocks.clone();
    let tx1 = tx.clone();
    let t1 = tokio::spawn(async move {
        let mut s = watcher(sets, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    let _ = tx1.send(()).await;
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) if set_ready(&o) => {
                    let now = Instant::now();
                    if let Ok(mut m) = c.ready.lock() {
                        m.entry(o.name_any()).or_insert(now);
                    }
                }
                _ => {}
            }
        }
    });
    let c = clocks.clone();
    let t2 = tokio::spawn(async move {
        let mut s = watcher(deployments, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    let _ = tx.send(()).await;
                }
                Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d))
                    if wired(&d) && rollout_complete(&d, 2) =>
                {
                    let now = Instant::now();
                    if let Ok(mut m) = c.rolled_out.lock() {
                        m.entry(d.name_any()).or_insert(now);
                    }
                }
                _ => {}
            }
        }
    });
    [t1, t2]
}

/// Creates N sets, noting when each create was sent.
pub async fn create_sets(
    client: &Client,
    spread: &Spread,
    n: usize,
    clocks: &Arc<Clocks>,
) -> Result<()> {
    for_each(n, CREATE_CONCURRENCY, |i| {
        let api: Api<ClientCertificateSet> = Api::namespaced(client.clone(), spread.of(i));
        let clocks = clocks.clone();
        async move {
            let s = set(i)?;
            let t0 = Instant::now();
            api.create(&PostParams::default(), &s).await?;
            if let Ok(mut m) = clocks.created.lock() {
                m.insert(set_name(i), t0);
            }
            Ok(())
        }
    })
    .await
}

/// Creates N sets, then waits until every set is Ready and every app rolled out.
pub async fn converge(client: &Client, spread: &Spread, n: usize, obs: &Observer) -> Result<()> {
    create_sets(client, spread, n, &obs.clocks).await?;
    let ns = spread.namespaces.join(",");
    let timeout = Duration::from_secs(120 + n as u64);
    let deadline = Instant::now() + timeout;
    loop {
        let ready = obs.clocks.ready.lock().map(|m| m.len()).unwrap_or(0);
        let rolled = obs.clocks.rolled_out.lock().map(|m| m.len()).unwrap_or(0);
        if ready >= n && rolled >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?} in {ns}: {ready} of {n} sets Ready, {rolled} of {n} apps rolled out"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latencies in ms from each set's create to its Ready and its app's rollout.
/// A set counts as Ready no earlier than its app's rollout completed, for
/// both: the floor writes Ready when it has applied, and certpin reports an
/// app without pods Ready once wired, before its controller has seen the
/// new template; the later of the two is what both promise.
pub fn latencies(clocks: &Clocks, n: usize) -> (Vec<f64>, Vec<f64>) {
    let created = clocks.created.lock().map(|m| m.clone()).unwrap_or_default();
    let ready = clocks.ready.lock().map(|m| m.clone()).unwrap_or_default();
    let rolled = clocks
        .rolled_out
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut r = Vec::new();
    let mut o = Vec::new();
    for i in 0..n {
        let Some(t0) = created.get(&set_name(i)) else {
            continue;
        };
        if let Some(t) = ready.get(&set_name(i)) {
            let t = rolled.get(&app_name(i)).map_or(*t, |o| (*t).max(*o));
            r.push(t.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
        }
        if let Some(t) = rolled.get(&app_name(i)) {
            o.push(t.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    (r, o)
}

/// Replaces a Secret's PKCS12 file and times until the Deployment's pod
/// template annotations change (the moment a rollout is ordered).
pub async fn rotate(
    client: &Client,
    ns: &str,
    secret: &str,
    deployment: &str,
    candidates: [&[u8]; 2],
) -> Result<f64> {
    use base64::Engine as _;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={deployment}"));
    let mut stream = watcher(deployments, cfg).applied_objects().boxed();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .context("watching the Deployment")??
        .with_context(|| format!("Deployment {ns}/{deployment} not found"))?;
    let before = template_annotations(&first);
    // Whichever candidate differs from what the Secret holds now.
    let current = secrets
        .get(secret)
        .await?
        .data
        .and_then(|d| d.get("keystore.p12").map(|b| b.0.clone()))
        .unwrap_or_default();
    let new_p12 = if current == candidates[0] {
        candidates[1]
    } else {
        candidates[0]
    };
    // A never-seen value beside the file: Reloader annotates the pod template
    // with a hash of the data, so content it saw in an earlier run would
    // otherwise change nothing.
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let b64 = base64::engine::general_purpose::STANDARD;
    let body =
        json!({"data": {"keystore.p12": b64.encode(new_p12), "rotation": b64.encode(nonce)}});
    let t0 = Instant::now();
    secrets
        .patch(secret, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    let wait = async {
        while let Some(d) = stream.try_next().await? {
            if template_annotations(&d) != before {
                return Ok::<_, anyhow::Error>((t0.elapsed().as_secs_f64() * 1000.0, d));
            }
        }
        bail!("the watch ended")
    };
    let (ms, changed) = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .with_context(|| {
            format!("{ns}/{deployment} did not change within 60 s of rotating {secret}")
        })??;
    // Untimed: let the rollout finish, so that the next rotation (certpin's or
    // Reloader's) starts on a quiet cluster.
    let generation = changed.metadata.generation.unwrap_or(0);
    let settle = async {
        while let Some(d) = stream.try_next().await? {
            if rollout_complete(&d, generation) {
                return Ok::<(), anyhow::Error>(());
            }
        }
        bail!("the watch ended")
    };
    tokio::time::timeout(Duration::from_secs(120), settle)
        .await
        .with_context(|| format!("{ns}/{deployment} did not finish its rollout"))??;
    Ok(ms)
}

/// Removes the sets' finalizers (nothing is left to unwire: the namespace
/// goes), deletes the namespaces and waits until they are gone.
pub async fn teardown(client: &Client, namespaces: &[&str]) -> Result<()> {
    for ns in namespaces {
        let sets: Api<ClientCertificateSet> = Api::namespaced(client.clone(), ns);
        let list = sets.list_metadata(&ListParams::default()).await?;
        let names: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
        for_each(names.len(), 32, |i| {
            let (sets, name) = (sets.clone(), names[i].clone());
            async move {
                let body = json!({"metadata": {"finalizers": null}});
                match sets
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await?;
        let api: Api<Namespace> = Api::all(client.clone());
        match api.delete(ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(900);
    for ns in namespaces {
        while api.get_opt(ns).await?.is_some() {
            if Instant::now() > deadline {
                bail!("namespace {ns} still terminating after 15 minutes");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn a_spread_puts_per_apps_in_each_namespace_and_the_rest_in_the_last() {
        let s = Spread::new("b", 2500, 1000);
        assert_eq!(s.names(), ["b-0", "b-1", "b-2"]);
        assert_eq!(
            (s.of(0), s.of(999), s.of(1000), s.of(2499)),
            ("b-0", "b-0", "b-1", "b-2")
        );
        assert_eq!(s.counts(2500), [("b-0", 1000), ("b-1", 1000), ("b-2", 500)]);
    }

    #[test]
    fn without_a_spread_every_app_is_in_the_one_namespace() {
        for s in [
            Spread::new("b", 1000, 0),
            Spread::new("b", 1000, 1000),
            Spread::one("b"),
        ] {
            assert_eq!(s.names(), ["b"]);
            assert_eq!((s.of(0), s.of(999)), ("b", "b"));
            assert_eq!(s.counts(1000), [("b", 1000)]);
        }
    }
}
