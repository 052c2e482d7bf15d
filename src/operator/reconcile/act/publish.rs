//! Publishing what a pass derived: the status (when it changed), the
//! Events it owes and the metrics of the set.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::names::set_name;
use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::operator::reconcile::decide::events::{self, EventSpec};
use crate::operator::reconcile::decide::status::{Cond, Derived};
use crate::operator::reconcile::kinds::Workload;
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus};

/// Writes the status when it differs from what is there.
pub async fn patch_status(
    client: &kube::Client,
    set: &ClientCertificateSet,
    ns: &str,
    status: &ClientCertificateSetStatus,
) -> Result<bool> {
    if set.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let body = json!({
        "apiVersion": "certpin.dev/v1alpha1",
        "kind": "ClientCertificateSet",
        "status": status,
    });
    Api::<ClientCertificateSet>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(true)
}

/// Publishes `e` about the set, naming its workload as the related object
/// so that `kubectl describe` of the workload shows why it changed.
pub async fn event(ctx: &Context, set: &ClientCertificateSet, e: EventSpec) {
    use kube::Resource as _;
    let the_set = set.object_ref(&());
    let (kind, name) = e.workload.unwrap_or_else(|| {
        let (kind, name) = set.spec.app.target();
        (kind, name.to_string())
    });
    let workload = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(kind.as_str().into()),
        name: Some(name),
        namespace: the_set.namespace.clone(),
        uid: e.workload_uid,
        ..Default::default()
    };
    let (regarding, related) = if e.on_workload {
        (workload, the_set)
    } else {
        (the_set, workload)
    };
    let reason: String = e.reason.name().chars().take(128).collect();
    let note: String = e.note.chars().take(1000).collect();
    let published = ctx
        .events
        .publish(crate::operator::workarounds::events::Note {
            warning: e.reason.warns(),
            reason: &reason,
            action: e.action,
            note: &note,
            regarding: &regarding,
            related: Some(&related),
        })
        .await;
    if let Err(e) = published {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}

/// Writes the status, with the Events it owes beside it.
pub async fn publish(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    derived: &Derived,
    warnings: &[(String, crate::pkcs12::Warning)],
    target: Option<&Workload>,
) -> Result<()> {
    let old = set.status.clone().unwrap_or_default();
    record_metrics(ctx, set, ns, &old, &derived.status, &derived.ready);
    let mut due = events::events_due(set, &old, &derived.status, &derived.ready, warnings);
    for e in due.iter_mut().filter(|e| e.on_workload) {
        e.workload_uid = target.and_then(|d| d.meta().uid.clone());
    }
    let (_, patched) = futures::join!(
        futures::future::join_all(due.into_iter().map(|e| event(ctx, set, e))),
        patch_status(&ctx.client, set, ns, &derived.status),
    );
    let written = patched?;
    tracing::debug!(
        ready = derived.ready.ok,
        reason = %derived.ready.reason,
        status_written = written,
        "pass done"
    );
    Ok(())
}

fn record_metrics(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
    ready: &Cond,
) {
    use crate::operator::metrics::{Expiry, ReasonLabel, StrategyLabel};
    // Waiting for a rollout, a StopStart or the user's restart is not a
    // failure: only what needs someone's attention counts.
    if !ready.ok && ready.reason.is_failure() {
        ctx.metrics
            .failures
            .get_or_create(&ReasonLabel {
                reason: ready.reason.name(),
            })
            .inc();
    }
    if old.last_restart != new.last_restart && new.last_restart.is_some() {
        ctx.metrics
            .restarts
            .get_or_create(&StrategyLabel {
                strategy: format!("{:?}", set.spec.restart),
            })
            .inc();
    }
    ctx.metrics
        .set_ready(ns, set_name(set), Some((ready.ok, &ready.reason.name())));
    // CA certificates go to a series of their own (an entry may hold many,
    // told apart by fingerprint): an expired CA is a warning, not a page.
    let expiries: Vec<(Expiry, i64)> = new
        .certificates
        .iter()
        .filter_map(|c| {
            let t = c.not_after.as_ref()?.0.as_second();
            Some((Expiry::Client(c.name.clone()), t))
        })
        .chain(new.ca_certificates.iter().filter_map(|c| {
            let ca = Expiry::Ca {
                entry: c.name.clone(),
                fingerprint: c.sha256_fingerprint.clone()?,
            };
            Some((ca, c.not_after.as_ref()?.0.as_second()))
        }))
        .collect();
    ctx.metrics.set_expiries(ns, set_name(set), &expiries);
}
