//! Step 6: status (conditions with observedGeneration, a row per
//! certificate, the hash applied) and Events, computed from what was
//! observed and applied.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus};

pub const READY: &str = "Ready";
pub const CERTIFICATES_VALID: &str = "CertificatesValid";
pub const APPLIED: &str = "Applied";
pub const RESTART_DUE: &str = "RestartDue";

/// One condition, before timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Cond {
        Cond {
            type_,
            ok,
            reason: reason.into(),
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
                reason: c.reason.clone(),
                // The API limits messages to 32 KiB.
                message: c.message.chars().take(4096).collect(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
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

pub async fn event(
    ctx: &Context,
    set: &ClientCertificateSet,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    use kube::Resource as _;
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &set.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}
