//! Whether the app runs with what was applied: the workload's rollout, read
//! from its status the way `kubectl rollout status` reads it (pure).

use k8s_openapi::api::apps::v1::Deployment;

use super::plan::{Outcome, Plan, Restart, Target};

/// Where the rollout that carries the applied settings stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Pods are still being replaced (or the controller has not yet seen
    /// the new template).
    InProgress(String),
    /// The Deployment controller gave up: its progress deadline passed.
    Stuck(String),
}

/// The rollout after a pass: one this pass started is in progress (the
/// object read before the write says nothing about it yet); otherwise the
/// workload's own status tells.
pub fn after_pass(plan: &Plan, outcome: &Outcome, live: Option<&Deployment>) -> Rollout {
    let wrote = match &plan.target {
        Target::Wire(w) => w.change || !matches!(w.restart, Restart::Apply),
        Target::Refuse { .. } => false,
    };
    let restarted = matches!(outcome, Outcome::Wired { restarted: true });
    match live {
        Some(d) if wrote || restarted => Rollout::InProgress(format!(
            "Deployment {:?}: rollout started",
            d.metadata.name.as_deref().unwrap_or_default()
        )),
        Some(d) => state(d),
        None => Rollout::InProgress("the workload is not there".into()),
    }
}

/// The rollout state in a Deployment's status.
pub fn state(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = &d.status else {
        return Rollout::InProgress(format!("Deployment {name:?} has no status yet"));
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress(format!(
            "Deployment {name:?}: waiting for the Deployment controller to see the new template"
        ));
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
    // Stages, not counts: each change of the message is a status write,
    // and `kubectl rollout status` gives the counts.
    if updated < want {
        return Rollout::InProgress(format!(
            "Deployment {name:?}: pods with the new settings are being created"
        ));
    }
    if total > updated {
        return Rollout::InProgress(format!(
            "Deployment {name:?}: pods with the old settings are terminating"
        ));
    }
    if available < updated {
        return Rollout::InProgress(format!(
            "Deployment {name:?}: pods with the new settings are becoming available"
        ));
    }
    Rollout::Complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "shop", "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("a Deployment")
    }

    fn done() -> serde_json::Value {
        json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
    }

    #[test]
    fn every_replica_updated_and_available_is_complete() {
        assert_eq!(state(&deployment(done())), Rollout::Complete);
    }

    #[test]
    fn each_unfinished_stage_is_in_progress_with_what_it_waits_for() {
        let cases = [
            (
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "see the new template",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                "being created",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "old settings are terminating",
            ),
            (
                json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "becoming available",
            ),
        ];
        for (status, says) in cases {
            match state(&deployment(status.clone())) {
                Rollout::InProgress(m) => assert!(m.contains(says), "{status}: {m}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let mut d = deployment(done());
        d.status = None;
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
        let mut d = deployment(
            json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 0, "availableReplicas": 2}),
        );
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(true);
        }
        match state(&d) {
            Rollout::InProgress(m) => assert!(m.contains("paused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
