//! Step 6: status (conditions with observedGeneration, a row per
//! certificate, the hash applied) and Events, computed from what was
//! observed and applied.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use std::time::Duration;

use super::plan::Outcome;
use super::reason::{Kind, Reason};
use super::rollout::Rollout;
use super::validate::Validation;
use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::pkcs12::{Warning, WarningKind};
use crate::resource::{
    ClientCertificateSet, ClientCertificateSetStatus, WorkloadKind, WorkloadRecord,
};

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
        certificates: v
            .rows
            .iter()
            .cloned()
            .map(|mut row| {
                if row.state == "Valid" {
                    row.path = p.paths.and_then(|m| m.get(&row.name)).cloned();
                }
                row
            })
            .collect(),
        applied_hash: old.applied_hash.clone(),
        last_restart: old.last_restart.clone(),
        conditions: Vec::new(),
        workloads: p.workloads.clone(),
        warnings: p.app_warnings.clone(),
        ca_certificates: v
            .ca_rows
            .iter()
            .cloned()
            .map(|mut row| {
                let fingerprint = row.sha256_fingerprint.as_ref();
                row.path = fingerprint.and_then(|f| p.ca_paths.and_then(|m| m.get(f)).cloned());
                row
            })
            .collect(),
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
    let set = p.set;
    let mut requeue = None;
    let blocker = match p.outcome {
        Outcome::Wired { restarted } => {
            if *restarted {
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
            match due {
                Some((msg, recheck)) => {
                    conds.push(Cond::new(
                        RESTART_DUE,
                        true,
                        Reason::RestartDue,
                        msg.clone(),
                    ));
                    // Pods are not watched: look again soon for the user's restart.
                    requeue = Some(recheck);
                    Some(Blocker::new(Reason::RestartDue, msg))
                }
                None => {
                    conds.push(Cond::new(
                        RESTART_DUE,
                        false,
                        Reason::UpToDate,
                        "the app runs with the applied settings",
                    ));
                    match &p.rollout {
                        Rollout::Complete | Rollout::WaitsForUser(_) => None,
                        Rollout::InProgress(m) => {
                            requeue = Some(ROLLOUT_RECHECK);
                            Some(Blocker::new(Reason::RolloutInProgress, m))
                        }
                        Rollout::Stuck(m) => {
                            requeue = Some(STUCK_RECHECK);
                            Some(Blocker::new(Reason::RolloutStuck, m))
                        }
                    }
                }
            }
        }
        Outcome::Stopping { pods } => {
            requeue = Some(STOPPING_RECHECK);
            let msg = format!("StopStart in progress: waiting for {pods} pod(s) to stop");
            conds.push(Cond::new(
                APPLIED,
                false,
                Reason::StopStartInProgress,
                msg.clone(),
            ));
            Some(Blocker::new(Reason::StopStartInProgress, msg))
        }
        Outcome::Refused(r) => {
            requeue = r.why.retry_after();
            conds.push(Cond::new(APPLIED, false, r.why, r.message.clone()));
            Some(Blocker::new(r.why, r.message.clone()))
        }
    };
    (blocker, requeue)
}

