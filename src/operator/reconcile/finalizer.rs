//! certpin's finalizer, added in the same pass that wires the app: kube's
//! `finalizer` helper adds it and returns, so every new set would wait for a
//! second pass (one more watch round trip) before anything is applied.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::names::FINALIZER;
use crate::operator::error::{Error, Result};
use crate::resource::ClientCertificateSet;

fn position(set: &ClientCertificateSet) -> Option<usize> {
    set.finalizers().iter().position(|f| f == FINALIZER)
}

/// Adds the finalizer unless it is there. The JSON patch tests the list it
/// extends, so a concurrent change to the finalizers fails it (409-free: the
/// API server answers 422 and the pass is retried) instead of clobbering them.
pub async fn ensure(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
    if position(set).is_some() {
        return Ok(());
    }
    let ops = match &set.metadata.finalizers {
        None => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        Some(list) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
    };
    patch(api, set, ops).await
}

/// Removes the finalizer once cleanup is done.
pub async fn remove(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
    let Some(i) = position(set) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    let ops = json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match patch(api, set, ops).await {
        // Already gone: nothing left to release.
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(()),
        other => other,
    }
}

async fn patch(
    api: &Api<ClientCertificateSet>,
    set: &ClientCertificateSet,
    ops: serde_json::Value,
) -> Result<()> {
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| Error::Finalizer(e.to_string()))?;
    api.patch(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}
