//! certpin-bench: certpin at scale on the local control plane, side by side
//! with a write-only floor and with Stakater Reloader, in one run.
//!
//!   certpin-bench run --sizes 1,100,1000 --out bench/results.json
//!   certpin-bench floor --namespace NS[,NS]  (the floor program; run by `run`)
//!   certpin-bench ab --a OLD --b NEW        (two certpin binaries, A B B A)

mod ab;
mod floor;
mod pool;
mod procs;
mod scenarios;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use serde::Serialize;
use serde_json::json;

use certpin::resource::ClientCertificateSet;
use certpin_testkit::proxy;
use procs::{Memory, Program};
use stats::{Summary, summarize};

#[derive(Parser)]
#[command(name = "certpin-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure (needs KUBECONFIG pointing at a local test bed).
    Run(RunArgs),
    /// Compares two certpin binaries on one test bed (A B B A).
    Ab(ab::AbArgs),
    /// The floor program (started by `run`).
    Floor {
        /// One namespace, or several separated by commas.
        #[arg(long)]
        namespace: String,
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
    },
    /// Reloader's load-test scenarios for certpin and Stakater Reloader;
    /// the rows go into `--out` (an existing results file keeps its sizes).
    Scenarios {
        #[arg(long, default_value = "target/release/certpin")]
        certpin: PathBuf,
        #[arg(long, env = "CERTPIN_BENCH_RELOADER")]
        reloader: PathBuf,
        #[arg(long, default_value = "bench/results.json")]
        out: PathBuf,
        #[arg(long, env = "CERTPIN_BENCH_CACHE")]
        cache: PathBuf,
        /// Only these scenarios (rows of other scenarios in `--out` stay).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Creates N sets (as `run` does) and unrelated Secrets, and leaves them,
    /// for footprint experiments with a certpin started by hand.
    Populate {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        sets: usize,
        #[arg(long, default_value_t = 10_000)]
        noise: usize,
        #[arg(long, env = "CERTPIN_BENCH_CACHE")]
        cache: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Numbers of sets, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Rotations timed per size, for certpin and for Reloader each.
    #[arg(long, default_value_t = 20)]
    rotations: usize,
    /// Unrelated Secrets in a watched namespace.
    #[arg(long, default_value_t = 10_000)]
    noise: usize,
    /// Replicas of each app. 0 measures convergence without rollouts (the
    /// Deployment controller completes a zero-replica rollout at once), for
    /// N = 5000 and more.
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// The certpin binary (release build).
    #[arg(long, default_value = "target/release/certpin")]
    certpin: PathBuf,
    /// A Stakater Reloader binary; without it the Reloader columns are empty.
    #[arg(long, env = "CERTPIN_BENCH_RELOADER")]
    reloader: Option<PathBuf>,
    /// Seconds between certpin's forced resyncs in the idle phase.
    #[arg(long, default_value_t = 20)]
    resync_seconds: u64,
    /// certpin's (and the floor's) reconcile concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Where results go (JSON).
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
    /// Keep the sizes (and scenarios) already in `--out` that this run does
    /// not measure again (same N and replicas are replaced): the N = 1000 run
    /// with pods and the zero-replica runs at N = 5000 and 10,000 go into one
    /// file.
    #[arg(long)]
    merge: bool,
    /// Cache for the generated PKCS12 files, logs and kubeconfigs.
    #[arg(long, env = "CERTPIN_BENCH_CACHE")]
    cache: PathBuf,
    /// Apps (and sets) per namespace; 0: each tool's N apps in one
    /// namespace. The Deployment controller's work per sync grows with the
    /// apps in a namespace, which at N = 10,000 in one namespace is most of
    /// what a run would measure.
    #[arg(long, default_value_t = 0)]
    apps_per_namespace: usize,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Floor {
                namespace,
                concurrency,
            } => floor::run(namespace, concurrency).await,
            Command::Run(args) => run(args).await,
            Command::Ab(args) => ab::ab(args).await,
            Command::Populate {
                namespace,
                sets,
                noise,
                cache,
            } => populate(&namespace, sets, noise, &cache).await,
            Command::Scenarios {
                certpin,
                reloader,
                out,
                cache,
                only,
            } => run_scenarios(&certpin, &reloader, &out, &cache, &only).await,
        }
    })
}

