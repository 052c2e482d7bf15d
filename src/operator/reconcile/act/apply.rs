//! Step 4: server-side apply with certpin's own field manager, so that a
//! GitOps tool that owns the workload and certpin never fight over fields.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::Value;

use crate::operator::context::{Context, MANAGER};
use crate::operator::error::Result;
use crate::resource::WorkloadKind;

use crate::operator::reconcile::kinds;

fn params() -> PatchParams {
    // force: certpin's fields are certpin's; a conflicting manager (someone
    // who set MXRUNTIME_ClientCertificates by hand) loses them to certpin.
    PatchParams::apply(MANAGER).force()
}

pub async fn apply_config_map(
    ctx: &Context,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<ConfigMap> {
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    Ok(api.patch(name, &params(), &Patch::Apply(body)).await?)
}

pub async fn apply_secret(ctx: &Context, ns: &str, name: &str, body: &Value) -> Result<Secret> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    Ok(api.patch(name, &params(), &Patch::Apply(body)).await?)
}

/// Applies the wiring. With `precondition` (the resourceVersion the plan
/// was made from), the write fails with 409 if the workload changed since:
/// the claim in it is then one conditional write.
pub async fn apply_workload(
    ctx: &Context,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    body: &Value,
    precondition: Option<&str>,
) -> Result<kube::api::DynamicObject> {
    let mut body = body.clone();
    if let Some(rv) = precondition {
        body["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    }
    let api = kinds::api(&ctx.client, ns, kind);
    Ok(api.patch(name, &params(), &Patch::Apply(&body)).await?)
}

/// Removes every field certpin owns on the workload: applying an object
/// that names no field releases them, and fields no other manager owns go.
pub async fn unwire_workload(
    ctx: &Context,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<()> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind.as_str(),
        "metadata": {"name": name, "namespace": ns},
    });
    let api: Api<kube::api::DynamicObject> = kinds::api(&ctx.client, ns, kind);
    match api.patch(name, &params(), &Patch::Apply(&body)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        // An apply to an object that is gone is a create, refused as
        // invalid (no spec) or forbidden: then there is nothing to unwire.
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 422) => {
            match api.get_metadata_opt(name).await? {
                None => Ok(()),
                Some(_) => Err(kube::Error::Api(e).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
