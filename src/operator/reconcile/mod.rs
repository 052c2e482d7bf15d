//! One reconcile pass over a ClientCertificateSet: dereference, validate,
//! build (pure), apply, restart, status. Invalid input changes nothing that
//! runs: the last good rendering and wiring stay.

mod apply;
pub mod build;
mod cleanup;
mod dereference;
mod early;
mod execute;
pub mod finalizer;
pub(crate) mod kinds;
mod known;
pub mod names;
mod plan;
pub(crate) mod quiet;
mod restart;
mod rollout;
mod status;
mod trust;
mod validate;
pub(crate) mod waiting;
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
        waiting::forget(&ctx, &set, &ns);
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
/// status. Every decision is made in the pure steps (`build`, `plan`,
/// `status::derive`); this only connects them.
async fn reconcile_set(
    set: &ClientCertificateSet,
    ctx: &Context,
    ns: &str,
    api: &Api<ClientCertificateSet>,
) -> Result<Action> {
    tracing::debug!("pass began");
    if let Some(action) = waiting::pass(ctx, set, ns).await? {
        return Ok(action);
    }
    let inputs_seen = waiting::begin(ctx, set, ns);
    let now = Utc::now();
    let t0 = std::time::Instant::now();
    // The finalizer goes on while the inputs are read: both must succeed
    // before anything is written, and neither needs the other.
    let (finalized, inputs) = futures::join!(
        finalizer::ensure(api, set),
        dereference::dereference(ctx, set, ns),
    );
    finalized?;
    let inputs = inputs?;
    faults::after("dereference");
    let t_read = t0.elapsed();
    // What is under the rendered names: this set's (to reuse), or another's.
    let (earlier, live_cm, foreign) = inputs.previous.split(set);
    let mut validation = validate::validate(set, &inputs, earlier.secret, &ctx.cache, now).await;
    faults::after("validate");
    let t_valid = t0.elapsed();
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
    };
    let plan = plan::plan(set, ns, rendering.as_ref().map(|(r, _)| r), &live);
    let writes = rendering.as_ref().map(|(_, w)| w);
    let writes_anything = rollout::writes_workload(&plan)
        || writes.is_some_and(|w| w.config_map.is_some() || w.secret.is_some());
    let none = execute::RenderedWrites::default();
    let mut writes = writes.unwrap_or(&none);
    // When the pass may write: after its quiet wait (and early write).
    let mut t_settled = t0.elapsed();
    if writes_anything {
        let key = waiting::set_key(ns, &set.name_any());
        let live = early::Live {
            secret: earlier.secret,
            config_map: live_cm,
        };
        let touch = ctx.waits.touched.get(&key);
        let early = early::prepare(set, ns, &plan, writes, live, touch, inputs_seen);
        let (settled, wrote_early) = quiet::settle(
            ctx,
            set,
            ns,
            inputs_seen,
            inputs.typical_read,
            early::write(ctx, ns, early.as_ref()),
        )
        .await;
        if settled == Settled::Superseded {
            if let Some(e) = early.as_ref().filter(|_| wrote_early) {
                early::undo(ctx, ns, e).await?;
            }
            tracing::debug!("an input changed during the quiet wait; the pass it triggered writes");
            return Ok(Action::await_change());
        }
        if wrote_early {
            writes = &none;
        }
        t_settled = t0.elapsed();
    }
    // Followed before the write: the controller's first status update of
    // the rollout can arrive before this pass ends, and would otherwise be
    // dropped as a status-only change, leaving the set to the slow re-check.
    if rollout::writes_workload(&plan) {
        let (kind, name) = set.spec.app.target();
        ctx.rollouts.follow(kind, ns, name, true);
    }
    let outcome = execute::execute(ctx, set, ns, &plan, writes, target).await?;
    let t_exec = t0.elapsed();
    let rendered = rendering
        .as_ref()
        .and_then(|(r, w)| manual_rendering(ctx, r, w, earlier.secret));
    let restart_due = manual_restart_due(ctx, set, ns, &outcome, target, rendered).await?;
    let rollout = rollout::after_pass(&plan, &outcome, target);
    follow(ctx, ns, set, &outcome, &rollout);
    let old_records = set
        .status
        .as_ref()
        .map(|s| s.workloads.as_slice())
        .unwrap_or_default();
    let restart_is_due = restart_due.is_some();
    let unrecorded_restart = match &plan.target {
        plan::Target::Wire(w) if w.unrecorded_restart => target.and_then(workload::applied_at),
        _ => None,
    };
    let recorded = waiting::to_record(ctx, set, ns, &outcome);
    let derived = status::derive(status::Pass {
        set,
        validation: &validation,
        applied_hash: rendering.as_ref().map(|(r, _)| r.config_hash.clone()),
        paths: rendering.as_ref().map(|(r, _)| &r.paths),
        ca_paths: rendering.as_ref().map(|(r, _)| &r.ca_paths),
        workloads: plan::records(old_records, set, &plan, &outcome, target),
        outcome: &recorded,
        restart_due,
        unrecorded_restart,
        rollout: rollout.clone(),
        app_warnings: target
            .map(|d| workload::buildpack_env_warnings(set, d))
            .unwrap_or_default(),
        now: &now_time(),
    });
    let deferred = waiting::defers_status(&plan, &outcome, &rollout, restart_is_due);
    if !deferred {
        publish(ctx, set, ns, &derived, &validation.warnings, target).await?;
    }
    waiting::status_written(ctx, set, ns, &recorded, deferred);
    tracing::debug!(
        status_deferred = deferred,
        read_ms = t_read.as_millis() as u64,
        typical_read_ms = inputs.typical_read.as_millis() as u64,
        valid_ms = t_valid.as_millis() as u64,
        settled_ms = t_settled.as_millis() as u64,
        exec_ms = t_exec.as_millis() as u64,
        total_ms = t0.elapsed().as_millis() as u64,
        "pass timing"
    );
    faults::after("status");
    let expiry_check = next_expiry_check(&validation, set, now);
    let unwritten = deferred.then(|| set.status.clone().unwrap_or_default());
    waiting::record(
        ctx,
        set,
        ns,
        waiting::Found {
            inputs: inputs_seen,
            plan: &plan,
            outcome: &recorded,
            rollout: &rollout,
            restart_due: restart_is_due,
            validation: &validation,
            applied_hash: derived.status.applied_hash.clone(),
            paths: rendering.as_ref().map(|(r, _)| &r.paths),
            ca_paths: rendering.as_ref().map(|(r, _)| &r.ca_paths),
            workloads: derived.status.workloads.clone(),
            target,
            // A deferred status is still the one on the server.
            written: unwritten.as_ref().unwrap_or(&derived.status),
            expiry_check,
            deferred,
        },
    );
    let mut requeue = derived.requeue.unwrap_or(ctx.resync).min(ctx.resync);
    if deferred {
        requeue = requeue.min(waiting::FIRST_LOOK);
    }
    if let Some(wake) = expiry_check {
        requeue = requeue.min(wake);
    }
    Ok(Action::requeue(requeue))
}