#[derive(Serialize, Default)]
struct Convergence {
    ready: Summary,
    rollout: Summary,
    writes_per_set: f64,
    reads_per_set: f64,
    /// Requests per set by verb and resource, as the counting proxy saw them.
    requests_per_set: std::collections::BTreeMap<String, f64>,
    /// From the first create to the last set Ready and app rolled out.
    wall_seconds: f64,
    /// CPU seconds the controller used over that time.
    cpu_seconds: f64,
}

/// Per-set request counts between two snapshots of the proxy's counts.
fn per_set(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    n: usize,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d as f64 / n.max(1) as f64))
        })
        .collect()
}

#[derive(Serialize, Default)]
struct Idle {
    /// Writes by a restarted certpin over its first pass and one forced resync.
    writes: u64,
    reconciles_after_restart: u64,
    decodes_after_restart: u64,
    reconciles_in_resync: u64,
    decodes_in_resync: u64,
    /// Every request of the restarted certpin, by verb and resource.
    requests: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct SizeResult {
    n: usize,
    replicas: i32,
    /// Apps per namespace (0: all N in one).
    #[serde(skip_serializing_if = "is_zero")]
    apps_per_namespace: usize,
    floor: Convergence,
    certpin: Convergence,
    ready_ratio_median: f64,
    ready_ratio_p99: f64,
    rollout_ratio_median: f64,
    rotation_certpin: Summary,
    rotation_reloader: Option<Summary>,
    idle: Idle,
    certpin_memory_convergence: Memory,
    certpin_memory_steady: Memory,
    reloader_memory: Option<Memory>,
    certpin_cpu_seconds_per_1000_reconciles: f64,
    certpin_reconciles_convergence: u64,
    certpin_decodes_per_reconcile_steady: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Report<'a> {
    started: String,
    machine: String,
    kubernetes: String,
    noise_secrets: usize,
    concurrency: u16,
    rotations: usize,
    reloader: Option<String>,
    /// Which Reloader: the real one (version and source archive) or the
    /// stand-in (`CERTPIN_BENCH_RELOADER_KIND`, set by scripts/bench).
    #[serde(skip_serializing_if = "Option::is_none")]
    reloader_kind: Option<String>,
    sizes: &'a [SizeResult],
}

async fn install_crd(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ClientCertificateSet::crd();
    let name = "clientcertificatesets.certpin.dev";
    api.patch(
        name,
        &PatchParams::apply("certpin-bench").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    .context("the CRD was not established")??;
    Ok(())
}

/// Sum of every sample of a metric family in Prometheus text format.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn scrape(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `cond` holds, checking every 100 ms, or fails after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Certpin {
    program: Program,
    metrics_port: u16,
    proxy: proxy::Proxy,
}

async fn start_certpin(
    client: &Client,
    bin: &Path,
    concurrency: u16,
    dir: &Path,
    tag: &str,
    namespaces: &[&str],
    resync: Option<u64>,
) -> Result<Certpin> {
    let proxy = proxy::start(client.clone(), dir, tag).await?;
    let metrics_port = free_port()?;
    let mut cli = vec![
        "run".to_string(),
        format!("--namespace={}", namespaces.join(",")),
        "--leader-election=false".into(),
        format!("--metrics-addr=127.0.0.1:{metrics_port}"),
        format!("--concurrency={concurrency}"),
    ];
    if let Some(s) = resync {
        cli.push(format!("--resync-seconds={s}"));
    }
    let env = [(
        "KUBECONFIG",
        proxy.kubeconfig.to_string_lossy().into_owned(),
    )];
    let mut program = Program::spawn(tag, bin, &cli, &env, dir)?;
    // Started when its three watches per namespace are open.
    let want = 3 * namespaces.len() as u64;
    let counts = proxy.counts.clone();
    wait_for("certpin's watches", Duration::from_secs(60), || {
        let open = counts.watches.load(std::sync::atomic::Ordering::Relaxed);
        let running = program.check_running();
        async move {
            running?;
            Ok(open >= want)
        }
    })
    .await?;
    Ok(Certpin {
        program,
        metrics_port,
        proxy,
    })
}

async fn run_scenarios(
    certpin: &Path,
    reloader: &Path,
    out: &Path,
    cache: &Path,
    only: &[String],
) -> Result<()> {
    let client = kube::Client::try_default().await?;
    install_crd(&client).await?;
    let dir = cache.join(format!("scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench: logs in {}", dir.display());
    let pool = pool::ensure(cache, 1 + scenarios::CHANGE_FILES).await?;
    let bins = scenarios::Bins { certpin, reloader };
    let rows = scenarios::run_all(&client, &bins, &pool, 0, &dir, only).await?;
    let mut report: serde_json::Value = match std::fs::read_to_string(out) {
        Ok(text) => serde_json::from_str(&text)?,
        Err(_) => json!({}),
    };
    // Rows of scenarios not run this time stay.
    let mut all: Vec<serde_json::Value> = report["scenarios"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            !rows
                .iter()
                .any(|n| Some(n.scenario.as_str()) == r["scenario"].as_str())
        })
        .collect();
    all.extend(
        rows.iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?,
    );
    report["scenarios"] = json!(all);
    report["scenarios_reloader_kind"] = json!(std::env::var("CERTPIN_BENCH_RELOADER_KIND").ok());
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench: wrote the scenarios to {}", out.display());
    Ok(())
}

async fn populate(ns: &str, n: usize, noise: usize, cache: &Path) -> Result<()> {
    let client = kube::Client::try_default().await?;
    install_crd(&client).await?;
    let pool = pool::ensure(cache, 2 * n).await?;
    workload::noise(&client, "bench-noise", noise).await?;
    workload::apps(&client, &workload::Spread::one(ns), n, &pool, 1).await?;
    let sets: Api<certpin::resource::ClientCertificateSet> = Api::namespaced(client.clone(), ns);
    for i in 0..n {
        workload::create_ignoring_exists(&sets, &workload::set(i)?).await?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let started = k8s_openapi::jiff::Timestamp::now().to_string();
    let version = client.apiserver_version().await?.git_version;
    let dir = args.cache.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench: logs in {}", dir.display());
    install_crd(&client).await?;
    let max_n = args.sizes.iter().copied().max().unwrap_or(1);
    let pool = pool::ensure(&args.cache, 2 * max_n + 2 * args.rotations).await?;
    let rotation_file = |r: usize| pool.file(2 * max_n + r);
    workload::noise(&client, "bench-noise", args.noise).await?;

    // Reloader's own namespace of annotated apps; Reloader itself starts
    // for each size once certpin has converged (`start_reloader`).
    if args.reloader.is_some() {
        let ns = "bench-reloader";
        workload::namespace(&client, ns).await?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), ns);
        for r in 0..args.rotations {
            let s = workload::pkcs12_secret(&format!("rl-{r}"), &rotation_file(r)?)?;
            let d = workload::deployment(
                &format!("rl-app-{r}"),
                json!({"secret.reloader.stakater.com/reload": format!("rl-{r}")}),
                1,
            )?;
            // Created once and then only rotated: resetting the content would
            // let a rotation land on content Reloader already annotated.
            workload::create_ignoring_exists(&secrets, &s).await?;
            workload::create_ignoring_exists(&deployments, &d).await?;
        }
    }

