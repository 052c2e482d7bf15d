//! Step 3d: on a rotation, the rendered ConfigMap and Secret are written
//! while the quiet window runs; the workload, whose change restarts the
//! app, still waits for the window. The first of the two ordered writes so
//! hides in the wait instead of following it.
//!
//! Only where that changes nothing that runs: a rolling restart (or a
//! template change of a workload with no pods) of a workload this set
//! already wires, over rendered objects that are this
//! set's (the Secret keeps the files of the rendering the pods use), and
//! only for a change that begins a burst (later changes of a burst take
//! the ordered path). If a change supersedes the pass, the objects are
//! written back as they were before the pass ends: the next pass starts
//! from the rendering the pods run, so bad input that ends a burst leaves
//! the app's configuration as it was, and the files the running pods use
//! are the ones a new rendering keeps.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::build;
use super::execute::{self, RenderedWrites};
use super::plan::{Plan, Restart, Target};
use super::quiet::Touch;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::resource::ClientCertificateSet;

/// The writes to make early, and how to undo them.
pub struct Early<'a> {
    pub writes: &'a RenderedWrites,
    pub undo: RenderedWrites,
}

/// The rendered objects as the cluster holds them before this pass.
pub struct Live<'a> {
    pub secret: Option<&'a Secret>,
    pub config_map: Option<&'a ConfigMap>,
}

/// Whether this pass may write its rendered objects early, and the bodies
/// that put them back. `touch`: the set's latest input change; `began`: the
/// touch count this pass began with.
pub fn prepare<'a>(
    set: &ClientCertificateSet,
    ns: &str,
    plan: &Plan,
    writes: &'a RenderedWrites,
    live: Live,
    touch: Option<Touch>,
    began: u64,
) -> Option<Early<'a>> {
    let Target::Wire(w) = &plan.target else {
        return None;
    };
    // A rolling restart (or a template change with no pods to restart) of a
    // workload already claimed by this set; stops and starts keep their own
    // order, and a Manual workload's running pods keep the ordered path.
    let rolling =
        w.restart == Restart::Apply && w.change && (w.rolls || w.idle) && w.precondition.is_none();
    // The change this pass is for begins a burst (see `quiet::Touches`).
    let first_of_burst = touch.is_some_and(|t| t.count == began && t.at == t.first);
    if !rolling || !first_of_burst || !plan.release.is_empty() {
        return None;
    }
    // Each object written early exists and is this set's, so that it can be
    // written back.
    let undo_secret = match (&writes.secret, live.secret) {
        (None, _) => None,
        (Some(_), Some(s)) => Some(build::secret_object_of(set, ns, s)),
        (Some(_), None) => return None,
    };
    let undo_config_map = match (&writes.config_map, live.config_map) {
        (None, _) => None,
        (Some(_), Some(c)) => Some(build::config_map_object_of(set, ns, c)),
        (Some(_), None) => return None,
    };
    if undo_secret.is_none() && undo_config_map.is_none() {
        return None;
    }
    Some(Early {
        writes,
        undo: RenderedWrites {
            name: writes.name.clone(),
            config_map: undo_config_map,
            secret: undo_secret,
        },
    })
}

/// Writes the rendered objects early; whether they were written. A write
/// that fails is left to the ordered path, which makes it again and
/// reports what the API server says.
pub async fn write(ctx: &Context, ns: &str, early: Option<&Early<'_>>) -> bool {
    let Some(e) = early else {
        return false;
    };
    match execute::write_rendered(ctx, ns, e.writes).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "the early write of the rendered objects failed; the ordered path writes them");
            false
        }
    }
}

