//! `certpin reconcile`: asks certpin for a pass over a set now (the
//! reconcile request annotation) and waits until a pass has handled it.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use futures::StreamExt as _;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};

use super::cluster::{self, ClusterError};
use crate::names::ANN_RECONCILE_REQUESTED;
use crate::resource::ClientCertificateSet;

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// The set.
    pub set: String,
    /// Its namespace (default: the kubeconfig context's, as kubectl).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How long to wait for certpin's pass: e.g. 60s, 2m, 500ms (a bare
    /// number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 60s or 2m"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{s:?}: the unit is one of ms, s, m, h")),
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
}

pub fn run(args: &ReconcileArgs) -> i32 {
    cluster::block_on(reconcile(args))
}

async fn reconcile(args: &ReconcileArgs) -> Result<i32, ClusterError> {
    let (client, ns) = cluster::connect(args.namespace.as_deref()).await?;
    let api: Api<ClientCertificateSet> = Api::namespaced(client, &ns);
    let requested = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let patch =
        serde_json::json!({"metadata": {"annotations": {ANN_RECONCILE_REQUESTED: requested}}});
    api.patch(&args.set, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" => ClusterError(
                format!("no ClientCertificateSet {:?} in namespace {ns}", args.set),
            ),
            _ => e.into(),
        })?;
    let mut last_error = None;
    let waited = tokio::time::timeout(
        args.timeout,
        echoed(&api, &args.set, &requested, &mut last_error),
    )
    .await;
    match waited {
        Ok(Some(set)) => {
            println!("{ns}/{}: {}", args.set, ready_line(&set));
            Ok(0)
        }
        _ => {
            let seen = last_error.map_or(String::new(), |e| format!(" (the watch failed: {e})"));
            eprintln!(
                "certpin: {ns}/{}: no pass handled the request within {:?}{seen}: is certpin running, \
                 and watching namespace {ns}?",
                args.set, args.timeout
            );
            Ok(1)
        }
    }
}

/// The set once a pass has echoed `requested` (a watch: it sees the echo
/// however soon it comes, the initial list included). A failed watch is
/// retried with backoff; its latest error is kept for the message.
async fn echoed(
    api: &Api<ClientCertificateSet>,
    name: &str,
    requested: &str,
    last_error: &mut Option<watcher::Error>,
) -> Option<ClientCertificateSet> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(set) if handled(&set, requested) => return Some(set),
            Ok(_) => {}
            Err(e) => *last_error = Some(e),
        }
    }
    None
}

fn handled(set: &ClientCertificateSet, requested: &str) -> bool {
    set.status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_deref())
        == Some(requested)
}

/// `Ready=True (Applied): message`, as the pass left it.
pub fn ready_line(set: &ClientCertificateSet) -> String {
    let ready = set
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) => format!("Ready={} ({}): {}", c.status, c.reason, c.message),
        None => "Ready=Unknown: no Ready condition".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_kubectls_units() {
        assert_eq!(parse_timeout("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("1.5s").is_err());
        assert!(parse_timeout("s").is_err());
        assert!(parse_timeout("3d").is_err());
    }
}
