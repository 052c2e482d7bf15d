//! The pass of a set that waits only for its rollout: take the workload as
//! the watch last delivered it (or read it), re-derive the status from what
//! the last full pass found, write it if it changed.
//!
//! Between the wiring and the end of its rollout a set is passed once per
//! step of the rollout. A full pass reads every Secret the set names and
//! its rendered objects again; at 1000 sets created at once those reads
//! were a third of certpin's requests, on an API server that the rollouts
//! themselves need. Nothing a full pass reads can have changed unless one
//! of these did, and each one sends the set back to full passes:
//! - a Secret or ConfigMap the set names (any watch event of it, including
//!   a relist, counts as a change: `Waits::touched`);
//! - the set's uid or generation;
//! - the workload's uid, spec generation, controlling owner or annotations
//!   (`triggers::spec_and_annotations_of` against what the wiring left).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::kinds::{self, Workload};
use super::plan::{Outcome, Plan, Restart, Target};
use super::rollout::Rollout;
use super::status::{self, Derived};
use super::validate::Validation;
use super::{publish, workload};
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::lock::lock;
use crate::operator::triggers;
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus, WorkloadRecord};

/// What a full pass found, kept while its set waits for the rollout.
struct Entry {
    set_uid: String,
    set_generation: Option<i64>,
    /// `Waits::touched` count of the set when the full pass began.
    inputs: u64,
    workload_uid: String,
    /// `spec_and_annotations` of the workload as the wiring left it.
    workload: u64,
    /// The validation without the decoded certificates (status rows,
    /// warnings and failure are all a status needs).
    validation: Validation,
    applied_hash: Option<String>,
    paths: Option<std::collections::BTreeMap<String, String>>,
    ca_paths: Option<std::collections::BTreeMap<String, String>>,
    workloads: Vec<WorkloadRecord>,
    /// The status certpin last wrote (the store may not have it yet).
    written: ClientCertificateSetStatus,
    /// When a certificate's expiry needs a look.
    expiry_check: Option<Instant>,
    /// When the full pass left its status to the rollout's first step
    /// (`defers_status`): `written` is still the older one, and a restart it
    /// made is in `Waits::unrecorded_restart`.
    deferred: Option<Instant>,
}

/// How long a status is left to the controller's first look at the new
/// template while the controller acts on none of the workloads whose
/// rollouts sets wait for: beyond this (a controller manager down or
/// stalled) the status says that the controller has not seen it.
pub const FIRST_LOOK: Duration = Duration::from_secs(30);

/// How long a status is left to the first look at most, however busy the
/// controller: one that keeps acting on other workloads whose rollouts sets
/// wait for is working through a backlog (thousands of sets created at
/// once), and a status written meanwhile would be written again when it
/// looks, on an API server that backlog already loads.
const LONGEST_FIRST_LOOK: Duration = Duration::from_secs(300);

/// How much longer a deferred status waits for the controller's first look,
/// or `None` to write it now. `waited`: since the deferral; `quiet`: since
/// the controller last acted on a workload whose rollout a set waits for
/// (`Rollouts::quiet`, from the watch), or since the deferral if that is
/// later.
fn first_look_wait(waited: Duration, quiet: Duration) -> Option<Duration> {
    (waited < LONGEST_FIRST_LOOK && quiet < FIRST_LOOK)
        .then(|| (FIRST_LOOK - quiet).min(LONGEST_FIRST_LOOK - waited))
}

/// The sets waiting for a rollout, and how often each one's inputs
/// changed.
#[derive(Default)]
pub struct Waits {
    entries: Mutex<HashMap<String, Entry>>,
    pub(crate) touched: super::quiet::Touches,
    /// The workload's `spec_and_annotations` after certpin's last write.
    wrote: Mutex<HashMap<String, u64>>,
    /// Sets whose restart no written status records yet: a pass that
    /// deferred its status restarted the app, and whichever pass writes the
    /// status next (a full one, if an input changed meanwhile) says so.
    unrecorded_restart: Mutex<std::collections::HashSet<String>>,
}

