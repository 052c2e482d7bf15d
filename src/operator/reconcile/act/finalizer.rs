//! certpin's finalizer, added in the same pass that wires the app (while its
//! inputs are read): kube's `finalizer` helper adds it and returns, so every
//! new set would wait for a second pass (one more watch round trip) before
//! anything is applied.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::names::FINALIZER;
use crate::operator::error::{Error, Result};
use crate::resource::ClientCertificateSet;

fn position(set: &ClientCertificateSet) -> Option<usize> {
    set.finalizers().iter().position(|f| f == FINALIZER)
}

/// Adds the finalizer unless it is there. The JSON patch tests the list it
/// extends, so a concurrent change to the finalizers fails it (the API
/// server answers 422) instead of clobbering them. A failed test usually
/// means the watch cache is behind (e.g. right after an API server restart,
/// before the watch has re-listed): the set is read again and the patch made
/// once more against what is really there.
pub async fn ensure(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
    match add(api, set).await {
        Err(e) if failed_test(&e) => add(api, &api.get(&set.name_any()).await?).await,
        other => other,
    }
}

async fn add(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
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

/// The API server's answer to a JSON patch whose `test` failed.
fn failed_test(e: &Error) -> bool {
    matches!(e, Error::Kube(kube::Error::Api(s)) if s.code == 422)
}

/// Removes the finalizer once cleanup is done (read again and retried once
/// when the cached set was behind, as in `ensure`).
pub async fn remove(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
    let result = match drop_it(api, set).await {
        Err(e) if failed_test(&e) => match api.get_opt(&set.name_any()).await? {
            Some(fresh) => drop_it(api, &fresh).await,
            None => Ok(()),
        },
        other => other,
    };
    match result {
        // Already gone: nothing left to release.
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(()),
        other => other,
    }
}

async fn drop_it(api: &Api<ClientCertificateSet>, set: &ClientCertificateSet) -> Result<()> {
    let Some(i) = position(set) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    let ops = json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    patch(api, set, ops).await
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