/// Puts back what `write` replaced.
pub async fn undo(ctx: &Context, ns: &str, early: &Early<'_>) -> Result<()> {
    execute::write_rendered(ctx, ns, &early.undo).await?;
    tracing::debug!("superseded: the rendered objects written early are back as they were");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::reconcile::plan::{Target, Wire};
    use crate::resource::WorkloadKind;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn set() -> ClientCertificateSet {
        serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": "prod", "namespace": "shop", "uid": "u-1"},
            "spec": {"app": {"deployment": "shop"}, "certificates": []}
        }))
        .unwrap()
    }

    fn wire(restart: Restart, rolls: bool, precondition: Option<&str>) -> Plan {
        wire_of(restart, rolls, false, precondition)
    }

    fn wire_of(restart: Restart, rolls: bool, idle: bool, precondition: Option<&str>) -> Plan {
        Plan {
            target: Target::Wire(Wire {
                kind: WorkloadKind::Deployment,
                name: "shop".into(),
                containers: vec![],
                fragment: json!({}),
                change: true,
                rolls,
                idle,
                unrecorded_restart: false,
                precondition: precondition.map(str::to_string),
                restart,
            }),
            release: vec![],
        }
    }

    fn writes() -> RenderedWrites {
        RenderedWrites {
            name: "shop-certpin".into(),
            config_map: Some(json!({"data": {"ClientCertificates": "new"}})),
            secret: Some(json!({"data": {}})),
        }
    }

    fn live_secret() -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "shop-certpin"}, "data": {"k": "b2xk"}}))
            .unwrap()
    }

    fn live_config_map() -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": "shop-certpin"}, "data": {"ClientCertificates": "old"}}),
        )
        .unwrap()
    }

    fn both<'a>(secret: &'a Secret, config_map: &'a ConfigMap) -> Live<'a> {
        Live {
            secret: Some(secret),
            config_map: Some(config_map),
        }
    }

    fn isolated() -> Option<Touch> {
        let at = Instant::now();
        Some(Touch {
            count: 3,
            at,
            first: at,
        })
    }

    #[test]
    fn a_rotation_of_a_wired_rolling_workload_writes_early_and_can_undo() {
        let (s, w, sec, cm) = (set(), writes(), live_secret(), live_config_map());
        let live = || both(&sec, &cm);
        let plan = wire(Restart::Apply, true, None);
        let e = prepare(&s, "shop", &plan, &w, live(), isolated(), 3).expect("early");
        assert_eq!(
            e.undo.config_map.as_ref().unwrap()["data"],
            json!({"ClientCertificates": "old"})
        );
        assert_eq!(
            e.undo.secret.as_ref().unwrap()["data"],
            json!({"k": "b2xk"})
        );
        // Only what is written early is written back.
        let secret_only = RenderedWrites {
            config_map: None,
            ..writes()
        };
        let e = prepare(&s, "shop", &plan, &secret_only, live(), isolated(), 3).expect("early");
        assert!(e.undo.config_map.is_none() && e.undo.secret.is_some());
        // A template change of a workload with no pods (nothing runs): the
        // same early write, and the same objects to put back.
        let idle = wire_of(Restart::Apply, false, true, None);
        let e = prepare(&s, "shop", &idle, &w, live(), isolated(), 3).expect("early, no pods");
        assert_eq!(
            (
                e.undo.config_map.as_ref(),
                e.undo.secret.as_ref().map(|s| &s["data"])
            ),
            (
                Some(&build::config_map_object_of(&set(), "shop", &cm)),
                Some(&json!({"k": "b2xk"}))
            )
        );
    }

    #[test]
    fn everything_else_keeps_the_ordered_path() {
        let (s, w, sec, cm) = (set(), writes(), live_secret(), live_config_map());
        let live = || both(&sec, &cm);
        let rolling = wire(Restart::Apply, true, None);
        let cases = [
            ("stop-then-start", wire(Restart::StopStart, true, None)),
            ("resume", wire(Restart::Resume { replicas: 2 }, true, None)),
            (
                "no rollout of running pods (Manual, OnDelete)",
                wire(Restart::Apply, false, None),
            ),
            ("not yet claimed", wire(Restart::Apply, true, Some("41"))),
        ];
        for (what, plan) in &cases {
            assert!(
                prepare(&s, "shop", plan, &w, live(), isolated(), 3).is_none(),
                "{what}"
            );
        }
        // A later change of a burst, or a pass begun before the latest change.
        let at = Instant::now();
        let later = Some(Touch {
            count: 3,
            at,
            first: at - Duration::from_millis(30),
        });
        assert!(prepare(&s, "shop", &rolling, &w, live(), later, 3).is_none());
        assert!(prepare(&s, "shop", &rolling, &w, live(), isolated(), 2).is_none());
        assert!(prepare(&s, "shop", &rolling, &w, live(), None, 0).is_none());
        // First wiring: nothing to put back.
        let none = Live {
            secret: None,
            config_map: Some(&cm),
        };
        assert!(prepare(&s, "shop", &rolling, &w, none, isolated(), 3).is_none());
        // Nothing to write.
        let nothing = RenderedWrites {
            name: "shop-certpin".into(),
            ..Default::default()
        };
        assert!(prepare(&s, "shop", &rolling, &nothing, live(), isolated(), 3).is_none());
    }
}
