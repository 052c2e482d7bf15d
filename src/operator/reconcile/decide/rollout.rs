//! Whether the app runs with what was applied: the workload's rollout, read
//! from its status the way `kubectl rollout status` reads it, per kind (pure).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use super::plan::{Outcome, Plan, Restart, Target, Wire};
use crate::operator::reconcile::kinds::Workload;

/// Where the rollout that carries the applied settings stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Pods are still being replaced (or the controller has not yet seen
    /// the new template).
    InProgress(String),
    /// The Deployment controller gave up: its progress deadline passed.
    Stuck(String),
    /// The workload replaces pods only when someone acts: a StatefulSet
    /// with `OnDelete`, or partitioned above pods that need the update.
    WaitsForUser(String),
}

/// The rollout after a pass: the one this pass started (the object read
/// before the write says nothing about it yet), or what the workload's own
/// status tells.
pub fn after_pass(plan: &Plan, outcome: &Outcome, live: Option<&Workload>) -> Rollout {
    let wrote = plan.writes_workload();
    let restarted = matches!(outcome, Outcome::Wired { restarted: true });
    match (live, &plan.target) {
        (Some(d), Target::Wire(w)) if wrote || restarted => started(w, d),
        (Some(d), _) => state(d),
        (None, _) => Rollout::InProgress("the workload is not there".into()),
    }
}

/// A rollout that wiring `d` as `w` starts: complete when the workload has
/// no pods and asks for none (nothing runs older settings, and any pod it
/// starts gets these), otherwise rolling out.
pub fn started(w: &Wire, d: &Workload) -> Rollout {
    if w.idle && w.restart == Restart::Apply && !d.has_pods() {
        Rollout::Complete
    } else {
        Rollout::InProgress(rolling(d.kind().as_str(), d.name()))
    }
}

/// One text for every step of a rollout under way, from the write until
/// the last new pod is available: a change of text would be a status write
/// and another pass, and `kubectl rollout status` tells the steps.
fn rolling(kind: &str, name: &str) -> String {
    format!(
        "{kind} {name:?}: rolling out the new settings (kubectl rollout status {}/{name})",
        kind.to_lowercase()
    )
}

/// The rollout state in a workload's status.
pub fn state(w: &Workload) -> Rollout {
    match w {
        Workload::Deployment(d) => deployment(d),
        Workload::StatefulSet(s) => stateful_set(s),
    }
}

/// The step a Deployment's rollout is at, as a set would report it, with
/// its generation; `None` while its status describes an older spec (no
/// news for a set waiting on this generation).
pub fn deployment_stage(d: &Deployment) -> Option<u64> {
    let observed = d.status.as_ref()?.observed_generation?;
    stage(d.metadata.generation, observed, || deployment(d))
}

/// `deployment_stage` for a StatefulSet.
pub fn stateful_set_stage(s: &StatefulSet) -> Option<u64> {
    let observed = s.status.as_ref()?.observed_generation?;
    stage(s.metadata.generation, observed, || stateful_set(s))
}

/// The stage at which the controller first reports a rollout certpin
/// started at `generation`, if it is as the starting pass reported it.
pub fn started_stage(generation: Option<i64>, started: Rollout) -> u64 {
    let generation = generation.unwrap_or(0);
    stage(Some(generation), generation, || started).unwrap_or_default()
}

fn stage(generation: Option<i64>, observed: i64, state: impl FnOnce() -> Rollout) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let generation = generation.unwrap_or(0);
    if observed < generation {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (generation, state()).hash(&mut h);
    Some(h.finish())
}

/// A StatefulSet replaces its pods one ordinal at a time, highest first,
/// down to its partition; it has no progress deadline, so it is never
/// reported stuck. OnDelete replaces a pod only when someone deletes it.
fn stateful_set(s: &StatefulSet) -> Rollout {
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = &s.status else {
        return Rollout::InProgress(rolling("StatefulSet", name));
    };
    if status.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0) {
        return Rollout::InProgress(rolling("StatefulSet", name));
    }
    let spec = s.spec.as_ref();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want && on_delete {
        return Rollout::WaitsForUser(format!(
            "StatefulSet {name:?} updates on delete: its pods get the new settings when they are deleted \
             (kubectl delete pod, one ordinal at a time)"
        ));
    }
    if updated < want && partition > 0 && updated >= want - partition {
        return Rollout::WaitsForUser(format!(
            "StatefulSet {name:?} is partitioned at {partition}: pods below that ordinal keep the old \
             settings until the partition is lowered"
        ));
    }
    if updated < want || status.replicas > want {
        return Rollout::InProgress(rolling("StatefulSet", name));
    }
    if ready < want || available < want {
        return Rollout::InProgress(rolling("StatefulSet", name));
    }
    let revisions_differ = !on_delete
        && want > 0
        && status.current_revision.is_some()
        && status.current_revision != status.update_revision;
    if revisions_differ {
        return Rollout::InProgress(rolling("StatefulSet", name));
    }
    Rollout::Complete
}

