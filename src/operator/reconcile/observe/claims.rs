//! Claims: which set a workload's wiring belongs to, and which workloads
//! other than the target still carry this set's.

use kube::Api;

use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::reconcile::kinds::{self, Workload};
use crate::operator::reconcile::workload;
use crate::resource::{ClientCertificateSet, WorkloadKind};

/// Whether workloads other than those the records name may carry this
/// set's claim, so that a pass must look for them: records of an earlier
/// version (none, though something was applied), a set edited before its
/// first status was written, or records naming another workload.
pub fn sweep_needed(set: &ClientCertificateSet) -> bool {
    // The schema default (observedGeneration 0) is not a status certpin wrote.
    let written = set
        .status
        .as_ref()
        .filter(|s| s.observed_generation.unwrap_or(0) > 0 || !s.conditions.is_empty());
    match written {
        None => set.metadata.generation.unwrap_or(1) > 1,
        Some(st) if st.workloads.is_empty() => st.applied_hash.is_some(),
        Some(st) => st.workloads.iter().any(|w| !targets(set, w)),
    }
}

fn targets(set: &ClientCertificateSet, w: &crate::resource::WorkloadRecord) -> bool {
    WorkloadKind::parse(&w.kind).is_some_and(|k| set.spec.app.targets(k, &w.name))
}

/// The workloads other than the target that carry this set's claim: those
/// the records name, and with `sweep` every one of every kind in the
/// namespace (metadata only: the claim and a stop record are all a release
/// needs).
pub async fn claimed_elsewhere(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    sweep: bool,
) -> Result<Vec<Workload>> {
    let mut found: Vec<Workload> = Vec::new();
    if sweep {
        let lists = futures::future::try_join_all(WorkloadKind::ALL.map(|kind| async move {
            let list = kinds::api(&ctx.client, ns, kind)
                .list_metadata(&kube::api::ListParams::default())
                .await?;
            Ok::<_, kube::Error>((kind, list.items))
        }))
        .await?;
        for (kind, items) in lists {
            found.extend(
                items
                    .into_iter()
                    .map(|m| Workload::metadata_only(kind, m.metadata)),
            );
        }
    } else {
        let recorded = set
            .status
            .iter()
            .flat_map(|s| &s.workloads)
            .filter(|w| !targets(set, w))
            .filter_map(|w| Some((WorkloadKind::parse(&w.kind)?, w.name.as_str())));
        let metas = futures::future::try_join_all(recorded.map(|(kind, name)| async move {
            let m = kinds::api(&ctx.client, ns, kind)
                .get_metadata_opt(name)
                .await?;
            Ok::<_, kube::Error>(m.map(|m| Workload::metadata_only(kind, m.metadata)))
        }))
        .await?;
        found.extend(metas.into_iter().flatten());
    }
    Ok(found
        .into_iter()
        .filter(|d| !set.spec.app.targets(d.kind(), d.name()))
        .filter(|d| workload::claimed_by(set, d))
        .collect())
}

/// The set that claims `d`, when the claim is not this set's.
pub async fn claimant(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    d: &Workload,
) -> Result<Option<ClientCertificateSet>> {
    if workload::claimed_by(set, d) {
        return Ok(None);
    }
    let Some(name) = workload::claim(d).and_then(|c| c.name) else {
        return Ok(None);
    };
    Ok(
        Api::<ClientCertificateSet>::namespaced(ctx.client.clone(), ns)
            .get_opt(&name)
            .await?,
    )
}
