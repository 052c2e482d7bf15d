//! Decide (no API calls): judge the inputs, render what the app gets, plan
//! the writes, and after them derive the status. Decoding runs here,
//! through the decode cache, off the async runtime.

pub mod build;
pub mod events;
mod known;
pub mod plan;
pub mod restart;
pub mod rollout;
pub mod status;
mod trust;
pub mod validate;

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::operator::decoding::DecodeCache;
use crate::operator::error::Result;
use crate::operator::memory::Key;
use crate::operator::reconcile::act::execute::RenderedWrites;
use crate::operator::reconcile::kinds::Workload;
use crate::operator::reconcile::observe::Observed;
use crate::operator::reconcile::workload;
use crate::resource::{ClientCertificateSet, RestartStrategy};
use plan::{Outcome, Plan};
use validate::Validation;

pub struct Decision {
    pub validation: Validation,
    /// What the app gets and which objects need writing (`None`: the
    /// input is not valid, or there is no target).
    pub rendering: Option<(build::Rendered, RenderedWrites)>,
    pub plan: Plan,
}

impl Decision {
    /// Whether carrying the plan out writes anything.
    pub fn writes(&self) -> bool {
        self.plan.writes_workload()
            || self
                .rendering
                .as_ref()
                .is_some_and(|(_, w)| w.config_map.is_some() || w.secret.is_some())
    }
}

pub async fn decide(
    set: &ClientCertificateSet,
    ns: &str,
    seen: &Observed,
    cache: &DecodeCache,
    now: DateTime<Utc>,
) -> Result<Decision> {
    let inputs = &seen.inputs;
    let (earlier, live_cm, foreign) = inputs.previous.split(set);
    let target = seen.workload();
    let rendering_of = |v: &Validation| match (&v.valid, target) {
        (Some(valid), Some(_)) => render(set, ns, valid, &v.cas, earlier, live_cm).map(Some),
        _ => Ok(None),
    };
    let renders = target.is_some();
    let mut validation = validated(set, inputs, earlier, true, cache, now, renders).await?;
    cache.used_by(
        &Key::set(ns, &set.name_any()),
        validate::content_keys(inputs),
    );
    let mut rendering = rendering_of(&validation)?;
    // Known certificates stand for what the status says only if the status
    // describes this rendering (a pass cut short after the Secret was
    // written but before the status was would leave older rows): otherwise
    // decode after all.
    let applied = set.status.as_ref().and_then(|s| s.applied_hash.as_deref());
    if validation.known && rendering.as_ref().map(|(r, _)| r.config_hash.as_str()) != applied {
        validation = validated(set, inputs, earlier, false, cache, now, renders).await?;
        rendering = rendering_of(&validation)?;
    }
    let runs = rendering
        .as_ref()
        .and_then(|(r, w)| runs_rendering(seen, r, w, earlier));
    let live = plan::Live {
        target,
        claimant: seen.claimant.as_ref(),
        others: &seen.others,
        foreign: &foreign,
        now: &stamp(now),
        pods_run_rendering: runs == Some(true),
    };
    let plan = plan::plan(set, ns, rendering.as_ref().map(|(r, _)| r), &live);
    Ok(Decision {
        validation,
        rendering,
        plan,
    })
}

/// The verdicts on the inputs (`known`: the earlier rendering's validation
/// may stand for them), with every certificate a new encoding needs
/// decoded whole.
async fn validated(
    set: &ClientCertificateSet,
    inputs: &crate::operator::reconcile::observe::Inputs,
    earlier: build::Earlier<'_>,
    known: bool,
    cache: &DecodeCache,
    now: DateTime<Utc>,
    renders: bool,
) -> Result<Validation> {
    let known_from = earlier.secret.filter(|_| known);
    let mut v = validate::validate(set, inputs, known_from, cache, now).await;
    if let (Some(valid), true) = (v.valid.as_mut(), renders) {
        let hash = build::input_hash(set, valid, &v.cas);
        if !build::can_reuse(earlier, &hash, valid.len()) {
            validate::decode_whole(inputs, valid, cache).await?;
        }
    }
    Ok(v)
}

/// Second precision, as pod creation timestamps have.
fn stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Builds the rendered objects (reusing the previous encoding of unchanged
/// input) and which of them need writing.
fn render(
    set: &ClientCertificateSet,
    ns: &str,
    valid: &[validate::ValidCertificate],
    cas: &[crate::ca::CaCertificate],
    earlier: build::Earlier,
    config_map: Option<&k8s_openapi::api::core::v1::ConfigMap>,
) -> Result<(build::Rendered, RenderedWrites)> {
    let rendered = build::render_objects(set, valid, cas, earlier, &stamp(Utc::now()))?;
    let writes = build::writes(set, ns, &rendered, config_map, earlier);
    Ok((rendered, writes))
}

/// What the target's pods are compared with: the rendering, and the
/// resourceVersion of the Secret that held it before this pass (when this
/// pass writes it, no pod can run it yet).
fn rendering_to_compare<'a>(
    r: &'a build::Rendered,
    writes: &RenderedWrites,
    earlier: build::Earlier,
) -> Option<restart::Rendering<'a>> {
    let unwritten = writes.secret.is_none() && writes.config_map.is_none();
    let version = earlier
        .secret
        .filter(|_| unwritten)
        .and_then(|s| s.metadata.resource_version.as_deref()?.parse().ok());
    Some(restart::Rendering {
        at: r.rendered_at.parse().ok()?,
        config_hash: &r.config_hash,
        version,
    })
}