/// The rollout state in a Deployment's status.
fn deployment(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = &d.status else {
        return Rollout::InProgress(rolling("Deployment", name));
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress(rolling("Deployment", name));
    }
    let deadline_passed = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_passed {
        return Rollout::Stuck(format!(
            "Deployment {name:?} exceeded its progress deadline: its new pods do not become available"
        ));
    }
    let spec = d.spec.as_ref();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want && spec.and_then(|s| s.paused).unwrap_or(false) {
        return Rollout::InProgress(format!(
            "Deployment {name:?} is paused: its pods are replaced when it is resumed"
        ));
    }
    if updated < want || total > updated {
        return Rollout::InProgress(rolling("Deployment", name));
    }
    if available < updated {
        return Rollout::InProgress(rolling("Deployment", name));
    }
    Rollout::Complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Workload {
        Workload::Deployment(
            serde_json::from_value(json!({
                "metadata": {"name": "shop", "generation": 4},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": status,
            }))
            .expect("a Deployment"),
        )
    }

    fn stateful_set(strategy: serde_json::Value, status: serde_json::Value) -> Workload {
        Workload::StatefulSet(
            serde_json::from_value(json!({
                "metadata": {"name": "shop", "generation": 4},
                "spec": {"replicas": 3, "selector": {}, "serviceName": "shop", "template": {},
                         "updateStrategy": strategy},
                "status": status,
            }))
            .expect("a StatefulSet"),
        )
    }

    #[test]
    fn a_stateful_set_is_complete_when_every_ordinal_runs_the_update_revision_and_is_ready() {
        let rolling = json!({"type": "RollingUpdate"});
        let done = json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3,
            "readyReplicas": 3, "availableReplicas": 3, "currentRevision": "r2", "updateRevision": "r2"});
        assert_eq!(
            state(&stateful_set(rolling.clone(), done.clone())),
            Rollout::Complete
        );
        let cases = [
            (
                rolling.clone(),
                json!({"observedGeneration": 3, "replicas": 3}),
                "rolling out",
            ),
            (
                rolling.clone(),
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1,
                "readyReplicas": 3, "currentRevision": "r1", "updateRevision": "r2"}),
                "rolling out",
            ),
            (
                rolling.clone(),
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3,
                "readyReplicas": 2, "availableReplicas": 2, "currentRevision": "r1", "updateRevision": "r2"}),
                "rolling out",
            ),
            (
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 3,
                "availableReplicas": 3, "currentRevision": "r1", "updateRevision": "r2"}),
                "partitioned at 2",
            ),
            (
                json!({"type": "OnDelete"}),
                json!({"observedGeneration": 4, "replicas": 3,
                "updatedReplicas": 0, "readyReplicas": 3, "currentRevision": "r1", "updateRevision": "r2"}),
                "when they are deleted",
            ),
        ];
        for (strategy, status, says) in cases {
            match state(&stateful_set(strategy, status.clone())) {
                Rollout::InProgress(m) | Rollout::WaitsForUser(m) => {
                    assert!(m.contains(says), "{status}: {m}")
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        let on_delete = stateful_set(
            json!({"type": "OnDelete"}),
            json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 3}),
        );
        assert!(matches!(state(&on_delete), Rollout::WaitsForUser(_)));
    }

    fn done() -> serde_json::Value {
        json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
    }

    #[test]
    fn a_started_rollout_is_at_the_stage_its_controller_first_reports() {
        let first = json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2});
        let Workload::Deployment(d) = deployment(first) else {
            unreachable!()
        };
        assert_eq!(
            deployment_stage(&d),
            Some(started_stage(
                Some(4),
                Rollout::InProgress(rolling("Deployment", "shop"))
            ))
        );
        let first = json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 0,
            "readyReplicas": 3, "currentRevision": "r1", "updateRevision": "r2"});
        let Workload::StatefulSet(s) = stateful_set(json!({"type": "RollingUpdate"}), first) else {
            unreachable!()
        };
        assert_eq!(
            stateful_set_stage(&s),
            Some(started_stage(
                Some(4),
                Rollout::InProgress(rolling("StatefulSet", "shop"))
            ))
        );
    }

    #[test]
    fn a_write_to_an_app_without_pods_is_complete_once_its_controller_reports() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "shop", "generation": 4},
            "spec": {"replicas": 0, "selector": {}, "template": {}},
            "status": {"observedGeneration": 4},
        }))
        .expect("a Deployment");
        let idle = started_stage(Some(4), Rollout::Complete);
        assert_eq!(deployment_stage(&d), Some(idle));
        // Scaled up meanwhile: the report is news.
        let mut scaled = d.clone();
        if let Some(spec) = scaled.spec.as_mut() {
            spec.replicas = Some(1);
        }
        assert_ne!(deployment_stage(&scaled), Some(idle));
    }

    #[test]
    fn every_replica_updated_and_available_is_complete() {
        assert_eq!(state(&deployment(done())), Rollout::Complete);
    }

    #[test]
    fn each_unfinished_step_is_in_progress_with_one_text() {
        let cases = [
            (
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "rolling out",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                "rolling out",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "rolling out",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "rolling out",
            ),
        ];
        for (status, says) in cases {
            match state(&deployment(status.clone())) {
                Rollout::InProgress(m) => assert!(m.contains(says), "{status}: {m}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let Workload::Deployment(mut d) = deployment(done()) else {
            unreachable!()
        };
        d.status = None;
        let d = Workload::Deployment(d);
        assert!(matches!(state(&d), Rollout::InProgress(_)));
    }

    #[test]
    fn a_passed_progress_deadline_is_stuck() {
        let mut status = done();
        status["updatedReplicas"] = json!(1);
        status["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(state(&deployment(status)), Rollout::Stuck(_)));
    }

    #[test]
    fn a_paused_deployment_is_in_progress() {
        let Workload::Deployment(mut d) = deployment(
            json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 0, "availableReplicas": 2}),
        ) else {
            unreachable!()
        };
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(true);
        }
        let d = Workload::Deployment(d);
        match state(&d) {
            Rollout::InProgress(m) => assert!(m.contains("paused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
