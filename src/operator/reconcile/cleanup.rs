//! Deleting a set: remove the wiring it added to the Deployment (a rollout
//! follows, so no pod keeps mounting a deleted Secret) and finish a StopStart
//! it left half-done. The rendered ConfigMap and Secret are owned by the set
//! and go with it (garbage collection), after the wiring is gone.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::runtime::controller::Action;
use tracing::info;

use super::names::{set_name, wired_by};
use super::{apply, restart};
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::{faults, freshness};
use crate::resource::ClientCertificateSet;

pub async fn cleanup(set: &ClientCertificateSet, ctx: &Context, ns: &str) -> Result<Action> {
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    if let Some(d) =
        freshness::get_opt(&api, &set.spec.app.deployment, &ctx.marks.deployments).await?
    {
        let ours = wired_by(&d) == Some(set_name(set));
        if ours {
            if let Some(record) = restart::record_of(&d) {
                restart::start(ctx, ns, &set.spec.app.deployment, record.replicas).await?;
            }
            apply::unwire_deployment(ctx, ns, &set.spec.app.deployment).await?;
            faults::after("unwire");
            info!(deployment = %set.spec.app.deployment, "removed the wiring");
        }
    }
    ctx.metrics.set_expiries(ns, set_name(set), &[]);
    Ok(Action::await_change())
}
