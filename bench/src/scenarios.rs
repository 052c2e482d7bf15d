//! Reloader's own load-test scenarios (its `test/loadtest` README: burst,
//! no-op, fan-out, high cardinality, controller restart, large objects), run
//! for certpin and for Stakater Reloader one after the other on the same
//! test bed. Each tool runs behind its own counting proxy, scoped to the
//! scenario's namespaces, and is judged from outside: restarts are pod
//! template changes seen by a watch, requests are what the proxy forwarded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use certpin::resource::ClientCertificateSet;
use certpin_testkit::proxy;

use crate::pool::Pool;
use crate::procs::{self, Program};
use crate::stats::{Summary, summarize};
use crate::workload;

/// Distinct PKCS12 files a scenario's changes cycle through (the pool
/// files after `base`); more than any scenario's number of changes.
pub const CHANGE_FILES: usize = 160;

/// Replicas of each scenario app: more than one, so "all pods updated" is
/// a rolling update and not one pod.
const REPLICAS: i32 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Certpin,
    /// certpin with `--debounce-ms=0`: its own work per change, without the
    /// wait that makes a burst one restart.
    CertpinNoDebounce,
    Reloader,
    /// Reloader run again on the same scenario: the A/A run whose spread is
    /// the noise the others are judged against.
    ReloaderAgain,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Certpin => "certpin",
            Tool::CertpinNoDebounce => "certpin-nodebounce",
            Tool::Reloader => "reloader",
            Tool::ReloaderAgain => "reloader-aa",
        }
    }
    fn is_certpin(self) -> bool {
        matches!(self, Tool::Certpin | Tool::CertpinNoDebounce)
    }
}

#[derive(Serialize, Default, Debug)]
pub struct ScenarioResult {
    pub scenario: String,
    pub tool: String,
    /// Secret changes made.
    pub changes: usize,
    /// Pod template changes (rollouts ordered) seen on the scenario's apps.
    pub restarts: usize,
    /// What the tool should do: certpin's promise (a burst is one restart, a
    /// no-op none), Reloader's own (one per data change). Under a controller
    /// restart: at most one per change, none on an app whose Secret did not
    /// change, none missed.
    pub expected_restarts: usize,
    /// Whether `restarts` is an upper bound (controller restart) or exact.
    pub expected_at_most: bool,
    /// Template changes on apps whose Secret did not change (always 0).
    pub restarts_unchanged_apps: usize,
    /// Restarts as expected, none on unchanged apps, none missed.
    pub as_expected: bool,
    /// From a change (a burst's last) to its app's pod template changing.
    pub to_template: Summary,
    /// From a change to its app's rollout complete (every pod updated).
    pub to_all_pods: Summary,
    /// Requests per change by verb and resource, over the measured phase.
    pub requests_per_change: BTreeMap<String, f64>,
    pub cpu_seconds: f64,
    /// Peak resident memory over the measured phase, bytes.
    pub peak_memory: u64,
    /// Apps whose last change was not followed by a template change.
    pub missed: usize,
}

pub struct Bins<'a> {
    pub certpin: &'a Path,
    pub reloader: &'a Path,
}

/// One scenario's apps: app i uses Secret `secrets[i]` (several apps may
/// share one: fan-out).
struct Layout {
    /// (namespace, app, secret)
    apps: Vec<(String, String, String)>,
    /// Bytes of unrelated data in each Secret (large objects).
    padding: usize,
}

pub const SCENARIOS: [&str; 6] = [
    "burst",
    "no-op",
    "fan-out",
    "high-cardinality",
    "controller-restart",
    "large-objects",
];

/// The scenarios whose rollouts are compared (not burst, where Reloader
/// rolls out once per change, nor no-op, where nothing rolls out).
const AA_SCENARIOS: [&str; 4] = [
    "fan-out",
    "high-cardinality",
    "controller-restart",
    "large-objects",
];

/// Runs the scenarios (all, or those in `only`) for both tools.
pub async fn run_all(
    client: &Client,
    bins: &Bins<'_>,
    pool: &Pool,
    pool_base: usize,
    dir: &Path,
    only: &[String],
) -> Result<Vec<ScenarioResult>> {
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == scenario) {
            continue;
        }
        let mut tools = vec![Tool::Certpin, Tool::CertpinNoDebounce, Tool::Reloader];
        // Reloader again where "all pods updated" is compared: the A/A
        // pair is the noise that comparison is judged against.
        if AA_SCENARIOS.contains(&scenario) {
            tools.push(Tool::ReloaderAgain);
        }
        for tool in tools {
            eprintln!("bench: scenario {scenario}, {}", tool.name());
            let row = run_one(client, bins, pool, pool_base, dir, scenario, tool)
                .await
                .with_context(|| format!("scenario {scenario} for {}", tool.name()))?;
            eprintln!("bench: {}", serde_json::to_string(&row)?);
            rows.push(row);
        }
    }
    Ok(rows)
}

