//! One reconcile pass over a ClientCertificateSet: observe what it refers
//! to, decide what the app gets and what to write, act, remember. Invalid
//! input changes nothing that runs: the last good rendering and wiring stay.

mod act;
mod decide;
mod fragment;
pub(crate) mod kinds;
mod observe;
mod reason;
mod workload;

#[cfg(test)]
mod scenarios;

pub(crate) use act::finalizer;
pub(crate) use decide::build;
pub use decide::rollout::{deployment_stage, stateful_set_stage};
pub(crate) use observe::request::requested as reconcile_requested;

use std::sync::Arc;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::instrument;

use crate::names::FINALIZER;
use crate::operator::context::Context;
use crate::operator::error::{Error, PassError, Result, Step};
use crate::operator::faults;
use crate::operator::memory::Key;
use crate::resource::ClientCertificateSet;
use act::quiet::{self, Settled};
use act::{cleanup, execute, publish};

#[instrument(skip_all, fields(namespace = set.namespace().unwrap_or_default(), set = set.name_any()))]
pub async fn reconcile(
    set: Arc<ClientCertificateSet>,
    ctx: Arc<Context>,
) -> Result<Action, PassError> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<ClientCertificateSet> = Api::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let result = if set.metadata.deletion_timestamp.is_none() {
        pass(&set, &ctx, &ns, &api).await
    } else if set.finalizers().iter().any(|f| f == FINALIZER) {
        let key = Key::set(&ns, &set.name_any());
        ctx.memory.forget_set(&key);
        ctx.cache.used_by(&key, Vec::new());
        match cleanup::cleanup(&set, &ctx, &ns).await {
            Ok(action) => finalizer::remove(&api, &set).await.map(|()| action),
            Err(e) => Err(e),
        }
        .map_err(|e| (Step::Cleanup, e))
    } else {
        // Deleted and already released: nothing of certpin's is left.
        Ok(Action::await_change())
    };
    ctx.metrics.observe_pass(started.elapsed(), result.is_ok());
    result.map_err(|(step, source)| PassError {
        step,
        set: format!("{ns}/{}", set.name_any()),
        source,
    })
}

/// Tags a step's error with the step.
fn at(step: Step) -> impl FnOnce(Error) -> (Step, Error) {
    move |e| (step, e)
}

/// The pass for a set that exists: observe → decide → act → remember.
async fn pass(
    set: &ClientCertificateSet,
    ctx: &Context,
    ns: &str,
    api: &Api<ClientCertificateSet>,
) -> Result<Action, (Step, Error)> {
    let key = Key::set(ns, &set.name_any());
    let began = ctx.memory.touches(&key).map_or(0, |t| t.count);
    let now = Utc::now();
    // The finalizer goes on while the inputs are read: both must succeed
    // before anything is written, and neither needs the other.
    let (finalized, seen) =
        futures::join!(finalizer::ensure(api, set), observe::observe(ctx, set, ns));
    finalized.map_err(at(Step::Finalize))?;
    let seen = seen.map_err(at(Step::Observe))?;
    faults::after("dereference");
    let decision =
        (decide::decide(set, ns, &seen, &ctx.cache, now).await).map_err(at(Step::Decide))?;
    faults::after("validate");
    if decision.writes()
        && quiet::settle(&ctx.memory, &key, began, ctx.quiet).await == Settled::Superseded
    {
        tracing::debug!("an input changed during the quiet wait; the pass it triggered writes");
        return Ok(Action::await_change());
    }
    // Followed before the write: the controller's first status update of
    // the rollout can arrive before this pass ends.
    if decision.plan.writes_workload() {
        follow(ctx, &key, set, true);
    }
    let outcome = (execute::execute(ctx, set, ns, &decision, seen.workload()).await)
        .map_err(at(Step::Act))?;
    let derived = decide::status(set, &seen, &decision, &outcome, now);
    let follows = decide::follows(&outcome, seen.workload(), &decision.plan);
    follow(ctx, &key, set, follows);
    let warnings = &decision.validation.warnings;
    (publish::publish(ctx, set, ns, &derived, warnings, seen.workload()).await)
        .map_err(at(Step::Publish))?;
    faults::after("status");
    let requeue = derived.requeue.unwrap_or(ctx.resync).min(ctx.resync);
    Ok(Action::requeue(requeue))
}

/// Follows (or stops following) the set's target: its status updates
/// trigger passes of this set. Following belongs to the set: another
/// set's pass cannot switch it off.
fn follow(ctx: &Context, set_key: &Key, set: &ClientCertificateSet, on: bool) {
    let (kind, name) = set.spec.app.target();
    let workload = Key::new(kind.as_str(), &set_key.namespace, name);
    ctx.memory.follow(workload, set_key, on);
}
