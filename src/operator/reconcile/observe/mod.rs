//! Observe: everything a pass reads from the API server, at once where the
//! reads do not depend on each other.

pub mod claims;
pub mod inputs;
pub mod pods;
pub mod request;

use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;

use crate::names::ANN_CONFIG_HASH;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::reconcile::kinds::Workload;
use crate::resource::{ClientCertificateSet, RestartStrategy};
pub use inputs::{CaMaterial, Inputs, Material};

pub struct Observed {
    /// The Secrets and ConfigMaps the set names, its workload, and what
    /// is under the rendered names.
    pub inputs: Inputs,
    /// The set named by a claim on the target that is not this set's.
    pub claimant: Option<ClientCertificateSet>,
    /// Other workloads that carry this set's claim.
    pub others: Vec<Workload>,
    /// The target's pods, when what they run decides (`pods_matter`).
    pub pods: Option<Vec<PartialObjectMeta<Pod>>>,
    /// The reconcile request the set carries, to echo in its status.
    pub reconcile_request: Option<String>,
}

impl Observed {
    pub fn workload(&self) -> Option<&Workload> {
        self.inputs.workload.as_ref()
    }
}

pub async fn observe(ctx: &Context, set: &ClientCertificateSet, ns: &str) -> Result<Observed> {
    let inputs = inputs::dereference(ctx, set, ns).await?;
    let target = inputs.workload.as_ref();
    let (claimant, others, pods) = futures::try_join!(
        async {
            match target {
                Some(d) => claims::claimant(ctx, set, ns, d).await,
                None => Ok(None),
            }
        },
        claims::claimed_elsewhere(ctx, set, ns, claims::sweep_needed(set)),
        async {
            match target.filter(|d| pods_matter(set, d)) {
                Some(d) => pods::pods_of(&ctx.client, ns, d).await.map(Some),
                None => Ok(None),
            }
        },
    )?;
    Ok(Observed {
        inputs,
        claimant,
        others,
        pods,
        reconcile_request: request::requested(set),
    })
}

/// Whether the target's pods may run something else than its template
/// says: a Manual set's pods are restarted by their user, and a template
/// whose hash is not the rendering certpin last applied may have pods that
/// were restarted (by the user, or a container by the kubelet) since the
/// rendering changed. Then what they run decides whether a restart is due.
fn pods_matter(set: &ClientCertificateSet, d: &Workload) -> bool {
    let template_hash = d.template().and_then(|t| {
        t.metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(ANN_CONFIG_HASH)
    });
    let applied = set.status.as_ref().and_then(|s| s.applied_hash.as_ref());
    d.replicas() > 0 && (set.spec.restart == RestartStrategy::Manual || template_hash != applied)
}
