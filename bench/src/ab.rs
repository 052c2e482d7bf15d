//! Two certpin binaries on one test bed, in the order A B B A (per round), so
//! that a shared machine's drift falls on both alike: the way to tell whether
//! a change made certpin faster, where full runs on different days cannot.
//!
//! Each run converges N new sets in a namespace of its own, whose apps were
//! made (and rolled out) before the first run. It is timed as `run` times
//! convergence (create to Ready, create to rollout complete), and the CPU
//! seconds of certpin, the API server and etcd are read from /proc between
//! the first create and the last set Ready.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::procs::{self, cpu_seconds};
use crate::stats::{Summary, summarize};
use crate::{install_crd, pool, start_certpin, wait_for, workload};

#[derive(clap::Args)]
pub struct AbArgs {
    /// The baseline certpin binary (release build).
    #[arg(long)]
    a: PathBuf,
    /// The candidate certpin binary.
    #[arg(long)]
    b: PathBuf,
    /// Sets converged per run.
    #[arg(long, default_value_t = 300)]
    sets: usize,
    /// Rounds of A B B A.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Unrelated Secrets in a namespace every run also watches.
    #[arg(long, default_value_t = 0)]
    noise: usize,
    /// certpin's reconcile concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Where results go (JSON).
    #[arg(long, default_value = "bench/ab.json")]
    out: PathBuf,
    /// Cache for the generated PKCS12 files, logs and kubeconfigs.
    #[arg(long, env = "CERTPIN_BENCH_CACHE")]
    cache: PathBuf,
}

#[derive(Serialize, Debug)]
struct Run {
    binary: &'static str,
    namespace: String,
    ready: Summary,
    rollout: Summary,
    /// From the first create to the last set Ready.
    all_ready_s: f64,
    certpin_cpu_s: f64,
    apiserver_cpu_s: Option<f64>,
    etcd_cpu_s: Option<f64>,
    writes_per_set: f64,
    reads_per_set: f64,
    /// Resident memory when the last set was Ready.
    certpin_rss_mib: f64,
}

/// Means over one binary's runs (A B B A: a linear drift cancels).
#[derive(Serialize, Debug, Default, PartialEq)]
struct Means {
    ready_median_ms: f64,
    ready_p99_ms: f64,
    all_ready_s: f64,
    certpin_cpu_s: f64,
    apiserver_cpu_s: Option<f64>,
    etcd_cpu_s: Option<f64>,
}

#[derive(Serialize)]
struct AbResult {
    started: String,
    a: String,
    b: String,
    sets: usize,
    noise: usize,
    concurrency: u16,
    runs: Vec<Run>,
    mean_a: Means,
    mean_b: Means,
}

/// A B B A, `rounds` times.
fn order(rounds: usize) -> Vec<&'static str> {
    (0..rounds).flat_map(|_| ["A", "B", "B", "A"]).collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

fn means(runs: &[Run], binary: &str) -> Means {
    let of = || runs.iter().filter(|r| r.binary == binary);
    let optional = |f: fn(&Run) -> Option<f64>| -> Option<f64> {
        of().map(f)
            .collect::<Option<Vec<f64>>>()
            .map(|v| mean(v.into_iter()))
    };
    Means {
        ready_median_ms: mean(of().map(|r| r.ready.median_ms)),
        ready_p99_ms: mean(of().map(|r| r.ready.p99_ms)),
        all_ready_s: mean(of().map(|r| r.all_ready_s)),
        certpin_cpu_s: mean(of().map(|r| r.certpin_cpu_s)),
        apiserver_cpu_s: optional(|r| r.apiserver_cpu_s),
        etcd_cpu_s: optional(|r| r.etcd_cpu_s),
    }
}

/// CPU seconds of the test bed's API server and etcd, when found.
pub fn control_plane() -> (Option<u32>, Option<u32>) {
    let name = std::env::var("CERTPIN_TESTBED_NAME").unwrap_or_else(|_| "certpin-bench".into());
    let marker = format!("clusters/{name}/");
    (
        procs::find("kube-apiserver", &marker),
        procs::find("etcd", &marker),
    )
}

pub fn cpu_of(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| cpu_seconds(p).ok())
}

