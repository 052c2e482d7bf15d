//! Step 4b: carries out a plan, in the order that keeps apps running:
//! stops under way on released workloads end first, the rendered objects
//! are written before the target points at them, the target is wired (or
//! stopped and started), and only then are released workloads unwired. An
//! API server that refuses a write (4xx) is an outcome with its message,
//! for status and an Event; other errors end the pass and are retried.

use serde_json::Value;
use tracing::info;

use super::{apply, stop_start};
use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::memory::Key;
use crate::operator::reconcile::decide::plan::{Outcome, Plan, Refusal, Restart, Target, Wire};
use crate::operator::reconcile::decide::{Decision, rollout};
use crate::operator::reconcile::kinds::Workload;
use crate::operator::reconcile::reason::Reason;
use crate::operator::{faults, triggers};
use crate::resource::ClientCertificateSet;

/// The rendered objects to write (`None`: unchanged).
#[derive(Default)]
pub struct RenderedWrites {
    pub name: String,
    pub config_map: Option<Value>,
    pub secret: Option<Value>,
}

pub async fn execute(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    decision: &Decision,
    target: Option<&Workload>,
) -> Result<Outcome> {
    let none = RenderedWrites::default();
    let rendered = decision.rendering.as_ref().map_or(&none, |(_, w)| w);
    match steps(ctx, set, ns, &decision.plan, rendered, target).await {
        Err(e) => refused_by_api(e).map(Outcome::Refused),
        done => done,
    }
}

async fn steps(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    plan: &Plan,
    rendered: &RenderedWrites,
    target: Option<&Workload>,
) -> Result<Outcome> {
    for r in &plan.release {
        if let Some(replicas) = r.restore {
            stop_start::start(ctx, ns, r.kind, &r.name, replicas).await?;
            info!(kind = %r.kind, workload = %r.name, replicas, "ended a StopStart the set no longer wants");
        }
    }
    let (wire, d) = match (&plan.target, target) {
        (Target::Wire(w), Some(d)) => (w, d),
        (Target::Refuse { refusal, restore }, _) => {
            if let Some(replicas) = restore {
                let (kind, name) = set.spec.app.target();
                stop_start::start(ctx, ns, kind, name, *replicas).await?;
                info!(%kind, workload = %name, replicas, "ended a StopStart: nothing to apply");
            }
            return Ok(Outcome::Refused(refusal.clone()));
        }
        (Target::Wire(_), None) => return Err(Error::MissingField("target workload")),
    };
    write_rendered(ctx, ns, rendered).await?;
    let outcome = wire_target(ctx, set, ns, wire, d).await?;
    if matches!(outcome, Outcome::Wired { .. }) {
        for r in &plan.release {
            apply::unwire_workload(ctx, ns, r.kind, &r.name).await?;
            faults::after("unwire");
            info!(kind = %r.kind, workload = %r.name, "removed the wiring of a workload the set no longer targets");
        }
    }
    Ok(outcome)
}

/// Both before the workload points at them, the Secret first: it keeps
/// the previous rendering's files and every file's password stays the
/// set's (`build`), so the old ConfigMap beside the new Secret names files
/// its passwords open. A pass cut short between the two is finished by
/// the next.
async fn write_rendered(ctx: &Context, ns: &str, r: &RenderedWrites) -> Result<()> {
    if let Some(body) = &r.secret {
        apply::apply_secret(ctx, ns, &r.name, body).await?;
        faults::after("apply-secret");
    }
    if let Some(body) = &r.config_map {
        apply::apply_config_map(ctx, ns, &r.name, body).await?;
        faults::after("apply-configmap");
    }
    Ok(())
}

async fn wire_target(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    w: &Wire,
    d: &Workload,
) -> Result<Outcome> {
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    match w.restart {
        Restart::StopStart => {
            match stop_start::stop(ctx, ns, d, uid, w.precondition.as_deref()).await? {
                stop_start::StopStart::Waiting { pods } => Ok(Outcome::Stopping { pods }),
                stop_start::StopStart::Stopped { replicas } => {
                    if w.change {
                        // The stop record already holds the claim.
                        apply::apply_workload(ctx, ns, w.kind, &w.name, &w.fragment, None).await?;
                        faults::after("apply-deployment");
                    }
                    stop_start::start(ctx, ns, w.kind, &w.name, replicas).await?;
                    info!(replicas, "StopStart: started again");
                    Ok(Outcome::Wired { restarted: true })
                }
            }
        }
        Restart::Resume { replicas } => {
            if w.change {
                apply(ctx, ns, w, d).await?;
            }
            stop_start::start(ctx, ns, w.kind, &w.name, replicas).await?;
            info!(replicas, "started again with the set's current settings");
            Ok(Outcome::Wired { restarted: true })
        }
        Restart::Apply if w.change => {
            apply(ctx, ns, w, d).await?;
            let restarted = w.rolls;
            info!(restarted, kind = %w.kind, "wired the workload");
            Ok(Outcome::Wired { restarted })
        }
        Restart::Apply => Ok(Outcome::Wired { restarted: false }),
    }
}

async fn apply(ctx: &Context, ns: &str, w: &Wire, d: &Workload) -> Result<()> {
    // The watch event of this write can arrive before its response:
    // expect what the write should produce, then what it did produce.
    let key = Key::new(w.kind.as_str(), ns, &w.name);
    ctx.memory.expect_echo(
        key.clone(),
        triggers::spec_and_annotations_of(
            crate::operator::reconcile::fragment::after_apply(d, &w.fragment).meta(),
        ),
    );
    let written = apply::apply_workload(
        ctx,
        ns,
        w.kind,
        &w.name,
        &w.fragment,
        w.precondition.as_deref(),
    )
    .await?;
    faults::after("apply-deployment");
    if w.rolls || w.idle {
        let started = rollout::started(w, d);
        let stage = rollout::started_stage(written.metadata.generation, started);
        ctx.memory.expect_stage(key.clone(), stage);
    }
    ctx.memory
        .expect_echo(key, triggers::spec_and_annotations(&written));
    Ok(())
}

/// An API answer that a retry will not change (4xx) as a refusal with the
/// API's own message; anything else stays an error.
pub fn refused_by_api(e: Error) -> Result<Refusal> {
    let Error::Kube(kube::Error::Api(s)) = &e else {
        return Err(e);
    };
    let why = match s.code {
        403 => Reason::Forbidden,
        400 | 422 => Reason::WriteInvalid,
        413 => Reason::RequestTooLarge,
        409 => Reason::WriteConflict,
        429 => return Err(e),
        c if (400..500).contains(&c) => Reason::WriteRefused,
        _ => return Err(e),
    };
    Ok(Refusal {
        why,
        message: format!("the API server refused a write ({}): {}", s.code, s.message),
    })
}
