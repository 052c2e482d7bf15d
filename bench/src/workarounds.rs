//! Re-measures what two of certpin's workarounds (src/operator/workarounds)
//! buy, on the test bed, each against the same requests without it:
//!
//! - TCP_NODELAY: sequential server-side applies of a ConfigMap
//!   through kube's own client (Nagle on) and through certpin's client.
//! - Reads at a resourceVersion mark: GETs of one Secret as quorum reads
//!   and at its resourceVersion (answered by the watch cache), with the
//!   CPU the API server and etcd spend on them.
//!
//! The variants alternate in blocks, so drift of a shared machine falls on
//! both alike.

use std::time::Instant;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, GetParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

use crate::ab::{control_plane, cpu_of};
use crate::stats::{Summary, summarize};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per variant.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    #[arg(long, default_value = "bench-workarounds")]
    pub namespace: String,
    /// Size of each applied ConfigMap's value (certpin's rendered Secret
    /// is a few KiB per certificate).
    #[arg(long, default_value_t = 4096)]
    pub payload_bytes: usize,
}

#[derive(Serialize, Default)]
struct Variant {
    latency: Summary,
    apiserver_cpu_ms_per_request: Option<f64>,
    etcd_cpu_ms_per_request: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    requests: usize,
    apply_kube_client: Variant,
    apply_nodelay_client: Variant,
    get_quorum: Variant,
    get_at_resource_version: Variant,
}

const BLOCK: usize = 50;

pub async fn run(args: Args) -> Result<()> {
    let plain = Client::try_from(kube::Config::infer().await?)?;
    let nodelay = certpin::testing::client().await?;
    let ns = args.namespace.as_str();
    let namespaces: Api<Namespace> = Api::all(plain.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(nodelay.clone(), ns);
    let secret = secrets
        .patch(
            "read-me",
            &PatchParams::apply("certpin-bench").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "read-me"}, "stringData": {"k": "x".repeat(2048)}})),
        )
        .await?;
    let rv = secret
        .metadata
        .resource_version
        .context("no resourceVersion")?;

    let mut applies = [Vec::new(), Vec::new()];
    let mut gets = [Vec::new(), Vec::new()];
    let mut cpu = [(0.0, 0.0); 2];
    let (apiserver, etcd) = control_plane();
    let clients = [&plain, &nodelay];
    let mut n = 0;
    while n < args.requests {
        for (i, client) in clients.iter().enumerate() {
            let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), ns);
            for k in 0..BLOCK {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("apply-{i}")},
                    "data": {"v": format!("{}{}", n + k, "y".repeat(args.payload_bytes))}});
                let t = Instant::now();
                cms.patch(
                    &format!("apply-{i}"),
                    &PatchParams::apply("certpin-bench").force(),
                    &Patch::Apply(body),
                )
                .await?;
                applies[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        for (i, at) in [None, Some(rv.as_str())].into_iter().enumerate() {
            let params = GetParams {
                resource_version: at.map(str::to_string),
            };
            let (a0, e0) = (cpu_of(apiserver), cpu_of(etcd));
            for _ in 0..BLOCK {
                let t = Instant::now();
                secrets.get_with("read-me", &params).await?;
                gets[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let (a1, e1) = (cpu_of(apiserver), cpu_of(etcd));
            cpu[i].0 += a1.zip(a0).map(|(b, a)| b - a).unwrap_or(f64::NAN);
            cpu[i].1 += e1.zip(e0).map(|(b, a)| b - a).unwrap_or(f64::NAN);
        }
        n += BLOCK;
    }
    let per = |s: f64| (s.is_finite()).then(|| s * 1000.0 / n as f64);
    let get = |i: usize| Variant {
        latency: summarize(&gets[i]),
        apiserver_cpu_ms_per_request: per(cpu[i].0),
        etcd_cpu_ms_per_request: per(cpu[i].1),
    };
    let report = Report {
        requests: n,
        apply_kube_client: Variant {
            latency: summarize(&applies[0]),
            ..Variant::default()
        },
        apply_nodelay_client: Variant {
            latency: summarize(&applies[1]),
            ..Variant::default()
        },
        get_quorum: get(0),
        get_at_resource_version: get(1),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    namespaces.delete(ns, &DeleteParams::default()).await?;
    Ok(())
}