fn applied_message(set: &ClientCertificateSet, status: &ClientCertificateSetStatus) -> String {
    format!(
        "rendered ConfigMap and Secret {:?} (hash {}) and wired them into {} {:?}",
        super::names::rendered(set),
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

/// An Event to publish about a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub reason: Reason,
    pub action: &'static str,
    pub note: String,
    /// The workload the Event is about, when not the set's target.
    pub workload: Option<(WorkloadKind, String)>,
    /// Published about the workload (the set as related object): what
    /// `kubectl describe deployment` should show.
    pub on_workload: bool,
    /// The workload's uid: `kubectl describe` finds Events by it.
    pub workload_uid: Option<String>,
}

impl EventSpec {
    pub fn new(reason: Reason, action: &'static str, note: String) -> Self {
        EventSpec {
            reason,
            action,
            note,
            workload: None,
            on_workload: false,
            workload_uid: None,
        }
    }

    /// About `workload` rather than the set's target.
    pub fn about(mut self, kind: WorkloadKind, workload: &str) -> Self {
        self.workload = Some((kind, workload.to_string()));
        self
    }
}

/// The Events a pass owes, from the status before and after it: one per
/// transition (a new failure reason, a new applied hash, a new restart, the
/// first expiring-soon warning), none when nothing changed.
pub fn events_due(
    set: &ClientCertificateSet,
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
    ready: &Cond,
    warnings: &[(String, Warning)],
) -> Vec<EventSpec> {
    let mut due = Vec::new();
    let before = condition(Some(old), READY);
    let changed =
        before.is_none_or(|b| b.reason != ready.reason.name() || (b.status == "True") != ready.ok);
    // A rollout under way is the Applied Event's sequel: no Event of its own.
    if changed && !ready.ok && ready.reason != Reason::RolloutInProgress {
        let action = if ready.reason == Reason::StopStartInProgress {
            "Restart"
        } else {
            "Validate"
        };
        due.push(EventSpec::new(ready.reason, action, ready.message.clone()));
    }
    // A change and the restart it caused are one Event: each Event is a
    // write the API server stores, and a user reads them together anyway.
    let applied = new
        .applied_hash
        .as_ref()
        .filter(|_| old.applied_hash != new.applied_hash);
    let restarted =
        (old.last_restart != new.last_restart && new.last_restart.is_some()).then(|| {
            let (kind, name) = set.spec.app.target();
            format!("restarted {kind} {name:?} ({:?})", set.spec.restart)
        });
    // `kubectl describe` of the workload lists only Events about it: say
    // there why it rolled.
    due.extend(restarted.as_deref().map(|r| on_workload(set, new, r)));
    match (applied, restarted) {
        (Some(h), restarted) => {
            let mut note = format!("applied client certificate settings (hash {h})");
            if let Some(r) = restarted {
                note = format!("{note}; {r}");
            }
            due.push(EventSpec::new(Reason::Applied, "Apply", note));
        }
        (None, Some(r)) => due.push(EventSpec::new(Reason::Restarted, "Restart", r)),
        (None, None) => {}
    }
    let expiring: Vec<String> = warnings
        .iter()
        .filter(|(_, w)| w.kind == WarningKind::ExpiringSoon)
        .map(|(c, w)| format!("{c}: {w}"))
        .collect();
    let was_expiring = old.certificates.iter().any(|c| {
        c.warnings
            .iter()
            .any(|w| WarningKind::ExpiringSoon.is_in(w))
    });
    // Each CA warning once: by entry, certificate and kind, not by its
    // text (an expiring-soon text counts the days down).
    let ca_warnings = |s: &ClientCertificateSetStatus| -> Vec<(String, String)> {
        s.ca_certificates
            .iter()
            .flat_map(|r| {
                r.warnings.iter().map(move |w| {
                    let kind = w.split(':').next().unwrap_or_default();
                    let fingerprint = r.sha256_fingerprint.as_deref().unwrap_or_default();
                    (
                        format!("{}/{fingerprint}/{kind}", r.name),
                        format!("{}: {w}", r.name),
                    )
                })
            })
            .collect()
    };
    let was: Vec<String> = ca_warnings(old).into_iter().map(|(k, _)| k).collect();
    let fresh: Vec<String> = ca_warnings(new)
        .into_iter()
        .filter(|(k, _)| !was.contains(k))
        .map(|(_, text)| text)
        .collect();
    if !fresh.is_empty() {
        due.push(EventSpec::new(
            Reason::CACertificateWarning,
            "Validate",
            fresh.join("; "),
        ));
    }
    let new_app_warnings: Vec<&String> = new
        .warnings
        .iter()
        .filter(|w| !old.warnings.contains(w))
        .collect();
    if !new_app_warnings.is_empty() {
        let text: Vec<&str> = new_app_warnings.iter().map(|w| w.as_str()).collect();
        due.push(EventSpec::new(
            Reason::BuildpackCertificateSetting,
            "Validate",
            text.join("; "),
        ));
    }
    if !expiring.is_empty() && !was_expiring {
        due.push(EventSpec::new(
            Reason::ExpiringSoon,
            "Validate",
            expiring.join("; "),
        ));
    }
    due
}

/// The Event about the workload itself for a restart certpin made.
fn on_workload(
    set: &ClientCertificateSet,
    new: &ClientCertificateSetStatus,
    restarted: &str,
) -> EventSpec {
    let mut e = EventSpec::new(
        Reason::ClientCertificatesApplied,
        "Restart",
        format!(
            "ClientCertificateSet {:?}: {restarted} to apply client certificate settings (hash {})",
            super::names::set_name(set),
            new.applied_hash.as_deref().unwrap_or("-")
        ),
    );
    e.on_workload = true;
    e
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::CertificateStatus;

    fn set() -> ClientCertificateSet {
        serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "prod", "namespace": "shop"},
            "spec": {"app": {"deployment": "shop"},
                     "certificates": [{"name": "a", "tls": {"secretName": "a"}, "pinTo": ["x.example"]}]}
        }))
        .expect("a valid set")
    }

    fn with_ready(status: &str, reason: &str) -> ClientCertificateSetStatus {
        ClientCertificateSetStatus {
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        }
    }

    fn reasons(due: &[EventSpec]) -> Vec<String> {
        due.iter().map(|e| e.reason.to_string()).collect()
    }

    fn wrong_password() -> Reason {
        Reason::Certificate(crate::pkcs12::Reason::WrongPassword)
    }

    #[test]
    fn a_first_rendering_announces_the_apply_and_the_restart_in_one_event() {
        let old = ClientCertificateSetStatus::default();
        let new = ClientCertificateSetStatus {
            applied_hash: Some("h1".into()),
            last_restart: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let ready = Cond::new(READY, true, Reason::Applied, "ok");
        let due = events_due(&set(), &old, &new, &ready, &[]);
        assert_eq!(reasons(&due), ["ClientCertificatesApplied", "Applied"]);
        assert!(
            due[0].on_workload,
            "the workload's own Event says why it rolled"
        );
        assert_eq!(
            due[0].note,
            "ClientCertificateSet \"prod\": restarted Deployment \"shop\" (Rolling) to apply client certificate settings (hash h1)"
        );
        let due = &due[1..];
        assert!(!due[0].reason.warns() && !due[0].on_workload);
        assert_eq!(
            due[0].note,
            "applied client certificate settings (hash h1); restarted Deployment \"shop\" (Rolling)"
        );
    }

    #[test]
    fn an_apply_without_restart_and_a_later_restart_are_announced_apart() {
        let old = ClientCertificateSetStatus::default();
        let applied = ClientCertificateSetStatus {
            applied_hash: Some("h1".into()),
            ..Default::default()
        };
        let ready = Cond::new(READY, true, Reason::Applied, "ok");
        let due = events_due(&set(), &old, &applied, &ready, &[]);
        assert_eq!(reasons(&due), ["Applied"]);
        assert_eq!(due[0].note, "applied client certificate settings (hash h1)");
        let restarted = ClientCertificateSetStatus {
            last_restart: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..applied.clone()
        };
        let due = events_due(&set(), &applied, &restarted, &ready, &[]);
        assert_eq!(reasons(&due), ["ClientCertificatesApplied", "Restarted"]);
        assert_eq!(due[1].note, "restarted Deployment \"shop\" (Rolling)");
    }

    #[test]
    fn an_unchanged_pass_owes_nothing() {
        let mut old = with_ready("True", "Applied");
        old.applied_hash = Some("h1".into());
        let new = old.clone();
        let ready = Cond::new(READY, true, Reason::Applied, "ok");
        assert!(events_due(&set(), &old, &new, &ready, &[]).is_empty());
    }

    #[test]
    fn a_failure_is_a_warning_once_per_reason() {
        let old = with_ready("True", "Applied");
        let ready = Cond::new(READY, false, wrong_password(), "a: wrong password");
        let due = events_due(&set(), &old, &old, &ready, &[]);
        assert_eq!(reasons(&due), ["WrongPassword"]);
        assert!(due[0].reason.warns());
        let failing = with_ready("False", "WrongPassword");
        assert!(events_due(&set(), &failing, &failing, &ready, &[]).is_empty());
        let other = Cond::new(
            READY,
            false,
            Reason::Certificate(crate::pkcs12::Reason::Expired),
            "a: expired",
        );
        assert_eq!(
            reasons(&events_due(&set(), &failing, &failing, &other, &[])),
            ["Expired"]
        );
    }

    #[test]
    fn expiring_soon_is_announced_when_it_starts() {
        let old = with_ready("True", "Applied");
        let ready = Cond::new(READY, true, Reason::ValidWithWarnings, "w");
        let warnings = vec![(
            "a".to_string(),
            Warning::new(WarningKind::ExpiringSoon, "in 3 days"),
        )];
        let due = events_due(&set(), &old, &old, &ready, &warnings);
        assert_eq!(reasons(&due), ["ExpiringSoon"]);
        assert!(due[0].reason.warns());
        let mut already = old.clone();
        already.certificates = vec![CertificateStatus {
            warnings: vec!["expiring-soon: in 4 days".into()],
            ..Default::default()
        }];
        assert!(events_due(&set(), &already, &already, &ready, &warnings).is_empty());
    }
}