pub(super) fn set_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Waits {
    /// A Secret or ConfigMap the set `ns/name` names changed: its next pass
    /// is a full one.
    pub fn touched(&self, ns: &str, name: &str) {
        self.touched.touch(&set_key(ns, name), Instant::now());
    }

    fn inputs(&self, key: &str) -> u64 {
        self.touched.count(key)
    }

    /// What certpin's write left on the workload `key` (`Kind/ns/name`).
    pub fn wrote(&self, key: String, property: u64) {
        lock(&self.wrote).insert(key, property);
    }

    fn forget(&self, key: &str) {
        lock(&self.entries).remove(key);
    }
}

#[cfg(test)]
impl Waits {
    /// What the watch does for the sets a changed Secret or ConfigMap
    /// concerns, for every set: scenario tests change inputs without one.
    pub fn inputs_changed_everywhere(&self) {
        lock(&self.entries).clear();
    }

    /// Whether the set's last full pass left its status to the rollout.
    pub fn status_deferred(&self, ns: &str, name: &str) -> bool {
        lock(&self.entries)
            .get(&set_key(ns, name))
            .is_some_and(|e| e.deferred.is_some())
    }
}

/// Forgets a set that is going.
pub fn forget(ctx: &Context, set: &ClientCertificateSet, ns: &str) {
    let key = set_key(ns, &set.name_any());
    ctx.waits.forget(&key);
    ctx.waits.touched.forget(&key);
    lock(&ctx.waits.unrecorded_restart).remove(&key);
}

/// The outcome a status should record: a pass that did not restart the
/// app still records the restart of an earlier pass that deferred its
/// status and never wrote it.
pub fn to_record(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    outcome: &Outcome,
) -> Outcome {
    let pending = lock(&ctx.waits.unrecorded_restart).contains(&set_key(ns, &set.name_any()));
    match outcome {
        Outcome::Wired { restarted: false } if pending => Outcome::Wired { restarted: true },
        other => other.clone(),
    }
}

/// After a status write (`deferred`: the pass left it to the rollout):
/// whether a restart still waits to be recorded.
pub fn status_written(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    recorded: &Outcome,
    deferred: bool,
) {
    let key = set_key(ns, &set.name_any());
    let mut pending = lock(&ctx.waits.unrecorded_restart);
    match (deferred, recorded) {
        (true, Outcome::Wired { restarted: true }) => {
            pending.insert(key);
        }
        (true, _) => {}
        (false, _) => {
            pending.remove(&key);
        }
    }
}

/// The count of input changes a full pass starts from.
pub fn begin(ctx: &Context, set: &ClientCertificateSet, ns: &str) -> u64 {
    ctx.waits.inputs(&set_key(ns, &set.name_any()))
}

/// What a full pass leaves for the passes of its rollout.
pub struct Found<'a> {
    pub inputs: u64,
    pub plan: &'a Plan,
    pub outcome: &'a Outcome,
    pub rollout: &'a Rollout,
    pub restart_due: bool,
    pub validation: &'a Validation,
    pub applied_hash: Option<String>,
    pub paths: Option<&'a std::collections::BTreeMap<String, String>>,
    pub ca_paths: Option<&'a std::collections::BTreeMap<String, String>>,
    pub workloads: Vec<WorkloadRecord>,
    pub target: Option<&'a Workload>,
    pub written: &'a ClientCertificateSetStatus,
    pub expiry_check: Option<Duration>,
    pub deferred: bool,
}

/// Whether a pass leaves its set waiting only for a rolling update (not a
/// StopStart, a Manual restart or an error).
pub fn waits_for_rollout(
    plan: &Plan,
    outcome: &Outcome,
    rollout: &Rollout,
    restart_due: bool,
) -> bool {
    let rolling = matches!(&plan.target, Target::Wire(w) if matches!(w.restart, Restart::Apply));
    matches!(outcome, Outcome::Wired { .. })
        && matches!(rollout, Rollout::InProgress(_))
        && !restart_due
        && rolling
}