/// Whether every pod of the target already runs the rendering (`None`:
/// its pods were not looked at). A pass that writes the rendering now has
/// no pod running it yet.
fn runs_rendering(
    seen: &Observed,
    r: &build::Rendered,
    writes: &RenderedWrites,
    earlier: build::Earlier,
) -> Option<bool> {
    let pods = seen.pods.as_ref()?;
    if writes.secret.is_some() || writes.config_map.is_some() {
        return Some(false);
    }
    let rendering = rendering_to_compare(r, writes, earlier)?;
    Some(stale_pods(pods, &rendering) == 0)
}

fn stale_pods(
    pods: &[kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Pod>],
    rendering: &restart::Rendering,
) -> usize {
    pods.iter()
        .filter(|p| restart::may_run_older_settings(&p.metadata, rendering))
        .count()
}

/// Manual: what its user still has to restart.
fn restart_due(
    set: &ClientCertificateSet,
    seen: &Observed,
    decision: &Decision,
    outcome: &Outcome,
) -> Option<String> {
    let (Outcome::Wired { .. }, Some(d), Some((r, w)), Some(pods)) =
        (outcome, seen.workload(), &decision.rendering, &seen.pods)
    else {
        return None;
    };
    if set.spec.restart != RestartStrategy::Manual {
        return None;
    }
    let earlier = seen.inputs.previous.split(set).0;
    let stale = stale_pods(pods, &rendering_to_compare(r, w, earlier)?);
    (stale > 0).then(|| {
        format!(
            "{stale} pod(s) started before the settings changed; restart the app to apply them \
             ({})",
            d.restart_hint()
        )
    })
}

/// The status after the pass, and when to look again.
pub fn status(
    set: &ClientCertificateSet,
    seen: &Observed,
    decision: &Decision,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> status::Derived {
    let target = seen.workload();
    let rendering = decision.rendering.as_ref().map(|(r, _)| r);
    let old_records = set.status.as_ref().map(|s| s.workloads.as_slice());
    let mut derived = status::derive(status::Pass {
        set,
        validation: &decision.validation,
        applied_hash: rendering.map(|r| r.config_hash.clone()),
        paths: rendering.map(|r| &r.paths),
        ca_paths: rendering.map(|r| &r.ca_paths),
        workloads: plan::records(
            old_records.unwrap_or_default(),
            set,
            &decision.plan,
            outcome,
            target,
        ),
        outcome,
        restart_due: restart_due(set, seen, decision, outcome),
        restarted_at: target.and_then(workload::restarted_at),
        rollout: rollout::after_pass(&decision.plan, outcome, target),
        app_warnings: target
            .map(|d| workload::buildpack_env_warnings(set, d))
            .unwrap_or_default(),
        reconcile_request: seen.reconcile_request.as_deref(),
        now: &Time(k8s_openapi::jiff::Timestamp::now()),
    });
    if let Some(wake) = next_expiry_check(&decision.validation, set, now) {
        derived.requeue = Some(derived.requeue.map_or(wake, |r| r.min(wake)));
    }
    derived
}

/// When to look again so that "expiring soon" and "expired" show on time.
fn next_expiry_check(
    v: &Validation,
    set: &ClientCertificateSet,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let warn = chrono::Duration::days(i64::from(set.spec.expiry_warning_days.max(0)));
    let ends = v.valid.iter().flatten().map(|c| c.not_after);
    let ca_ends = v.cas.iter().map(|c| c.not_after);
    ends.chain(ca_ends)
        .flat_map(|end| [end - warn, end + chrono::Duration::seconds(1)])
        .filter(|t| *t > now)
        .map(|t| (t - now).to_std().unwrap_or(Duration::from_secs(1)))
        .min()
        .map(|d| d.max(Duration::from_secs(1)))
}

/// Whether the target's status updates should trigger passes of this set
/// after it: after a write to it, until its controller reports on it (a
/// workload without pods may have been scaled up meanwhile), and while its
/// pods are being replaced or stopped for it.
pub fn follows(outcome: &Outcome, target: Option<&Workload>, plan: &Plan) -> bool {
    match outcome {
        Outcome::Wired { .. } => {
            plan.writes_workload()
                || matches!(
                    rollout::after_pass(plan, outcome, target),
                    rollout::Rollout::InProgress(_) | rollout::Rollout::WaitsForUser(_)
                )
        }
        Outcome::Stopping { .. } => true,
        Outcome::Refused(_) => false,
    }
}