pub async fn ab(args: AbArgs) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let started = k8s_openapi::jiff::Timestamp::now().to_string();
    let dir = args.cache.join(format!("ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench ab: logs in {}", dir.display());
    install_crd(&client).await?;
    let pool = pool::ensure(&args.cache, 2 * args.sets).await?;
    if args.noise > 0 {
        workload::noise(&client, "bench-noise", args.noise).await?;
    }
    let (apiserver, etcd) = control_plane();
    if apiserver.is_none() || etcd.is_none() {
        eprintln!(
            "bench ab: the test bed's kube-apiserver or etcd was not found; their CPU is not reported"
        );
    }
    let order = order(args.rounds);
    // Every namespace's apps first, so that no run shares the machine with
    // the rollouts of the next one's apps.
    let tag = std::process::id();
    let namespaces: Vec<String> = (0..order.len()).map(|k| format!("ab-{tag}-{k}")).collect();
    for ns in &namespaces {
        eprintln!("bench ab: {} apps in {ns}", args.sets);
        workload::apps(&client, &workload::Spread::one(ns), args.sets, &pool, 1).await?;
    }

    let mut runs = Vec::new();
    for (k, (binary, ns)) in order.iter().zip(&namespaces).enumerate() {
        let bin = if *binary == "A" { &args.a } else { &args.b };
        eprintln!(
            "bench ab: run {} of {}: {binary} in {ns}",
            k + 1,
            order.len()
        );
        let mut watched = vec![ns.as_str()];
        if args.noise > 0 {
            watched.push("bench-noise");
        }
        let mut cp = start_certpin(
            &client,
            bin,
            args.concurrency,
            &dir,
            &format!("{binary}-{k}"),
            &watched,
            None,
        )
        .await?;
        let pid = cp.program.pid()?;
        let obs = workload::observe(&client, &workload::Spread::one(ns)).await?;
        let (w0, r0) = (cp.proxy.counts.writes(), cp.proxy.counts.reads());
        let (c0, a0, e0) = (cpu_seconds(pid)?, cpu_of(apiserver), cpu_of(etcd));
        let t0 = Instant::now();
        workload::create_sets(&client, &workload::Spread::one(ns), args.sets, &obs.clocks).await?;
        let n = args.sets;
        let clocks = obs.clocks.clone();
        let timeout = Duration::from_secs(120 + n as u64);
        let rolled_out_by = Instant::now() + timeout + Duration::from_secs(n as u64);
        wait_for("every set Ready", timeout, || {
            let ready = clocks.ready.lock().map(|m| m.len()).unwrap_or(0);
            let running = cp.program.check_running();
            async move { running.map(|()| ready >= n) }
        })
        .await
        .with_context(|| format!("in {ns}"))?;
        let (c1, a1, e1) = (cpu_seconds(pid)?, cpu_of(apiserver), cpu_of(etcd));
        let rss = procs::memory(pid)?.rss;
        let (w1, r1) = (cp.proxy.counts.writes(), cp.proxy.counts.reads());
        // From the watch's clock, not from when the wait above noticed.
        let all_ready_s = clocks
            .ready
            .lock()
            .ok()
            .and_then(|m| m.values().max().copied())
            .map_or(f64::NAN, |t| t.saturating_duration_since(t0).as_secs_f64());
        // Untimed: the rollouts finish before the next run starts.
        wait_for(
            "every app rolled out",
            rolled_out_by.saturating_duration_since(Instant::now()),
            || {
                let rolled = clocks.rolled_out.lock().map(|m| m.len()).unwrap_or(0);
                async move { Ok(rolled >= n) }
            },
        )
        .await
        .with_context(|| format!("in {ns}"))?;
        let (ready, rollout) = workload::latencies(&obs.clocks, n);
        drop(obs);
        cp.program.stop().await.context("stopping certpin")?;
        let run = Run {
            binary,
            namespace: ns.clone(),
            ready: summarize(&ready),
            rollout: summarize(&rollout),
            all_ready_s,
            certpin_cpu_s: c1 - c0,
            apiserver_cpu_s: a0.zip(a1).map(|(a, b)| b - a),
            etcd_cpu_s: e0.zip(e1).map(|(a, b)| b - a),
            writes_per_set: (w1 - w0) as f64 / n as f64,
            reads_per_set: (r1 - r0) as f64 / n as f64,
            certpin_rss_mib: rss as f64 / (1024.0 * 1024.0),
        };
        eprintln!("bench ab: {run:?}");
        runs.push(run);
    }
    let result = AbResult {
        started,
        a: args.a.display().to_string(),
        b: args.b.display().to_string(),
        sets: args.sets,
        noise: args.noise,
        concurrency: args.concurrency,
        mean_a: means(&runs, "A"),
        mean_b: means(&runs, "B"),
        runs,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    print!("{}", table(&result));
    eprintln!(
        "bench ab: wrote {}; the namespaces {} stay (scripts/testbed down removes them with the test bed)",
        args.out.display(),
        namespaces.join(", ")
    );
    Ok(())
}

fn ratio(b: f64, a: f64) -> String {
    format!("{:.3}", b / a)
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The runs and the means of each binary, B / A, as Markdown.
fn table(r: &AbResult) -> String {
    let mut out = format!(
        "A = {}\nB = {}\n{} sets per run, concurrency {}\n\n| run | binary | Ready median ms | Ready p99 ms | all Ready s | certpin CPU s | API server CPU s | etcd CPU s | writes/set | reads/set | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        r.a, r.b, r.sets, r.concurrency
    );
    for (k, run) in r.runs.iter().enumerate() {
        out += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            k + 1,
            run.binary,
            run.ready.median_ms,
            run.ready.p99_ms,
            run.all_ready_s,
            run.certpin_cpu_s,
            opt(run.apiserver_cpu_s),
            opt(run.etcd_cpu_s),
            run.writes_per_set,
            run.reads_per_set,
            run.certpin_rss_mib,
        );
    }
    let (a, b) = (&r.mean_a, &r.mean_b);
    let both = |x: Option<f64>, y: Option<f64>| x.zip(y).map_or("-".into(), |(x, y)| ratio(y, x));
    out += &format!(
        "\nB / A (means over each binary's runs): Ready median {}, Ready p99 {}, all Ready {}, certpin CPU {}, API server CPU {}, etcd CPU {}\n",
        ratio(b.ready_median_ms, a.ready_median_ms),
        ratio(b.ready_p99_ms, a.ready_p99_ms),
        ratio(b.all_ready_s, a.all_ready_s),
        ratio(b.certpin_cpu_s, a.certpin_cpu_s),
        both(a.apiserver_cpu_s, b.apiserver_cpu_s),
        both(a.etcd_cpu_s, b.etcd_cpu_s),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(binary: &'static str, median: f64, cpu: f64, apiserver: Option<f64>) -> Run {
        Run {
            binary,
            namespace: String::new(),
            ready: Summary {
                count: 1,
                median_ms: median,
                p99_ms: median,
                max_ms: median,
            },
            rollout: Summary::default(),
            all_ready_s: median / 1000.0,
            certpin_cpu_s: cpu,
            apiserver_cpu_s: apiserver,
            etcd_cpu_s: None,
            writes_per_set: 0.0,
            reads_per_set: 0.0,
            certpin_rss_mib: 0.0,
        }
    }

    #[test]
    fn runs_alternate_so_that_a_linear_drift_falls_on_both_alike() {
        assert_eq!(order(2), ["A", "B", "B", "A", "A", "B", "B", "A"]);
        // A drift of +100 ms per run on identical binaries: equal means.
        let runs: Vec<Run> = order(1)
            .into_iter()
            .enumerate()
            .map(|(k, b)| run(b, 1000.0 + 100.0 * k as f64, 1.0, Some(2.0)))
            .collect();
        assert_eq!(means(&runs, "A"), means(&runs, "B"));
        assert_eq!(means(&runs, "A").ready_median_ms, 1150.0);
    }

    #[test]
    fn a_figure_missing_from_any_run_is_missing_from_the_mean() {
        let runs = [run("A", 1.0, 1.0, Some(3.0)), run("A", 1.0, 1.0, None)];
        assert_eq!(means(&runs, "A").apiserver_cpu_s, None);
        assert_eq!(means(&runs, "A").certpin_cpu_s, 1.0);
        assert!(
            table(&AbResult {
                started: String::new(),
                a: "a".into(),
                b: "b".into(),
                sets: 1,
                noise: 0,
                concurrency: 1,
                mean_a: means(&runs, "A"),
                mean_b: means(&runs, "A"),
                runs: runs.into(),
            })
            .contains("API server CPU -")
        );
    }
}