/// Whether the pass that starts a rolling update leaves its status to the
/// rollout's first step. Written now, it would say only "waiting for the
/// controller to see the new template", and the controller's first status
/// update (for an app of zero replicas or one that rolls quickly, already
/// "complete") would need a second write: one status write per rollout
/// fewer, on an API server the rollouts themselves load. The controller's
/// first update is normally milliseconds away; the status is written saying
/// that it has not come when the controller has acted on none of the
/// workloads whose rollouts sets wait for during `FIRST_LOOK`, or after
/// `LONGEST_FIRST_LOOK` (`first_look_wait`).
pub fn defers_status(plan: &Plan, outcome: &Outcome, rollout: &Rollout, restart_due: bool) -> bool {
    waits_for_rollout(plan, outcome, rollout, restart_due) && super::rollout::writes_workload(plan)
}

/// Keeps what a full pass found when its set now waits only for a rolling
/// update (not a StopStart, a Manual restart or an error); forgets it
/// otherwise.
pub fn record(ctx: &Context, set: &ClientCertificateSet, ns: &str, f: Found) {
    let key = set_key(ns, &set.name_any());
    let waits = waits_for_rollout(f.plan, f.outcome, f.rollout, f.restart_due);
    // What this pass's write left, taken whether or not the set now waits:
    // the map holds a write only until the pass that made it ends.
    let wrote = f.target.and_then(|t| {
        lock(&ctx.waits.wrote).remove(&triggers::key_for(t.kind().as_str(), ns, t.name()))
    });
    let workload = match (waits, f.target) {
        (true, Some(t)) => if super::rollout::writes_workload(f.plan) {
            wrote
        } else {
            Some(triggers::spec_and_annotations_of(t.meta()))
        }
        .zip(t.meta().uid.clone()),
        _ => None,
    };
    let Some((workload, workload_uid)) = workload else {
        ctx.waits.forget(&key);
        return;
    };
    let v = f.validation;
    let entry = Entry {
        set_uid: set.uid().unwrap_or_default(),
        set_generation: set.metadata.generation,
        inputs: f.inputs,
        workload_uid,
        workload,
        validation: Validation {
            rows: v.rows.clone(),
            ca_rows: v.ca_rows.clone(),
            valid: None,
            cas: Vec::new(),
            ca_warnings: v.ca_warnings.clone(),
            known: v.known,
            failure: v.failure.clone(),
            warnings: v.warnings.clone(),
        },
        applied_hash: f.applied_hash,
        paths: f.paths.cloned(),
        ca_paths: f.ca_paths.cloned(),
        workloads: f.workloads,
        written: f.written.clone(),
        expiry_check: f.expiry_check.map(|d| Instant::now() + d),
        deferred: f.deferred.then(Instant::now),
    };
    lock(&ctx.waits.entries).insert(key, entry);
}

