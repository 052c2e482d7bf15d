//! One reconcile pass over a ClientCertificateSet: dereference, validate,
//! build (pure), apply, restart, status. Invalid input changes nothing that
//! runs: the last good rendering and wiring stay.

mod apply;
pub mod build;
mod cleanup;
mod dereference;
mod execute;
pub mod finalizer;
pub(crate) mod kinds;
mod known;
pub mod names;
mod plan;
pub(crate) mod quiet;
mod reason;
mod restart;
mod rollout;
mod status;
mod trust;
mod validate;
mod workload;

#[cfg(test)]
mod scenarios;

pub use rollout::{deployment_stage, stateful_set_stage};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::instrument;

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::faults;
use crate::operator::memory::Key;
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus, RestartStrategy};
use kinds::Workload;
use names::*;
use quiet::Settled;
use status::Cond;

#[instrument(skip_all, fields(namespace = set.namespace().unwrap_or_default(), set = set.name_any()))]
pub async fn reconcile(set: Arc<ClientCertificateSet>, ctx: Arc<Context>) -> Result<Action> {
    let ns = set.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<ClientCertificateSet> = Api::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let deleting = set.metadata.deletion_timestamp.is_some();
    let result = if deleting && !set.finalizers().iter().any(|f| f == FINALIZER) {
        // Deleted and already released: nothing of certpin's is left.
        Ok(Action::await_change())
    } else if deleting {
        ctx.memory.forget_set(&Key::set(&ns, &set.name_any()));
        match cleanup::cleanup(&set, &ctx, &ns).await {
            Ok(action) => finalizer::remove(&api, &set).await.map(|()| action),
            Err(e) => Err(e),
        }
    } else {
        reconcile_set(&set, &ctx, &ns, &api).await
    };
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciliations
        .get_or_create(&crate::operator::metrics::ResultLabel {
            result: label.into(),
        })
        .inc();
    result
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The pass for a set that exists: read, validate, build, plan, execute,
/// status.
async fn reconcile_set(
    set: &ClientCertificateSet,
    ctx: &Context,
    ns: &str,
    api: &Api<ClientCertificateSet>,
) -> Result<Action> {
    let key = Key::set(ns, &set.name_any());
    let began = ctx.memory.touches(&key).map_or(0, |t| t.count);
    let now = Utc::now();
    // The finalizer goes on while the inputs are read: both must succeed
    // before anything is written, and neither needs the other.
    let (finalized, inputs) = futures::join!(
        finalizer::ensure(api, set),
        dereference::dereference(ctx, set, ns),
    );
    finalized?;
    let inputs = inputs?;
    faults::after("dereference");
    // What is under the rendered names: this set's (to reuse), or another's.
    let (earlier, live_cm, foreign) = inputs.previous.split(set);
    let mut validation = validate::validate(set, &inputs, earlier.secret, &ctx.cache, now).await;
    faults::after("validate");
    let target = inputs.workload.as_ref();
    let (claimant, others) = futures::try_join!(
        async {
            match target {
                Some(d) => dereference::claimant(ctx, set, ns, d).await,
                None => Ok(None),
            }
        },
        dereference::claimed_elsewhere(ctx, set, ns, dereference::sweep_needed(set)),
    )?;
    let rendering_of = |v: &validate::Validation| match (&v.valid, target) {
        (Some(valid), Some(_)) => render(set, ns, valid, &v.cas, earlier, live_cm).map(Some),
        _ => Ok(None),
    };
    let mut rendering = rendering_of(&validation)?;
    // Known certificates stand for what the status says only if the status
    // describes this rendering (a pass cut short after the Secret was
    // written but before the status was would leave older rows): otherwise
    // decode after all.
    let applied = set.status.as_ref().and_then(|s| s.applied_hash.as_deref());
    if validation.known && rendering.as_ref().map(|(r, _)| r.config_hash.as_str()) != applied {
        validation = validate::validate(set, &inputs, None, &ctx.cache, now).await;
        rendering = rendering_of(&validation)?;
    }
    let live = plan::Live {
        target,
        claimant: claimant.as_ref(),
        others: &others,
        foreign: &foreign,
        now: &stamp(now),
    };
    let plan = plan::plan(set, ns, rendering.as_ref().map(|(r, _)| r), &live);
    let none = execute::RenderedWrites::default();
    let writes = rendering.as_ref().map_or(&none, |(_, w)| w);
    let writes_anything =
        rollout::writes_workload(&plan) || writes.config_map.is_some() || writes.secret.is_some();
    if writes_anything
        && quiet::settle(&ctx.memory, &key, began, ctx.quiet).await == Settled::Superseded
    {
        tracing::debug!("an input changed during the quiet wait; the pass it triggered writes");
        return Ok(Action::await_change());
    }
    // Followed before the write: the controller's first status update of
    // the rollout can arrive before this pass ends.
    if rollout::writes_workload(&plan) {
        follow(ctx, ns, set, true);
    }
    let outcome = execute::execute(ctx, set, ns, &plan, writes, target).await?;
    let rendered = rendering
        .as_ref()
        .and_then(|(r, w)| manual_rendering(r, w, earlier.secret));
    let restart_due = manual_restart_due(ctx, set, ns, &outcome, target, rendered).await?;
    let rollout = rollout::after_pass(&plan, &outcome, target);
    follow(ctx, ns, set, follows(&outcome, &rollout));
    let old_records = set
        .status
        .as_ref()
        .map(|s| s.workloads.as_slice())
        .unwrap_or_default();
    let derived = status::derive(status::Pass {
        set,
        validation: &validation,
        applied_hash: rendering.as_ref().map(|(r, _)| r.config_hash.clone()),
        paths: rendering.as_ref().map(|(r, _)| &r.paths),
        ca_paths: rendering.as_ref().map(|(r, _)| &r.ca_paths),
        workloads: plan::records(old_records, set, &plan, &outcome, target),
        outcome: &outcome,
        restart_due,
        restarted_at: target.and_then(workload::restarted_at),
        rollout,
        app_warnings: target
            .map(|d| workload::buildpack_env_warnings(set, d))
            .unwrap_or_default(),
        now: &now_time(),
    });
    publish(ctx, set, ns, &derived, &validation.warnings, target).await?;
    faults::after("status");
    let mut requeue = derived.requeue.unwrap_or(ctx.resync).min(ctx.resync);
    if let Some(wake) = next_expiry_check(&validation, set, now) {
        requeue = requeue.min(wake);
    }
    Ok(Action::requeue(requeue))
}

/// Second precision, as pod creation timestamps have.
fn stamp(now: chrono::DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether the target's status updates should trigger passes of this set:
/// while its pods are being replaced or stopped for this set.
fn follows(outcome: &plan::Outcome, rollout: &rollout::Rollout) -> bool {
    match outcome {
        plan::Outcome::Wired { .. } => matches!(
            rollout,
            rollout::Rollout::InProgress(_) | rollout::Rollout::WaitsForUser(_)
        ),
        plan::Outcome::Stopping { .. } => true,
        plan::Outcome::Refused(_) => false,
    }
}

/// Follows (or stops following) the set's target. Following belongs to the
/// set: another set's pass cannot switch it off.
fn follow(ctx: &Context, ns: &str, set: &ClientCertificateSet, on: bool) {
    let (kind, name) = set.spec.app.target();
    let workload = Key::new(kind.as_str(), ns, name);
    ctx.memory
        .follow(workload, &Key::set(ns, &set.name_any()), on);
}

/// Builds the rendered objects (reusing the previous encoding of unchanged
/// input) and which of them need writing.
fn render(
    set: &ClientCertificateSet,
    ns: &str,
    valid: &[validate::ValidCertificate],
    cas: &[trust::ValidCa],
    earlier: build::Earlier,
    config_map: Option<&k8s_openapi::api::core::v1::ConfigMap>,
) -> Result<(build::Rendered, execute::RenderedWrites)> {
    let rendered = build::render_objects(set, valid, cas, earlier, &stamp(Utc::now()))?;
    let writes = build::writes(set, ns, &rendered, config_map, earlier);
    Ok((rendered, writes))
}

/// Writes the status, with the Events it owes beside it.
async fn publish(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    derived: &status::Derived,
    warnings: &[(String, crate::pkcs12::Warning)],
    target: Option<&Workload>,
) -> Result<()> {
    let old = set.status.clone().unwrap_or_default();
    record_metrics(ctx, set, ns, &old, &derived.status, &derived.ready);
    let mut due = status::events_due(set, &old, &derived.status, &derived.ready, warnings);
    for e in due.iter_mut().filter(|e| e.on_workload) {
        e.workload_uid = target.and_then(|d| d.meta().uid.clone());
    }
    let (_, patched) = futures::join!(
        futures::future::join_all(due.into_iter().map(|e| status::event(ctx, set, e))),
        status::patch_status(&ctx.client, set, ns, &derived.status),
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
    use crate::operator::metrics::{ReasonLabel, StrategyLabel};
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
    // CA certificates are labelled `ca:<entry>:<fingerprint prefix>`: an
    // entry may hold many.
    let expiries: Vec<(String, i64)> = new
        .certificates
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.not_after.as_ref()?.0.as_second())))
        .chain(new.ca_certificates.iter().filter_map(|c| {
            let fingerprint: String = c.sha256_fingerprint.as_ref()?.replace(':', "");
            let label = format!(
                "ca:{}:{}",
                c.name,
                &fingerprint[..fingerprint.len().min(16)]
            );
            Some((label, c.not_after.as_ref()?.0.as_second()))
        }))
        .collect();
    ctx.metrics.set_expiries(ns, set_name(set), &expiries);
}