    let mut sizes = Vec::new();
    for &n in &args.sizes {
        eprintln!("bench: N={n}");
        let per = args.apps_per_namespace;
        let ns_floor = workload::Spread::new(&format!("bench-{n}-floor"), n, per);
        let ns_cp = workload::Spread::new(&format!("bench-{n}-certpin"), n, per);
        let both: Vec<&str> = ns_floor.names().into_iter().chain(ns_cp.names()).collect();
        // What certpin (and Reloader) watch: the unrelated Secrets' namespace
        // and this size's certpin namespaces.
        let watched: Vec<&str> = std::iter::once("bench-noise")
            .chain(ns_cp.names())
            .collect();
        // Left over from an interrupted run.
        workload::teardown(&client, &both).await?;
        workload::apps(&client, &ns_floor, n, &pool, args.replicas).await?;
        workload::apps(&client, &ns_cp, n, &pool, args.replicas).await?;
        let mut result = SizeResult {
            n,
            replicas: args.replicas,
            apps_per_namespace: if ns_cp.namespaces.len() > 1 { per } else { 0 },
            ..Default::default()
        };

        // The floor.
        let fproxy = proxy::start(client.clone(), &dir, &format!("floor-{n}")).await?;
        let exe = std::env::current_exe()?;
        let mut floor = Program::spawn(
            &format!("floor-{n}"),
            &exe,
            &[
                "floor".into(),
                format!("--namespace={}", ns_floor.namespaces.join(",")),
                format!("--concurrency={}", args.concurrency),
            ],
            &[(
                "KUBECONFIG",
                fproxy.kubeconfig.to_string_lossy().into_owned(),
            )],
            &dir,
        )?;
        let counts = fproxy.counts.clone();
        wait_for("the floor's watch", Duration::from_secs(60), || {
            let open = counts.watches.load(std::sync::atomic::Ordering::Relaxed);
            let running = floor.check_running();
            async move {
                running?;
                Ok(open >= 1)
            }
        })
        .await?;
        let obs = workload::observe(&client, &ns_floor).await?;
        let (w0, r0, v0) = (
            fproxy.counts.writes(),
            fproxy.counts.reads(),
            fproxy.counts.by_verb(),
        );
        let (t0, c0) = (Instant::now(), procs::cpu_seconds(floor.pid()?)?);
        workload::converge(&client, &ns_floor, n, &obs).await?;
        let (ready, rollout) = workload::latencies(&obs.clocks, n);
        result.floor = Convergence {
            ready: summarize(&ready),
            rollout: summarize(&rollout),
            writes_per_set: (fproxy.counts.writes() - w0) as f64 / n as f64,
            reads_per_set: (fproxy.counts.reads() - r0) as f64 / n as f64,
            requests_per_set: per_set(&v0, &fproxy.counts.by_verb(), n),
            wall_seconds: t0.elapsed().as_secs_f64(),
            cpu_seconds: procs::cpu_seconds(floor.pid()?)? - c0,
        };
        drop(obs);
        floor.stop().await?;

        // certpin.
        let cp = start_certpin(
            &client,
            &args.certpin,
            args.concurrency,
            &dir,
            &format!("certpin-{n}"),
            &watched,
            None,
        )
        .await?;
        let pid = cp.program.pid()?;
        let obs = workload::observe(&client, &ns_cp).await?;
        let (w0, r0, v0) = (
            cp.proxy.counts.writes(),
            cp.proxy.counts.reads(),
            cp.proxy.counts.by_verb(),
        );
        let (t0, c0) = (Instant::now(), procs::cpu_seconds(pid)?);
        workload::converge(&client, &ns_cp, n, &obs).await?;
        let (ready, rollout) = workload::latencies(&obs.clocks, n);
        result.certpin = Convergence {
            ready: summarize(&ready),
            rollout: summarize(&rollout),
            writes_per_set: (cp.proxy.counts.writes() - w0) as f64 / n as f64,
            reads_per_set: (cp.proxy.counts.reads() - r0) as f64 / n as f64,
            requests_per_set: per_set(&v0, &cp.proxy.counts.by_verb(), n),
            wall_seconds: t0.elapsed().as_secs_f64(),
            cpu_seconds: procs::cpu_seconds(pid)? - c0,
        };
        drop(obs);
        result.ready_ratio_median = result.certpin.ready.median_ms / result.floor.ready.median_ms;
        result.ready_ratio_p99 = result.certpin.ready.p99_ms / result.floor.ready.p99_ms;
        result.rollout_ratio_median =
            result.certpin.rollout.median_ms / result.floor.rollout.median_ms;

        // Reloader, scoped as certpin is (`watched`) and to its own
        // namespace, from here to the end of
        // the size: running through certpin's convergence it would load the
        // API server (its informers take every Secret certpin writes) in
        // certpin's phase and not in the floor's.
        let mut reloader = match &args.reloader {
            Some(bin) => {
                let scope: Vec<String> = watched
                    .iter()
                    .chain(&["bench-reloader"])
                    .map(|ns| ns.to_string())
                    .collect();
                let files = [rotation_file(0)?, rotation_file(1)?];
                Some(
                    start_reloader(&client, bin, &scope, &dir, &format!("reloader-{n}"), &files)
                        .await?,
                )
            }
            None => None,
        };

        // Rotation, alternating certpin and Reloader.
        let mut rot_cp = Vec::new();
        let mut rot_rl = Vec::new();
        for r in 0..args.rotations {
            let i = (r * 7919) % n;
            let which = if r % 2 == 0 { 'a' } else { 'b' };
            rot_cp.push(
                workload::rotate(
                    &client,
                    ns_cp.of(i),
                    &workload::secret_name(i, which),
                    &workload::app_name(i),
                    [&rotation_file(r)?, &rotation_file(r + args.rotations)?],
                )
                .await?,
            );
            if let Some(program) = reloader.as_mut() {
                program.check_running()?;
                let (a, b) = (rotation_file(r)?, rotation_file(r + args.rotations)?);
                rot_rl.push(
                    workload::rotate(
                        &client,
                        "bench-reloader",
                        &format!("rl-{r}"),
                        &format!("rl-app-{r}"),
                        [&a, &b],
                    )
                    .await?,
                );
            }
        }
        result.rotation_certpin = summarize(&rot_cp);
        result.rotation_reloader = reloader.as_ref().map(|_| summarize(&rot_rl));

        // The last rotation's rollout has completed (rotate waits for it);
        // certpin says so on the set's status. Waited for here, so that the
        // restarted operator's writes are its own and not this one's tail.
        wait_for(
            "every set Ready after the rotations",
            Duration::from_secs(120),
            || async {
                let mut ready = 0;
                for ns in &ns_cp.namespaces {
                    let sets: Api<ClientCertificateSet> = Api::namespaced(client.clone(), ns);
                    let list = sets.list(&Default::default()).await?;
                    ready += list.items.iter().filter(|s| workload::set_ready(s)).count();
                }
                Ok(ready >= n)
            },
        )
        .await?;

        // Footprint of the converged operator.
        let text = scrape(cp.metrics_port).await?;
        let reconciles = metric(&text, "certpin_reconciliations_total");
        result.certpin_reconciles_convergence = reconciles;
        result.certpin_cpu_seconds_per_1000_reconciles =
            procs::cpu_seconds(pid)? / reconciles.max(1) as f64 * 1000.0;
        result.certpin_memory_convergence = procs::memory(pid)?;
        cp.program.stop().await?;

        // Idle: a restarted operator, then one forced resync.
        let cp = start_certpin(
            &client,
            &args.certpin,
            args.concurrency,
            &dir,
            &format!("certpin-{n}-restarted"),
            &watched,
            Some(args.resync_seconds),
        )
        .await?;
        let port = cp.metrics_port;
        let read = || async move {
            let t = scrape(port).await?;
            Ok::<(u64, u64), anyhow::Error>((
                metric(&t, "certpin_reconciliations_total"),
                metric(&t, "certpin_pkcs12_decodes_total"),
            ))
        };
        wait_for(
            "the restarted operator's first pass",
            Duration::from_secs(120 + n as u64),
            || async { Ok(read().await?.0 >= n as u64) },
        )
        .await?;
        let (r1, d1) = read().await?;
        let timeout = Duration::from_secs(3 * args.resync_seconds + 60 + n as u64);
        wait_for("a forced resync of every set", timeout, || async {
            Ok(read().await?.0 >= r1 + n as u64)
        })
        .await?;
        let (r2, d2) = read().await?;
        result.idle = Idle {
            writes: cp.proxy.counts.writes(),
            reconciles_after_restart: r1,
            decodes_after_restart: d1,
            reconciles_in_resync: r2 - r1,
            decodes_in_resync: d2 - d1,
            requests: cp.proxy.counts.by_verb(),
        };
        result.certpin_decodes_per_reconcile_steady = (d2 - d1) as f64 / (r2 - r1).max(1) as f64;
        result.certpin_memory_steady = procs::memory(cp.program.pid()?)?;
        cp.program.stop().await?;
        if let Some(p) = reloader.take() {
            result.reloader_memory = Some(procs::memory(p.pid()?)?);
            p.stop().await?;
        }
        eprintln!("bench: N={n}: {}", serde_json::to_string(&result)?);
        sizes.push(result);
        // Written after each size, so that a long run cut short keeps what
        // it measured; later writes of this run merge with the first.
        write_report(
            &args,
            &started,
            &version,
            &sizes,
            args.merge || sizes.len() > 1,
        )?;
        workload::teardown(&client, &both).await?;
    }
    Ok(())
}