fn layout(scenario: &str, tool: Tool) -> Layout {
    let ns = |k: usize| format!("sc-{scenario}-{}-{k}", tool.name());
    let one = |count: usize| -> Vec<(String, String, String)> {
        (0..count)
            .map(|i| (ns(0), format!("app-{i}"), format!("cert-{i}")))
            .collect()
    };
    match scenario {
        "fan-out" => Layout {
            apps: (0..50)
                .map(|i| (ns(0), format!("app-{i}"), "partner".to_string()))
                .collect(),
            padding: 0,
        },
        "high-cardinality" => Layout {
            apps: (0..10)
                .flat_map(|k| (0..10).map(move |i| (k, i)))
                .map(|(k, i)| (ns(k), format!("app-{i}"), format!("cert-{i}")))
                .collect(),
            padding: 0,
        },
        "controller-restart" => Layout {
            apps: one(20),
            padding: 0,
        },
        "large-objects" => Layout {
            apps: one(10),
            padding: 512 * 1024,
        },
        "burst" => Layout {
            apps: one(1),
            padding: 0,
        },
        _ => Layout {
            apps: one(10),
            padding: 0,
        },
    }
}

fn namespaces(l: &Layout) -> Vec<String> {
    let mut v: Vec<String> = l.apps.iter().map(|a| a.0.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// A Secret holding a PKCS12 file, its password, and `padding` bytes of
/// unrelated data.
fn secret(name: &str, p12: &[u8], padding: usize, nonce: &str) -> Result<Secret> {
    let mut s = workload::pkcs12_secret(name, p12)?;
    let data = s.data.get_or_insert_with(Default::default);
    data.insert(
        "rotation".into(),
        k8s_openapi::ByteString(nonce.as_bytes().to_vec()),
    );
    if padding > 0 {
        data.insert("blob".into(), k8s_openapi::ByteString(vec![b'x'; padding]));
    }
    Ok(s)
}

fn set(app: &str, secret: &str) -> Result<ClientCertificateSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": app},
        "spec": {
            "app": {"deployment": app},
            "certificates": [{
                "name": "partner",
                "pkcs12": {"secretName": secret, "key": "keystore.p12"},
                "password": {"secretName": secret, "key": "password"},
                "pinTo": [format!("api.{app}.example")],
            }],
            "restart": "Rolling",
        }
    }))?)
}

/// Creates the layout's Secrets, apps and (for certpin) sets, and waits until
/// every app is wired and rolled out.
async fn setup(client: &Client, l: &Layout, tool: Tool, pool: &Pool, base: usize) -> Result<()> {
    for ns in namespaces(l) {
        workload::teardown(client, &[&ns]).await?;
        workload::namespace(client, &ns).await?;
    }
    let mut secrets_done = std::collections::HashSet::new();
    for (ns, app, sec) in &l.apps {
        if secrets_done.insert((ns.clone(), sec.clone())) {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            workload::create_ignoring_exists(
                &api,
                &secret(sec, &pool.file(base)?, l.padding, "0")?,
            )
            .await?;
        }
        let annotations = match tool {
            Tool::Reloader | Tool::ReloaderAgain => {
                json!({"secret.reloader.stakater.com/reload": sec})
            }
            _ => json!({}),
        };
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        workload::create_ignoring_exists(&api, &workload::deployment(app, annotations, REPLICAS)?)
            .await?;
        if tool.is_certpin() {
            let api: Api<ClientCertificateSet> = Api::namespaced(client.clone(), ns);
            workload::create_ignoring_exists(&api, &set(app, sec)?).await?;
        }
    }
    Ok(())
}