/// When to look again so that "expiring soon" and "expired" show on time.
fn next_expiry_check(
    v: &validate::Validation,
    set: &ClientCertificateSet,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    let warn = chrono::Duration::days(i64::from(set.spec.expiry_warning_days.max(0)));
    let ends = v.valid.iter().flatten().map(|c| c.not_after);
    let ca_ends = v.cas.iter().map(|c| c.certificate.not_after);
    ends.chain(ca_ends)
        .flat_map(|end| [end - warn, end + chrono::Duration::seconds(1)])
        .filter(|t| *t > now)
        .map(|t| (t - now).to_std().unwrap_or(Duration::from_secs(1)))
        .min()
        .map(|d| d.max(Duration::from_secs(1)))
}

/// What a Manual set's pods are compared with: the rendering, and the
/// resourceVersion of the Secret that held it before this pass (not when
/// this pass wrote the rendering: the version read is older than the write).
fn manual_rendering<'a>(
    r: &'a build::Rendered,
    writes: &execute::RenderedWrites,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Option<restart::Rendering<'a>> {
    let at = r.rendered_at.parse().ok()?;
    let unwritten = writes.secret.is_none() && writes.config_map.is_none();
    let version = secret
        .filter(|_| unwritten)
        .and_then(|s| s.metadata.resource_version.as_deref()?.parse().ok());
    Some(restart::Rendering {
        at,
        config_hash: &r.config_hash,
        version,
    })
}

/// For a Manual set that is wired: what its user still has to restart.
async fn manual_restart_due(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    outcome: &plan::Outcome,
    target: Option<&Workload>,
    rendered: Option<restart::Rendering<'_>>,
) -> Result<Option<String>> {
    match (outcome, target, rendered) {
        (plan::Outcome::Wired { .. }, Some(d), Some(r))
            if set.spec.restart == RestartStrategy::Manual =>
        {
            restart_due(ctx, ns, d, &r).await
        }
        _ => Ok(None),
    }
}

/// Manual: the pods that may run settings older than the rendering.
async fn restart_due(
    ctx: &Context,
    ns: &str,
    d: &Workload,
    rendering: &restart::Rendering<'_>,
) -> Result<Option<String>> {
    let pods = restart::pods_of(&ctx.client, ns, d).await?;
    let stale = pods
        .iter()
        .filter(|p| restart::may_run_older_settings(&p.metadata, rendering))
        .count();
    Ok((stale > 0).then(|| {
        format!(
            "{stale} pod(s) started before the settings changed; restart the app to apply them \
             ({})",
            d.restart_hint()
        )
    }))
}