/// Whether the target's status updates should trigger passes: while its
/// pods are being replaced or stopped for this set.
fn follow(
    ctx: &Context,
    ns: &str,
    set: &ClientCertificateSet,
    outcome: &plan::Outcome,
    rollout: &rollout::Rollout,
) {
    let waiting = match outcome {
        plan::Outcome::Wired { .. } => matches!(
            rollout,
            rollout::Rollout::InProgress(_) | rollout::Rollout::WaitsForUser(_)
        ),
        plan::Outcome::Stopping { .. } => true,
        plan::Outcome::Refused(_) => false,
    };
    let (kind, name) = set.spec.app.target();
    ctx.rollouts.follow(kind, ns, name, waiting);
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
    // Second precision, as pod creation timestamps have.
    let stamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let rendered = build::render_objects(set, valid, cas, earlier, &stamp)?;
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
    if !ready.ok {
        ctx.metrics
            .failures
            .get_or_create(&ReasonLabel {
                reason: ready.reason.clone(),
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
        .set_ready(ns, set_name(set), Some((ready.ok, &ready.reason)));
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
    ctx: &Context,
    r: &'a build::Rendered,
    writes: &execute::RenderedWrites,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Option<restart::Rendering<'a>> {
    let at = r.rendered_at.parse().ok()?;
    let unwritten = writes.secret.is_none() && writes.config_map.is_none();
    let version = secret
        .filter(|_| unwritten && ctx.marks.comparable())
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
