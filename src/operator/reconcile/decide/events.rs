//! The Events a pass owes (pure): one per transition of the status.

use crate::operator::reconcile::decide::status::{Cond, READY, condition};
use crate::operator::reconcile::reason::Reason;
use crate::pkcs12::{Warning, WarningKind};
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus, WorkloadKind};

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
    let mut due: Vec<EventSpec> = ready_event(old, ready).into_iter().collect();
    due.extend(applied_events(set, old, new));
    due.extend(ca_warning_event(old, new));
    let new_app_warnings: Vec<&str> = (new.warnings.iter())
        .filter(|w| !old.warnings.contains(w))
        .map(String::as_str)
        .collect();
    if !new_app_warnings.is_empty() {
        let note = new_app_warnings.join("; ");
        due.push(EventSpec::new(
            Reason::BuildpackCertificateSetting,
            "Validate",
            note,
        ));
    }
    due.extend(expiring_event(old, warnings));
    due
}

/// A new reason the set is not Ready. A rollout under way is the Applied
/// Event's sequel: no Event of its own.
fn ready_event(old: &ClientCertificateSetStatus, ready: &Cond) -> Option<EventSpec> {
    let before = condition(Some(old), READY);
    let changed =
        before.is_none_or(|b| b.reason != ready.reason.name() || (b.status == "True") != ready.ok);
    if !changed || ready.ok || ready.reason == Reason::RolloutInProgress {
        return None;
    }
    let action = if ready.reason == Reason::StopStartInProgress {
        "Restart"
    } else {
        "Validate"
    };
    Some(EventSpec::new(ready.reason, action, ready.message.clone()))
}

/// A change and the restart it caused are one Event: each Event is a write
/// the API server stores, and a user reads them together anyway. The
/// workload gets its own (`kubectl describe` of it lists only Events about
/// it) saying why it rolled.
fn applied_events(
    set: &ClientCertificateSet,
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
) -> Vec<EventSpec> {
    let applied = new
        .applied_hash
        .as_ref()
        .filter(|_| old.applied_hash != new.applied_hash);
    let restarted =
        (old.last_restart != new.last_restart && new.last_restart.is_some()).then(|| {
            let (kind, name) = set.spec.app.target();
            format!("restarted {kind} {name:?} ({:?})", set.spec.restart)
        });
    let mut due: Vec<EventSpec> = restarted
        .as_deref()
        .map(|r| on_workload(set, new, r))
        .into_iter()
        .collect();
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
    due
}

/// Each CA warning once: by entry, certificate and kind, not by its text
/// (an expiring-soon text counts the days down).
fn ca_warning_event(
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
) -> Option<EventSpec> {
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
    (!fresh.is_empty())
        .then(|| EventSpec::new(Reason::CACertificateWarning, "Validate", fresh.join("; ")))
}

/// The first expiring-soon warning of the set's certificates.
fn expiring_event(
    old: &ClientCertificateSetStatus,
    warnings: &[(String, Warning)],
) -> Option<EventSpec> {
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
    (!expiring.is_empty() && !was_expiring)
        .then(|| EventSpec::new(Reason::ExpiringSoon, "Validate", expiring.join("; ")))
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
            crate::names::set_name(set),
            new.applied_hash.as_deref().unwrap_or("-")
        ),
    );
    e.on_workload = true;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::CertificateStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;

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
