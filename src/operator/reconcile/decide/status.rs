//! The status (pure): conditions with observedGeneration, a row per
//! certificate, the hash applied, from what the pass observed and did.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use std::time::Duration;

use super::plan::Outcome;
use super::rollout::Rollout;
use super::validate::Validation;
use crate::operator::reconcile::reason::{Kind, Reason};
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus, WorkloadRecord};

pub const READY: &str = "Ready";
pub const CERTIFICATES_VALID: &str = "CertificatesValid";
pub const APPLIED: &str = "Applied";
pub const RESTART_DUE: &str = "RestartDue";
/// kstatus's conditions (Flux's health, `kubectl wait`): present only while
/// True. Reconciling: work under way or awaited (a rollout, a StopStart, a
/// Secret or Deployment not there yet). Stalled: input that will not fix
/// itself until someone changes something.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One condition, before timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl Cond {
    pub fn new(type_: &'static str, ok: bool, reason: Reason, message: impl Into<String>) -> Cond {
        Cond {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// Builds conditions, keeping lastTransitionTime where the status did not change.
pub fn conditions(
    old: &[Condition],
    new: &[Cond],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    new.iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" }.to_string();
            let prior = old.iter().find(|o| o.type_ == c.type_);
            let last_transition_time = match prior {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.name(),
                // The API limits messages to 32 KiB.
                message: c.message.chars().take(4096).collect(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// What a pass found and did, for the status.
pub struct Pass<'a> {
    pub set: &'a ClientCertificateSet,
    pub validation: &'a Validation,
    pub outcome: &'a Outcome,
    /// The config hash the target now carries, when wired.
    pub applied_hash: Option<String>,
    /// Each certificate's file in the pod, when rendered.
    pub paths: Option<&'a std::collections::BTreeMap<String, String>>,
    /// Each CA certificate's file in the pod, by fingerprint, when rendered.
    pub ca_paths: Option<&'a std::collections::BTreeMap<String, String>>,
    /// Manual: the pods still running older settings.
    pub restart_due: Option<String>,
    /// When certpin last rolled the target's pods, as the workload records
    /// it (a pass may have ended before its status said so).
    pub restarted_at: Option<Time>,
    pub workloads: Vec<WorkloadRecord>,
    /// The rollout that carries the applied settings (when wired).
    pub rollout: Rollout,
    /// What is wrong with the app's workload but does not stop certpin.
    pub app_warnings: Vec<String>,
    /// The reconcile request this pass handles, if any.
    pub reconcile_request: Option<&'a str>,
    pub now: &'a Time,
}

/// The status a pass leaves, its Ready condition, and when to look again
/// (`None`: the resync period, or the next expiry check).
pub struct Derived {
    pub status: ClientCertificateSetStatus,
    pub ready: Cond,
    pub requeue: Option<Duration>,
}

/// How often a Manual set with a restart due looks for the user's restart.
const MANUAL_RECHECK: Duration = Duration::from_secs(5);
/// How often a StopStart looks for its pods to go.
const STOPPING_RECHECK: Duration = Duration::from_secs(2);
/// How often a rollout is looked at when no status update of the workload
/// arrived. Every update of a followed rollout's status triggers a pass, so
/// this is only a safety net: at 10 s, the re-checks of 5000 sets waiting
/// for slow rollouts were 23 passes per set and took the API server's CPU
/// from the rollouts themselves.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(60);
/// How often a stuck rollout is looked at.
const STUCK_RECHECK: Duration = Duration::from_secs(60);

/// What keeps a set from Ready (its reason says how GitOps tools read it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocker {
    reason: Reason,
    message: String,
}

impl Blocker {
    fn new(reason: Reason, message: impl Into<String>) -> Blocker {
        Blocker {
            reason,
            message: message.into(),
        }
    }
}

/// The status from what the pass found and did (pure).
pub fn derive(p: Pass) -> Derived {
    let set = p.set;
    let old = set.status.clone().unwrap_or_default();
    let v = p.validation;
    let mut status = ClientCertificateSetStatus {
        observed_generation: set.metadata.generation,
        certificate_count: Some(set.spec.certificates.len() as i32),
        earliest_expiry: v
            .rows
            .iter()
            .filter_map(|r| r.not_after.clone())
            .min_by_key(|t| t.0),
        applied_hash: old.applied_hash.clone(),
        last_restart: old.last_restart.clone(),
        conditions: Vec::new(),
        workloads: p.workloads.clone(),
        warnings: p.app_warnings.clone(),
        // The echo tells whoever asked that this pass, which read and
        // judged the inputs anew, is done; a removed request keeps it.
        last_handled_reconcile_at: p
            .reconcile_request
            .map(str::to_string)
            .or(old.last_handled_reconcile_at.clone()),
        ..rows(&p)
    };
    let mut conds = vec![match &v.failure {
        None => Cond::new(
            CERTIFICATES_VALID,
            true,
            Reason::Valid,
            "every certificate is valid and its pins render",
        ),
        Some(f) => Cond::new(CERTIFICATES_VALID, false, f.reason, f.message.clone()),
    }];
    let (blocker, requeue) = outcome_conditions(&p, &mut status, &mut conds);
    // Invalid input outranks whatever the pass did with the last good one.
    let blocker = v
        .failure
        .as_ref()
        .map(|f| Blocker::new(f.reason, f.message.clone()))
        .or(blocker);
    let ready = ready(v, &p.app_warnings, blocker.as_ref());
    conds.insert(0, ready.clone());
    conds.extend(blocker.as_ref().and_then(kstatus));
    status.conditions = conditions(&old.conditions, &conds, set.metadata.generation, p.now);
    Derived {
        status,
        ready,
        requeue,
    }
}

/// The certificates' and CA certificates' rows, each with its path in the
/// pod when it was rendered.
fn rows(p: &Pass) -> ClientCertificateSetStatus {
    let v = p.validation;
    let certificates = v.rows.iter().cloned().map(|mut row| {
        if row.state == "Valid" {
            row.path = p.paths.and_then(|m| m.get(&row.name)).cloned();
        }
        row
    });
    let ca_certificates = v.ca_rows.iter().cloned().map(|mut row| {
        let fingerprint = row.sha256_fingerprint.as_ref();
        row.path = fingerprint.and_then(|f| p.ca_paths.and_then(|m| m.get(f)).cloned());
        row
    });
    ClientCertificateSetStatus {
        certificates: certificates.collect(),
        ca_certificates: ca_certificates.collect(),
        ..Default::default()
    }
}

/// Ready: what blocks it, or True (with the warnings, if any).
fn ready(v: &Validation, app_warnings: &[String], blocker: Option<&Blocker>) -> Cond {
    match blocker {
        Some(b) => Cond::new(READY, false, b.reason, b.message.clone()),
        None if !v.warnings.is_empty() || !v.ca_warnings.is_empty() || !app_warnings.is_empty() => {
            let text: Vec<String> = v
                .warnings
                .iter()
                .map(|(c, w)| format!("{c}: {w}"))
                .chain(v.ca_warnings.iter().cloned())
                .chain(app_warnings.iter().cloned())
                .collect();
            Cond::new(READY, true, Reason::ValidWithWarnings, text.join("; "))
        }
        None => Cond::new(
            READY,
            true,
            Reason::Applied,
            "the app runs with its client certificates",
        ),
    }
}

/// kstatus's reading of what blocks Ready: Reconciling, Stalled, or neither.
fn kstatus(b: &Blocker) -> Option<Cond> {
    let type_ = match b.reason.kind() {
        Kind::Progressing => RECONCILING,
        Kind::Stalled => STALLED,
        Kind::User | Kind::Fine => return None,
    };
    Some(Cond::new(type_, true, b.reason, &b.message))
}

/// The Applied and RestartDue conditions for what the pass did to the
/// target, what keeps the set from Ready, and when to look again.
fn outcome_conditions(
    p: &Pass,
    status: &mut ClientCertificateSetStatus,
    conds: &mut Vec<Cond>,
) -> (Option<Blocker>, Option<Duration>) {
    match p.outcome {
        Outcome::Wired { restarted } => wired(p, *restarted, status, conds),
        Outcome::Stopping { pods } => {
            let msg = format!("StopStart in progress: waiting for {pods} pod(s) to stop");
            let reason = Reason::StopStartInProgress;
            conds.push(Cond::new(APPLIED, false, reason, msg.clone()));
            (Some(Blocker::new(reason, msg)), Some(STOPPING_RECHECK))
        }
        Outcome::Refused(r) => {
            conds.push(Cond::new(APPLIED, false, r.why, r.message.clone()));
            (
                Some(Blocker::new(r.why, r.message.clone())),
                r.why.retry_after(),
            )
        }
    }
}

/// The conditions of a wired target: Applied, RestartDue, and the rollout.
fn wired(
    p: &Pass,
    restarted: bool,
    status: &mut ClientCertificateSetStatus,
    conds: &mut Vec<Cond>,
) -> (Option<Blocker>, Option<Duration>) {
    let set = p.set;
    if restarted {
        status.last_restart = Some(p.now.clone());
    } else if let Some(at) = p
        .restarted_at
        .as_ref()
        .filter(|at| status.last_restart.as_ref().is_none_or(|l| l.0 < at.0))
    {
        status.last_restart = Some(at.clone());
    }
    status.applied_hash = p.applied_hash.clone();
    conds.push(Cond::new(
        APPLIED,
        true,
        Reason::Applied,
        applied_message(set, status),
    ));
    // A restart the user owes: Manual's pods started before the
    // change, or a workload that replaces pods only by hand (a
    // StatefulSet with OnDelete, or partitioned). Neither
    // Reconciling nor Stalled.
    let due = match (&p.restart_due, &p.rollout) {
        (Some(msg), _) => Some((msg.clone(), MANUAL_RECHECK)),
        (None, Rollout::WaitsForUser(m)) => Some((m.clone(), ROLLOUT_RECHECK)),
        _ => None,
    };
    if let Some((msg, recheck)) = due {
        conds.push(Cond::new(
            RESTART_DUE,
            true,
            Reason::RestartDue,
            msg.clone(),
        ));
        // Pods are not watched: look again soon for the user's restart.
        return (Some(Blocker::new(Reason::RestartDue, msg)), Some(recheck));
    }
    conds.push(Cond::new(
        RESTART_DUE,
        false,
        Reason::UpToDate,
        "the app runs with the applied settings",
    ));
    match &p.rollout {
        Rollout::Complete | Rollout::WaitsForUser(_) => (None, None),
        Rollout::InProgress(m) => (
            Some(Blocker::new(Reason::RolloutInProgress, m)),
            Some(ROLLOUT_RECHECK),
        ),
        Rollout::Stuck(m) => (
            Some(Blocker::new(Reason::RolloutStuck, m)),
            Some(STUCK_RECHECK),
        ),
    }
}

fn applied_message(set: &ClientCertificateSet, status: &ClientCertificateSetStatus) -> String {
    format!(
        "rendered ConfigMap and Secret {:?} (hash {}) and wired them into {} {:?}",
        crate::names::rendered(set),
        status.applied_hash.as_deref().unwrap_or("-"),
        set.spec.app.target().0,
        set.spec.app.target().1
    )
}

pub fn condition<'a>(
    status: Option<&'a ClientCertificateSetStatus>,
    type_: &str,
) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}