/// Waits until every app of the layout has rolled out its current template
/// (and, for certpin, every set is Ready).
async fn settled(client: &Client, l: &Layout, tool: Tool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = 0;
        for ns in namespaces(l) {
            let d: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            for dep in d.list(&ListParams::default()).await?.items {
                let wired = !tool.is_certpin()
                    || workload::template_annotations(&dep)
                        .contains_key(certpin::testing::names::ANN_CONFIG_HASH);
                if !wired || !workload::rollout_complete(&dep, 1) {
                    pending += 1;
                }
            }
            if tool.is_certpin() {
                let s: Api<ClientCertificateSet> = Api::namespaced(client.clone(), &ns);
                pending += s
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .filter(|s| !workload::set_ready(s))
                    .count();
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{pending} apps or sets not settled after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Template changes and rollout completions per app, from a watch started
/// after setup.
#[derive(Default)]
struct AppTrack {
    last: Option<BTreeMap<String, String>>,
    /// (when, generation) of each template change.
    changes: Vec<(Instant, i64)>,
    /// When each generation's rollout completed.
    complete: Vec<(Instant, i64)>,
}

struct Tracker {
    apps: Arc<Mutex<HashMap<String, AppTrack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn key(ns: &str, app: &str) -> String {
    format!("{ns}/{app}")
}

async fn track(client: &Client, l: &Layout) -> Result<Tracker> {
    let apps: Arc<Mutex<HashMap<String, AppTrack>>> = Arc::default();
    let mut tasks = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(64);
    let spaces = namespaces(l);
    for ns in &spaces {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let (apps, tx, ns) = (apps.clone(), tx.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = s.next().await {
                let d = match ev {
                    Ok(watcher::Event::InitDone) => {
                        let _ = tx.send(()).await;
                        continue;
                    }
                    Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
                    _ => continue,
                };
                let now = Instant::now();
                let generation = d.metadata.generation.unwrap_or(0);
                let annotations = workload::template_annotations(&d);
                let Ok(mut m) = apps.lock() else { return };
                let t = m.entry(key(&ns, &d.name_any())).or_default();
                match &t.last {
                    None => t.last = Some(annotations),
                    Some(prev) if *prev != annotations => {
                        t.changes.push((now, generation));
                        t.last = Some(annotations);
                    }
                    _ => {}
                }
                if workload::rollout_complete(&d, generation)
                    && !t.complete.iter().any(|(_, g)| *g == generation)
                {
                    t.complete.push((now, generation));
                }
            }
        }));
    }
    for _ in 0..spaces.len() {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("the scenario's Deployment watches did not start")?;
    }
    Ok(Tracker { apps, tasks })
}

/// A running tool behind its proxy.
struct Running {
    proxy: proxy::Proxy,
    programs: Vec<Program>,
    /// CPU seconds of programs already stopped.
    cpu_done: f64,
    peak_done: u64,
}

async fn spawn(
    tool: Tool,
    bins: &Bins<'_>,
    spaces: &[String],
    proxy: &proxy::Proxy,
    dir: &Path,
    tag: &str,
) -> Result<Program> {
    let env = [(
        "KUBECONFIG",
        proxy.kubeconfig.to_string_lossy().into_owned(),
    )];
    let watches = proxy
        .counts
        .watches
        .load(std::sync::atomic::Ordering::Relaxed);
    let (bin, args, want): (PathBuf, Vec<String>, u64) = match tool {
        Tool::Certpin | Tool::CertpinNoDebounce => (
            bins.certpin.to_path_buf(),
            vec![
                "run".into(),
                format!("--namespace={}", spaces.join(",")),
                "--leader-election=false".into(),
                format!("--metrics-addr=127.0.0.1:{}", crate::free_port()?),
            ]
            .into_iter()
            // The product's default debounce, or none.
            .chain((tool == Tool::CertpinNoDebounce).then(|| "--debounce-ms=0".to_string()))
            .collect(),
            // Sets, Secrets, ConfigMaps, Deployments, StatefulSets.
            5 * spaces.len() as u64,
        ),
        Tool::Reloader | Tool::ReloaderAgain => (
            bins.reloader.to_path_buf(),
            vec![
                "--reload-strategy=annotations".into(),
                format!("--namespaces={}", spaces.join(",")),
            ],
            // Secrets and ConfigMaps.
            2 * spaces.len() as u64,
        ),
    };
    let mut program = Program::spawn(tag, &bin, &args, &env, dir)?;
    let counts = proxy.counts.clone();
    crate::wait_for(&format!("{tag}'s watches"), Duration::from_secs(60), || {
        let open = counts.watches.load(std::sync::atomic::Ordering::Relaxed) - watches;
        let running = program.check_running();
        async move {
            running?;
            Ok(open >= want)
        }
    })
    .await?;
    Ok(program)
}

impl Running {
    fn cpu(&self) -> Result<f64> {
        let mut c = self.cpu_done;
        for p in &self.programs {
            c += procs::cpu_seconds(p.pid()?)?;
        }
        Ok(c)
    }
    fn peak(&self) -> Result<u64> {
        let mut m = self.peak_done;
        for p in &self.programs {
            m = m.max(procs::memory(p.pid()?)?.peak);
        }
        Ok(m)
    }
    /// Stops the running program (SIGTERM, as a pod deletion does), keeping
    /// its CPU time and peak.
    async fn stop_one(&mut self) -> Result<()> {
        if let Some(p) = self.programs.pop() {
            let pid = p.pid()?;
            self.cpu_done += procs::cpu_seconds(pid)?;
            self.peak_done = self.peak_done.max(procs::memory(pid)?.peak);
            p.stop().await?;
        }
        Ok(())
    }
}

/// Changes the PKCS12 file of a Secret (alternating two pool files, with a
/// fresh nonce so that Reloader's data hash changes too).
async fn change(client: &Client, ns: &str, name: &str, p12: &[u8]) -> Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let body = json!({"data": {"keystore.p12": b64.encode(p12), "rotation": b64.encode(nonce)}});
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// An annotation-only change: the data stays.
async fn touch(client: &Client, ns: &str, name: &str) -> Result<()> {
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let body: Value = json!({"metadata": {"annotations": {"bench.certpin.dev/touched": nonce}}});
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// What the change phase did, per app: when its last change was made.
type LastChange = HashMap<String, Instant>;

#[allow(clippy::too_many_arguments)]
async fn run_one(
    client: &Client,
    bins: &Bins<'_>,
    pool: &Pool,
    base: usize,
    dir: &Path,
    scenario: &str,
    tool: Tool,
) -> Result<ScenarioResult> {
    let l = layout(scenario, tool);
    let spaces = namespaces(&l);
    setup(client, &l, tool, pool, base).await?;
    let tag = format!("sc-{scenario}-{}", tool.name());
    let proxy = proxy::start(client.clone(), dir, &tag).await?;
    let first = spawn(tool, bins, &spaces, &proxy, dir, &tag).await?;
    let mut running = Running {
        proxy,
        programs: vec![first],
        cpu_done: 0.0,
        peak_done: 0,
    };
    settled(client, &l, tool, Duration::from_secs(180)).await?;
    let tracker = track(client, &l).await?;
    for p in &running.programs {
        procs::reset_peak(p.pid()?)?;
    }
    let (v0, c0) = (running.proxy.counts.by_verb(), running.cpu()?);
    // Each change brings content never seen in this scenario (the apps start
    // on file `base`): a change back to earlier content is rightly no
    // restart for certpin, which compares certificates, not bytes.
    let files: Vec<Vec<u8>> = (1..=CHANGE_FILES)
        .map(|k| pool.file(base + k))
        .collect::<Result<_>>()?;
    let mut last: LastChange = HashMap::new();
    let mut changes = 0usize;
    let mut seq = 0usize;
    let mut next = || {
        seq += 1;
        &files[(seq - 1) % files.len()]
    };
    // (expected for certpin, expected for Reloader)
    let expected: (usize, usize);
    match scenario {
        "burst" => {
            // 20 changes to one Secret in quick succession: each made as
            // soon as the API server answered the one before.
            let (ns, app, sec) = &l.apps[0];
            for _ in 0..20 {
                change(client, ns, sec, next()).await?;
                last.insert(key(ns, app), Instant::now());
                changes += 1;
            }
            expected = (1, 20);
        }
        "no-op" => {
            for _ in 0..3 {
                for (ns, _app, sec) in &l.apps {
                    touch(client, ns, sec).await?;
                    changes += 1;
                }
            }
            expected = (0, 0);
        }
        "fan-out" => {
            let (ns, _, sec) = &l.apps[0];
            change(client, ns, sec, next()).await?;
            let t = Instant::now();
            for (ns, app, _) in &l.apps {
                last.insert(key(ns, app), t);
            }
            changes = 1;
            expected = (l.apps.len(), l.apps.len());
        }
        "high-cardinality" | "large-objects" => {
            // Every Secret once, 20 ms apart (a rotation sweeping a cluster).
            for (ns, app, sec) in &l.apps {
                change(client, ns, sec, next()).await?;
                last.insert(key(ns, app), Instant::now());
                changes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            expected = (l.apps.len(), l.apps.len());
        }
        "controller-restart" => {
            // Apps 0..10 change every 200 ms in turn for 6 s; the controller is
            // stopped (SIGTERM) after 2 s and a new one started. Apps 10..20
            // never change: a controller restart must not restart them.
            let changing = &l.apps[..10];
            let t_end = Instant::now() + Duration::from_secs(6);
            let mut restarted = false;
            let t_restart = Instant::now() + Duration::from_secs(2);
            let mut k = 0usize;
            while Instant::now() < t_end {
                let (ns, app, sec) = &changing[k % changing.len()];
                change(client, ns, sec, next()).await?;
                last.insert(key(ns, app), Instant::now());
                changes += 1;
                k += 1;
                if !restarted && Instant::now() >= t_restart {
                    running.stop_one().await?;
                    let again = spawn(
                        tool,
                        bins,
                        &spaces,
                        &running.proxy,
                        dir,
                        &format!("{tag}-2"),
                    )
                    .await?;
                    running.programs.push(again);
                    restarted = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // At most one per change (changes made while no controller ran
            // may be applied together); unchanged apps never.
            expected = (changes, changes);
        }
        other => bail!("unknown scenario {other}"),
    }
    // Every app whose Secret changed ends with a template change after its
    // last change, and that rollout completes. No-op scenarios have nothing
    // to wait for; they (and every scenario, for restarts that should not
    // come) are watched for an observation window of 5 s after the last
    // change or template change, longer than certpin's debounce.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = last.iter().all(|(k, t)| {
            tracker.apps.lock().is_ok_and(|m| {
                m.get(k).is_some_and(|a| {
                    a.changes
                        .iter()
                        .find(|(w, _)| w > t)
                        .is_some_and(|(_, g)| a.complete.iter().any(|(_, cg)| cg >= g))
                })
            })
        });
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = Duration::from_secs(5);
    loop {
        let latest = tracker
            .apps
            .lock()
            .map(|m| {
                m.values()
                    .flat_map(|a| a.changes.iter().chain(a.complete.iter()).map(|(t, _)| *t))
                    .max()
            })
            .ok()
            .flatten();
        let since_change = last.values().max().map(|t| t.elapsed());
        let since = [latest.map(|t| t.elapsed()), since_change]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(quiet);
        if since >= quiet {
            break;
        }
        tokio::time::sleep(quiet - since).await;
    }
    let v1 = running.proxy.counts.by_verb();
    let (cpu, peak) = (running.cpu()? - c0, running.peak()?);
    let apps = tracker.apps.lock().map(|m| {
        m.iter()
            .map(|(k, a)| (k.clone(), (a.changes.clone(), a.complete.clone())))
            .collect::<HashMap<_, _>>()
    });
    let apps = apps.map_err(|_| anyhow::anyhow!("tracker poisoned"))?;
    drop(tracker);
    let restarts: usize = apps.values().map(|(c, _)| c.len()).sum();
    let restarts_unchanged_apps: usize = apps
        .iter()
        .filter(|(k, _)| !last.contains_key(*k))
        .map(|(_, (c, _))| c.len())
        .sum();
    let mut to_template = Vec::new();
    let mut to_all = Vec::new();
    let mut missed = 0;
    for (k, t) in &last {
        let Some((c, done)) = apps.get(k) else {
            missed += 1;
            continue;
        };
        match c.iter().find(|(w, _)| w > t) {
            Some((w, g)) => {
                to_template.push(w.duration_since(*t).as_secs_f64() * 1000.0);
                if let Some((d, _)) = done.iter().find(|(_, cg)| cg >= g) {
                    to_all.push(d.saturating_duration_since(*t).as_secs_f64() * 1000.0);
                }
            }
            None => missed += 1,
        }
    }
    for p in std::mem::take(&mut running.programs) {
        p.stop().await?;
    }
    let refs: Vec<&str> = spaces.iter().map(String::as_str).collect();
    workload::teardown(client, &refs).await?;
    let expected_restarts = match tool {
        Tool::Certpin => expected.0,
        Tool::CertpinNoDebounce | Tool::Reloader | Tool::ReloaderAgain => expected.1,
    };
    // Without the debounce certpin promises at most one restart per change.
    let expected_at_most = scenario == "controller-restart"
        || (tool == Tool::CertpinNoDebounce && scenario == "burst");
    let count_ok = if expected_at_most {
        restarts <= expected_restarts
    } else {
        restarts == expected_restarts
    };
    Ok(ScenarioResult {
        scenario: scenario.to_string(),
        tool: tool.name().to_string(),
        changes,
        restarts,
        expected_restarts,
        expected_at_most,
        restarts_unchanged_apps,
        as_expected: count_ok && restarts_unchanged_apps == 0 && missed == 0,
        to_template: summarize(&to_template),
        to_all_pods: summarize(&to_all),
        requests_per_change: crate::per_set(&v0, &v1, changes),
        cpu_seconds: cpu,
        peak_memory: peak,
        missed,
    })
}