/// The pass of a set that waits only for its rollout, when nothing else
/// can have changed; `None`: a full pass is needed.
pub async fn pass(ctx: &Context, set: &ClientCertificateSet, ns: &str) -> Result<Option<Action>> {
    let key = set_key(ns, &set.name_any());
    let (kind, name) = set.spec.app.target();
    let current = {
        let entries = lock(&ctx.waits.entries);
        entries.get(&key).map(|e| {
            let current = e.set_uid == set.uid().unwrap_or_default()
                && e.set_generation == set.metadata.generation
                && e.inputs == ctx.waits.inputs(&key)
                && set.metadata.deletion_timestamp.is_none();
            (current, (e.workload_uid.clone(), e.workload))
        })
    };
    let expected = match current {
        None => return Ok(None),
        Some((false, _)) => {
            ctx.waits.forget(&key);
            return Ok(None);
        }
        Some((true, expected)) => expected,
    };
    let unchanged = |w: &Workload| {
        w.meta().uid.as_deref() == Some(expected.0.as_str())
            && triggers::spec_and_annotations_of(w.meta()) == expected.1
    };
    // The watch's latest object, if it shows what the wiring left: the
    // event that triggered this pass updated it. Older (the echo of
    // certpin's write not yet seen) or changed: read it.
    let live = match ctx.rollouts.latest(kind, ns, name).filter(unchanged) {
        Some(w) => Some(w),
        None => kinds::get_opt(&ctx.client, &ctx.marks, ns, kind, name).await?,
    };
    let Some(live) = live else {
        ctx.waits.forget(&key);
        return Ok(None);
    };
    let Some(entry) = lock(&ctx.waits.entries).remove(&key) else {
        return Ok(None);
    };
    if !unchanged(&live) {
        return Ok(None);
    }
    let rollout = super::rollout::state(&live);
    if let Some(since) = entry.deferred {
        if super::rollout::seen(&live) {
            ctx.rollouts.looked(kind);
        } else if let Some(wait) = first_look_wait(since.elapsed(), ctx.rollouts.quiet(kind, since))
        {
            lock(&ctx.waits.entries).insert(key, entry);
            return Ok(Some(Action::requeue(wait)));
        }
    }
    // The set as the last full pass left it: its status is what certpin
    // wrote, whether or not the watch has delivered it yet.
    let mut view = set.clone();
    view.status = Some(entry.written.clone());
    let outcome = to_record(ctx, set, ns, &Outcome::Wired { restarted: false });
    let derived: Derived = status::derive(status::Pass {
        set: &view,
        validation: &entry.validation,
        applied_hash: entry.applied_hash.clone(),
        paths: entry.paths.as_ref(),
        ca_paths: entry.ca_paths.as_ref(),
        workloads: entry.workloads.clone(),
        outcome: &outcome,
        restart_due: None,
        // The full pass's status (`view`) already holds it.
        unrecorded_restart: None,
        rollout: rollout.clone(),
        app_warnings: workload::buildpack_env_warnings(&view, &live),
        now: &super::now_time(),
    });
    publish(
        ctx,
        &view,
        ns,
        &derived,
        &entry.validation.warnings,
        Some(&live),
    )
    .await?;
    status_written(ctx, set, ns, &outcome, false);
    super::follow(ctx, ns, set, &outcome, &rollout);
    let mut requeue = derived.requeue.unwrap_or(ctx.resync).min(ctx.resync);
    if let Some(at) = entry.expiry_check {
        requeue = requeue.min(
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
        );
    }
    if matches!(rollout, Rollout::InProgress(_)) {
        let entry = Entry {
            written: derived.status,
            deferred: None,
            ..entry
        };
        lock(&ctx.waits.entries).insert(key, entry);
    }
    tracing::debug!(ready = derived.ready.ok, reason = %derived.ready.reason, "rollout pass done");
    Ok(Some(Action::requeue(requeue)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_controller_that_looks_at_nothing_gets_the_first_look_and_no_more() {
        assert_eq!(first_look_wait(S(0), S(0)), Some(FIRST_LOOK));
        assert_eq!(first_look_wait(S(10), S(10)), Some(S(20)));
        assert_eq!(first_look_wait(S(30), S(30)), None);
    }

    #[test]
    fn a_controller_busy_with_other_templates_is_waited_for_up_to_the_longest_first_look() {
        assert_eq!(first_look_wait(S(45), S(2)), Some(S(28)));
        assert_eq!(first_look_wait(S(290), S(0)), Some(S(10)));
        assert_eq!(first_look_wait(LONGEST_FIRST_LOOK, S(0)), None);
        // It looked at another template, then went quiet.
        assert_eq!(first_look_wait(S(100), S(31)), None);
    }
}