/// Starts Reloader straight to the API server (the bench's own kubeconfig:
/// through the counting proxy its watches went quiet after a while, and its
/// write count is not a figure here), and returns once it has reacted to a
/// warm-up rotation (not counted): its caches are synced then.
async fn start_reloader(
    client: &Client,
    bin: &Path,
    scope: &[String],
    dir: &Path,
    tag: &str,
    files: &[Vec<u8>; 2],
) -> Result<Program> {
    let env = [(
        "KUBECONFIG",
        std::env::var("KUBECONFIG").context("KUBECONFIG must name the test bed")?,
    )];
    let mut program = Program::spawn(tag, bin, &reloader_args(scope), &env, dir)?;
    let mut warm = Err(anyhow::anyhow!("not tried"));
    for _ in 0..6 {
        // Reloader exits at once when its metrics port is taken (seen:
        // "listen tcp :9090: bind: address already in use"); a rotation
        // timed against a Reloader that is gone only times out.
        program.check_running()?;
        warm = workload::rotate(
            client,
            "bench-reloader",
            "rl-0",
            "rl-app-0",
            [&files[0], &files[1]],
        )
        .await;
        if warm.is_ok() {
            break;
        }
    }
    warm.context("Reloader never reacted to a Secret change")?;
    program.check_running()?;
    Ok(program)
}

