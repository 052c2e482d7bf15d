//! Deleting a set: end any StopStart it left half-done and remove its
//! wiring from every workload that carries its claim (those its status
//! records, and any other in the namespace: a pass may have been cut short
//! before it recorded one). A rollout follows, so no pod keeps mounting a
//! deleted Secret. The rendered ConfigMap and Secret are owned by the set
//! and go with it (garbage collection), after the wiring is gone.
//!
//! What the API server will not let certpin undo (a 4xx answer) is
//! reported as a Warning Event and does not hold the deletion for ever.

use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::publish::event;
use super::{apply, execute, stop_start};
use crate::names::set_name;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::faults;
use crate::operator::reconcile::decide::events::EventSpec;
use crate::operator::reconcile::kinds::{self, Workload};
use crate::operator::reconcile::observe::claims;
use crate::operator::reconcile::reason::Reason;
use crate::operator::reconcile::workload;
use crate::resource::ClientCertificateSet;

pub async fn cleanup(set: &ClientCertificateSet, ctx: &Context, ns: &str) -> Result<Action> {
    let (kind, target) = set.spec.app.target();
    let mut claimed = claims::claimed_elsewhere(ctx, set, ns, true).await?;
    if let Some(d) = kinds::get_opt(&ctx.client, ns, kind, target).await?
        && workload::claimed_by(set, &d)
    {
        claimed.push(d);
    }
    for d in &claimed {
        let name = d.name().to_string();
        if let Err(e) = release(ctx, ns, d).await {
            let refusal = execute::refused_by_api(e)?;
            warn!(kind = %d.kind(), workload = %name, reason = %refusal.why, "could not remove the wiring");
            let note = format!(
                "could not remove certpin's wiring from {}; remove it by hand: {}",
                d.describe(),
                refusal.message
            );
            let e = EventSpec::new(Reason::UnwireFailed, "Unwire", note).about(d.kind(), &name);
            event(ctx, set, e).await;
        }
    }
    ctx.metrics.set_expiries(ns, set_name(set), &[]);
    ctx.metrics.set_ready(ns, set_name(set), None);
    Ok(Action::await_change())
}

async fn release(ctx: &Context, ns: &str, d: &Workload) -> Result<()> {
    let (kind, name) = (d.kind(), d.name());
    if let Some(record) = crate::operator::reconcile::decide::restart::record_of(d) {
        stop_start::start(ctx, ns, kind, name, record.replicas).await?;
    }
    apply::unwire_workload(ctx, ns, kind, name).await?;
    faults::after("unwire");
    info!(%kind, workload = %name, "removed the wiring");
    Ok(())
}
