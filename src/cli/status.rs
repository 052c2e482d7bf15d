//! `certpin status`: the sets of a namespace (or of all), a row each, as
//! certpin last reported them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::Args;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};

use super::cluster::{self, ClusterError, to_chrono, when};
use crate::names::{ANN_RESTARTED_AT, LABEL_SET_UID};
use crate::resource::{ClientCertificateSet, WorkloadKind};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The namespace (default: the kubeconfig context's, as kubectl).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The sets of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only this set.
    pub set: Option<String>,
}

/// One set's row, each cell as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cells: [String; 7],
}

const HEADER: [&str; 7] = [
    "NAMESPACE",
    "NAME",
    "READY",
    "REASON",
    "EARLIEST EXPIRY",
    "WORKLOAD",
    "LAST RESTART",
];

/// When certpin last restarted each wired workload, by the annotation it
/// writes with the restart (a pass may end before its status says so).
pub type Restarts = BTreeMap<(String, WorkloadKind, String), DateTime<Utc>>;

pub fn row(set: &ClientCertificateSet, restarts: &Restarts, now: DateTime<Utc>) -> Row {
    let status = set.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let (kind, name) = set.spec.app.target();
    let ns = set.namespace().unwrap_or_default();
    let recorded = status
        .and_then(|s| s.last_restart.as_ref())
        .and_then(to_chrono);
    let annotated = restarts.get(&(ns.clone(), kind, name.to_string())).copied();
    let last_restart = recorded.max(annotated);
    let expiry = status
        .and_then(|s| s.earliest_expiry.as_ref())
        .and_then(to_chrono);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    Row {
        cells: [
            ns,
            set.name_any(),
            ready.map_or_else(|| "Unknown".into(), |c| c.status.clone()),
            or_dash(ready.map(|c| c.reason.clone()).filter(|r| !r.is_empty())),
            or_dash(expiry.map(|t| when(t, now))),
            format!("{}/{name}", kind.kubectl_name()),
            or_dash(last_restart.map(|t| when(t, now))),
        ],
    }
}

/// The rows under the header, columns padded as kubectl's.
pub fn table(rows: &[Row]) -> String {
    let header = Row {
        cells: HEADER.map(str::to_string),
    };
    let all: Vec<&Row> = std::iter::once(&header).chain(rows).collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| {
            all.iter()
                .map(|r| r.cells[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in all {
        let line: Vec<String> = r
            .cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

pub fn run(args: &StatusArgs) -> i32 {
    cluster::block_on(status(args))
}

async fn status(args: &StatusArgs) -> Result<i32, ClusterError> {
    let (client, ns) = cluster::connect(args.namespace.as_deref()).await?;
    let scope = (!args.all_namespaces).then_some(ns.as_str());
    let sets = sets(&client, scope, args.set.as_deref()).await?;
    let place = scope.map_or("any namespace".to_string(), |ns| format!("namespace {ns}"));
    if sets.is_empty() {
        return Ok(match &args.set {
            Some(name) => {
                eprintln!("certpin: no ClientCertificateSet {name:?} in {place}");
                1
            }
            None => {
                eprintln!("No ClientCertificateSets in {place}.");
                0
            }
        });
    }
    let restarts = restarts(&client, scope).await;
    let now = Utc::now();
    let rows: Vec<Row> = sets.iter().map(|s| row(s, &restarts, now)).collect();
    print!("{}", table(&rows));
    Ok(0)
}

async fn sets(
    client: &Client,
    scope: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<ClientCertificateSet>, ClusterError> {
    let api: Api<ClientCertificateSet> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default();
    if let Some(name) = name {
        params = params.fields(&format!("metadata.name={name}"));
    }
    let mut sets = api.list(&params).await?.items;
    sets.sort_by_key(|s| (s.namespace(), s.name_any()));
    Ok(sets)
}

/// The restart annotations of the workloads certpin wired (its claim
/// label finds them). Without the right to list them, the status alone
/// tells.
async fn restarts(client: &Client, scope: Option<&str>) -> Restarts {
    let params = ListParams::default().labels(LABEL_SET_UID);
    let (deployments, stateful_sets) = futures::join!(
        list_metadata::<Deployment>(client, scope, &params),
        list_metadata::<StatefulSet>(client, scope, &params),
    );
    let deployments = deployments
        .into_iter()
        .map(|m| (WorkloadKind::Deployment, m.metadata));
    let stateful_sets = stateful_sets
        .into_iter()
        .map(|m| (WorkloadKind::StatefulSet, m.metadata));
    deployments
        .chain(stateful_sets)
        .filter_map(|(kind, m)| {
            let at = m
                .annotations
                .as_ref()?
                .get(ANN_RESTARTED_AT)?
                .parse()
                .ok()?;
            Some(((m.namespace?, kind, m.name?), at))
        })
        .collect()
}

async fn list_metadata<K>(
    client: &Client,
    scope: Option<&str>,
    params: &ListParams,
) -> Vec<PartialObjectMeta<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list_metadata(params)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, status: serde_json::Value) -> ClientCertificateSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"app": {"deployment": "app"}}, "status": status,
        }))
        .expect("a set")
    }

    fn ready(status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"type": "Ready", "status": status, "reason": reason,
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_ready_and_a_stalled_set_and_one_not_yet_seen_line_up_under_the_header() {
        let now: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().expect("time");
        let good = set(
            "good",
            serde_json::json!({"conditions": [ready("True", "Applied")],
                "earliestExpiry": "2026-03-03T00:00:00Z",
                "lastRestart": "2026-01-01T23:00:00Z"}),
        );
        let stalled = set(
            "stalled",
            serde_json::json!({"conditions": [ready("False", "WrongPassword")]}),
        );
        // The workload's annotation is later than the status: it wins.
        let restarts = Restarts::from([(
            (
                "shop".to_string(),
                WorkloadKind::Deployment,
                "app".to_string(),
            ),
            "2026-01-01T23:55:00Z".parse().expect("time"),
        )]);
        let rows = [
            row(&good, &restarts, now),
            row(&stalled, &Restarts::new(), now),
            row(&set("new", serde_json::Value::Null), &Restarts::new(), now),
        ];
        let expected = "\
NAMESPACE   NAME      READY     REASON          EARLIEST EXPIRY                 WORKLOAD         LAST RESTART
shop        good      True      Applied         2026-03-03T00:00:00Z (in 60d)   deployment/app   2026-01-01T23:55:00Z (5m ago)
shop        stalled   False     WrongPassword   -                               deployment/app   -
shop        new       Unknown   -               -                               deployment/app   -
";
        assert_eq!(table(&rows), expected);
    }
}