/// Writes this run's sizes to `--out`; with `merge`, the sizes there that
/// this run did not measure (other N or replicas) and the scenarios stay.
fn write_report(
    args: &RunArgs,
    started: &str,
    version: &str,
    sizes: &[SizeResult],
    merge: bool,
) -> Result<()> {
    let report = Report {
        started: started.to_string(),
        machine: machine(),
        kubernetes: version.to_string(),
        noise_secrets: args.noise,
        concurrency: args.concurrency,
        rotations: args.rotations,
        reloader: args.reloader.as_ref().map(|p| p.display().to_string()),
        reloader_kind: std::env::var("CERTPIN_BENCH_RELOADER_KIND").ok(),
        sizes,
    };
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut value = serde_json::to_value(&report)?;
    if merge && let Ok(text) = std::fs::read_to_string(&args.out) {
        let old: serde_json::Value = serde_json::from_str(&text)?;
        let measured = |s: &serde_json::Value| {
            report.sizes.iter().any(|r| {
                Some(r.n as u64) == s["n"].as_u64()
                    && Some(r.replicas as i64) == s["replicas"].as_i64().or(Some(1))
                    && Some(r.apps_per_namespace as u64)
                        == s["apps_per_namespace"].as_u64().or(Some(0))
            })
        };
        let mut sizes: Vec<serde_json::Value> = old["sizes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !measured(s))
            .collect();
        sizes.extend(value["sizes"].as_array().cloned().unwrap_or_default());
        sizes.sort_by_key(|s| {
            (
                s["replicas"].as_i64().unwrap_or(1) == 0,
                s["n"].as_u64(),
                s["apps_per_namespace"].as_u64(),
            )
        });
        value["sizes"] = json!(sizes);
        for k in ["scenarios", "scenarios_reloader_kind"] {
            if !old[k].is_null() {
                value[k] = old[k].clone();
            }
        }
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&value)?)?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}

