//! Restarting the app so the new settings take effect, only when the
//! rendered content changed.
//!
//! - Rolling: the pod-template annotation changes; the workload's own
//!   rolling update replaces the pods (a Deployment's surge and
//!   unavailability limits, a StatefulSet's ordinal order and partition).
//! - StopStart: "stop, then start", through the scale subresource of
//!   either kind. The replica count is recorded in an annotation on the
//!   workload before scaling to zero, so an operator killed in between
//!   restores it when it comes back.
//! - Manual: nothing; status says a restart is due.

use kube::Api;
use kube::api::DynamicObject;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::names::{ANN_STOP_START, LABEL_SET_UID};
use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::operator::faults;
use crate::operator::reconcile::decide::restart::{Phase, StopStartRecord, record_of, replicas_of};
use crate::operator::reconcile::kinds::{self, Workload};
use crate::operator::reconcile::observe::pods::pods_of;
use crate::resource::WorkloadKind;

fn manager() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The stop record is applied by a field manager of its own, with the
/// set's claim label: the claim holds while the app is stopped, and
/// clearing the record (an empty apply) leaves certpin's wiring alone.
const RECORD_MANAGER: &str = "certpin-stop-start";

async fn set_record(
    api: &Api<DynamicObject>,
    kind: WorkloadKind,
    name: &str,
    record: Option<(StopStartRecord, &str)>,
    precondition: Option<&str>,
) -> Result<()> {
    let mut body =
        json!({"apiVersion": "apps/v1", "kind": kind.as_str(), "metadata": {"name": name}});
    if let Some((r, uid)) = record {
        body["metadata"]["annotations"] =
            json!({ANN_STOP_START: serde_json::to_string(&r).unwrap_or_default()});
        body["metadata"]["labels"] = json!({LABEL_SET_UID: uid});
    }
    if let Some(rv) = precondition {
        body["metadata"]["resourceVersion"] = json!(rv);
    }
    let params = PatchParams::apply(RECORD_MANAGER).force();
    let written = api.patch(name, &params, &Patch::Apply(&body)).await?;
    // A record written by an earlier version (a merge patch) is not
    // released by the apply: remove it the way it was written.
    let has_record = written
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_STOP_START));
    if record.is_none() && has_record {
        let patch = json!({"metadata": {"annotations": {ANN_STOP_START: null}}});
        api.patch(name, &manager(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

async fn scale(api: &Api<DynamicObject>, name: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &manager(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Progress of a StopStart.
#[derive(Debug, PartialEq, Eq)]
pub enum StopStart {
    /// Pods are still running or terminating: come back later.
    Waiting { pods: usize },
    /// No pod is left: apply the new wiring, then call `finish`.
    Stopped { replicas: i32 },
}

/// Stops the app (recording its replica count first, with the claim of the
/// set `uid`, conditional on `precondition` when the set does not hold the
/// claim yet), or continues a stop that is already in progress.
pub async fn stop(
    ctx: &Context,
    ns: &str,
    d: &Workload,
    uid: &str,
    precondition: Option<&str>,
) -> Result<StopStart> {
    let (kind, name) = (d.kind(), d.name());
    let api = kinds::api(&ctx.client, ns, kind);
    let record = match record_of(d) {
        Some(r) => r,
        None => {
            let r = StopStartRecord {
                replicas: replicas_of(d),
                phase: Phase::Stopping,
            };
            // Record first: a crash after scaling must not lose the count.
            set_record(&api, kind, name, Some((r, uid)), precondition).await?;
            faults::after("stop-record");
            r
        }
    };
    if record.phase == Phase::Starting {
        return Ok(StopStart::Stopped {
            replicas: record.replicas,
        });
    }
    if replicas_of(d) != 0 {
        scale(&api, name, 0).await?;
        faults::after("scale-zero");
    }
    let pods = pods_of(&ctx.client, ns, d).await?.len();
    if pods > 0 {
        return Ok(StopStart::Waiting { pods });
    }
    let starting = StopStartRecord {
        phase: Phase::Starting,
        ..record
    };
    set_record(&api, kind, name, Some((starting, uid)), None).await?;
    faults::after("stopped");
    Ok(StopStart::Stopped {
        replicas: record.replicas,
    })
}

/// Starts the app again at the recorded replica count and clears the record.
pub async fn start(
    ctx: &Context,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    replicas: i32,
) -> Result<()> {
    let api = kinds::api(&ctx.client, ns, kind);
    scale(&api, name, replicas).await?;
    faults::after("start-scale");
    set_record(&api, kind, name, None, None).await
}