/// Reloader's flags: the annotation strategy (a pod-template annotation, as
/// certpin's Rolling does), the namespaces it watches (its scoped mode),
/// extra flags from CERTPIN_BENCH_RELOADER_ARGS.
fn reloader_args(namespaces: &[String]) -> Vec<String> {
    let mut a = vec![
        "--reload-strategy=annotations".to_string(),
        format!("--namespaces={}", namespaces.join(",")),
    ];
    if let Ok(extra) = std::env::var("CERTPIN_BENCH_RELOADER_ARGS") {
        a.extend(extra.split_whitespace().map(str::to_string));
    }
    a
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    format!("{cores} cores, {} GiB", mem / 1024 / 1024)
}

#[cfg(test)]
mod tests {
    use super::metric;
    use axum::http::Method;
    use certpin_testkit::proxy;

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/s",
                false,
                "get secrets",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets",
                false,
                "list secrets",
            ),
            (Method::GET, "/api/v1/secrets", true, "watch secrets"),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d",
                false,
                "patch deployments",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                false,
                "patch deployments/scale",
            ),
            (
                Method::PUT,
                "/apis/certpin.dev/v1alpha1/namespaces/a/clientcertificatesets/s/status",
                false,
                "update clientcertificatesets/status",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/events",
                false,
                "create events",
            ),
            (
                Method::POST,
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                false,
                "create subjectaccessreviews",
            ),
            (Method::GET, "/api/v1/namespaces/a", false, "get namespaces"),
            (Method::GET, "/version", false, "get /version"),
            (Method::GET, "/api/v1", false, "get /api/v1"),
        ];
        for (m, path, watch, want) in cases {
            assert_eq!(
                proxy::verb_and_resource(&m, path, watch),
                want,
                "{m} {path}"
            );
        }
    }

    #[test]
    fn metric_sums_every_label_set_and_ignores_longer_names() {
        let text = "# HELP x\ncertpin_reconciliations_total{result=\"ok\"} 7\n\
                    certpin_reconciliations_total{result=\"error\"} 2\n\
                    certpin_reconciliations_total_extra 100\ncertpin_pkcs12_decodes_total 5\n";
        assert_eq!(metric(text, "certpin_reconciliations_total"), 9);
        assert_eq!(metric(text, "certpin_pkcs12_decodes_total"), 5);
    }
}
