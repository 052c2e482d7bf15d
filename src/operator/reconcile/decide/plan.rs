//! Step 4a (pure): from the wiring certpin recorded, the wiring the set
//! wants and the live workloads, the complete list of writes of a pass:
//! wire the target (claiming it in the same conditional write), finish or
//! undo a StopStart on whichever workload it started on, and unwire every
//! workload the set no longer targets.

use std::collections::BTreeSet;

use serde_json::Value;

use super::build::{self, Rendered};
use super::restart;
use crate::names;
use crate::operator::reconcile::fragment;
use crate::operator::reconcile::kinds::Workload;
use crate::operator::reconcile::reason::Reason;
use crate::operator::reconcile::workload::{self, Claim, Collision};
use crate::resource::{ClientCertificateSet, RestartStrategy, WorkloadKind, WorkloadRecord};

/// The target is not wired: why, in words the user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub why: Reason,
    pub message: String,
}

/// What becomes of one workload the set no longer targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub kind: WorkloadKind,
    pub name: String,
    /// A StopStart was under way there: scale back to this, clear the record.
    pub restore: Option<i32>,
}

/// How the target's pods get the new settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Apply; a changed template rolls (Rolling), or is left alone (Manual).
    Apply,
    /// Stop, apply, start (or continue a stop under way).
    StopStart,
    /// Apply, then end a stop the set no longer wants: scale back to this.
    Resume { replicas: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub kind: WorkloadKind,
    pub name: String,
    pub containers: Vec<String>,
    /// The server-side apply body: wiring and claim.
    pub fragment: Value,
    /// Whether the live workload differs from the fragment.
    pub change: bool,
    /// Whether applying the fragment changes the pods' config hash of a
    /// workload that runs pods: a rollout follows.
    pub rolls: bool,
    /// Whether the workload asks for no pods (zero replicas): nothing runs
    /// that a write could affect.
    pub idle: bool,
    /// The live resourceVersion, when the workload is not yet claimed by
    /// this set: the claim is then conditional, so two sets racing for one
    /// workload cannot both win.
    pub precondition: Option<String>,
    pub restart: Restart,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Wire(Wire),
    /// Not wired; a stop under way on it is ended all the same.
    Refuse {
        refusal: Refusal,
        restore: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: Target,
    /// Restored at once; unwired once the target is wired.
    pub release: Vec<Release>,
}

impl Plan {
    /// Whether the plan changes the workload (wiring or a restart): its
    /// rollout starts with this pass.
    pub fn writes_workload(&self) -> bool {
        match &self.target {
            Target::Wire(w) => w.change || !matches!(w.restart, Restart::Apply),
            Target::Refuse { .. } => false,
        }
    }
}

/// What the pass found in the cluster.
pub struct Live<'a> {
    pub target: Option<&'a Workload>,
    /// The set named by a claim on the target that is not this set's.
    pub claimant: Option<&'a ClientCertificateSet>,
    /// Other workloads that carry this set's claim.
    pub others: &'a [Workload],
    /// Objects under the rendered names that this set did not make.
    pub foreign: &'a [String],
    /// Now, as the workload's restart record takes it.
    pub now: &'a str,
    /// Every pod of the target already runs the rendering: it needs no
    /// restart, whatever its template says.
    pub pods_run_rendering: bool,
}

/// The plan of one pass. `rendered` is `None` when the input is invalid.
pub fn plan(
    set: &ClientCertificateSet,
    ns: &str,
    rendered: Option<&Rendered>,
    live: &Live,
) -> Plan {
    let release = live
        .others
        .iter()
        .filter(|d| !set.spec.app.targets(d.kind(), d.name()))
        .filter(|d| workload::claimed_by(set, d))
        .map(|d| Release {
            kind: d.kind(),
            name: d.name().to_string(),
            restore: restart::record_of(d).map(|r| r.replicas),
        })
        .collect();
    Plan {
        target: target(set, ns, rendered, live),
        release,
    }
}

fn refuse(why: Reason, message: String, restore: Option<i32>) -> Target {
    Target::Refuse {
        refusal: Refusal { why, message },
        restore,
    }
}

fn target(
    set: &ClientCertificateSet,
    ns: &str,
    rendered: Option<&Rendered>,
    live: &Live,
) -> Target {
    let (kind, name) = set.spec.app.target();
    let Some(d) = live.target else {
        let why = match kind {
            WorkloadKind::Deployment => Reason::DeploymentNotFound,
            WorkloadKind::StatefulSet => Reason::StatefulSetNotFound,
        };
        let message =
            format!("{kind} {name:?} does not exist (yet); certpin wires it when it appears");
        return refuse(why, message, None);
    };
    // A stop this set started is ended whatever else this pass decides.
    let stopped = restart::record_of(d).filter(|_| workload::claimed_by(set, d));
    let restore = stopped.map(|r| r.replicas);
    if let Some(refused) = blocked(set, d, live, stopped.is_some()) {
        return refused;
    }
    let Some(r) = rendered else {
        let message = match &set.status.as_ref().and_then(|s| s.applied_hash.clone()) {
            Some(h) => format!("nothing changed: the last good configuration ({h}) stays in place"),
            None => "nothing applied until the certificates are valid".into(),
        };
        return refuse(Reason::InvalidInput, message, restore);
    };
    if let Some(message) = too_large(r) {
        return refuse(Reason::RenderedTooLarge, message, restore);
    }
    match containers_to_wire(set, d, r, restore) {
        Ok(containers) => Target::Wire(wire(set, ns, d, r, live, containers, stopped)),
        Err(refused) => refused,
    }
}

/// What keeps certpin off the target before anything is rendered: another
/// controller owns it, StopStart would delete its volumes, another set
/// wires it, or an object certpin did not make has a rendered name.
fn blocked(set: &ClientCertificateSet, d: &Workload, live: &Live, stopped: bool) -> Option<Target> {
    let ours = workload::claimed_by(set, d);
    let restore = restart::record_of(d).filter(|_| ours).map(|r| r.replicas);
    if let Some(message) = owned_elsewhere(set, d) {
        return Some(refuse(Reason::OwnedByController, message, restore));
    }
    if set.spec.restart == RestartStrategy::StopStart && !stopped && d.scale_down_deletes_volumes()
    {
        let message = format!(
            "{} deletes its PersistentVolumeClaims when it is scaled down \
             (persistentVolumeClaimRetentionPolicy.whenScaled: Delete), so StopStart would delete \
             its data; nothing was changed: use restart: Rolling, or set whenScaled: Retain",
            d.describe()
        );
        return Some(refuse(Reason::StopStartDeletesVolumes, message, None));
    }
    if let Some(claim) = workload::claim(d).filter(|_| !ours)
        && workload::claim_in_force(&claim, live.claimant, d)
    {
        return Some(refuse(Reason::Conflict, conflict_message(d, &claim), None));
    }
    (!live.foreign.is_empty()).then(|| {
        let message = format!(
            "{} already exists and was not made by this set; certpin does not take over \
             another's object: rename or delete it, or rename the set",
            live.foreign.join(" and ")
        );
        refuse(Reason::RenderedNameInUse, message, restore)
    })
}

/// The wiring of `d` with rendering `r`, and how its pods get it.
fn wire(
    set: &ClientCertificateSet,
    ns: &str,
    d: &Workload,
    r: &Rendered,
    live: &Live,
    containers: Vec<String>,
    stopped: Option<restart::StopStartRecord>,
) -> Wire {
    let (kind, name) = set.spec.app.target();
    let live_hash = d
        .template()
        .and_then(|t| {
            t.metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get(names::ANN_CONFIG_HASH)
        })
        .map(String::as_str);
    let template_hash = build::template_hash(
        set.spec.restart,
        live_hash,
        &r.config_hash,
        live.pods_run_rendering,
    );
    let idle = restart::replicas_of(d) == 0;
    let rolls = live_hash != Some(template_hash.as_str()) && !idle && d.rolls_on_template_change();
    let mut fragment =
        build::workload_fragment(set, ns, kind, name, r, &containers, &template_hash);
    let recorded = workload_annotation(d, names::ANN_RESTARTED_AT);
    build::record_restart(&mut fragment, if rolls { Some(live.now) } else { recorded });
    let wanted: BTreeSet<String> = containers.iter().cloned().collect();
    let change =
        !fragment::workload_has(d, &fragment) || workload::wired_containers(d, &r.name) != wanted;
    let restart = match (set.spec.restart, stopped) {
        (RestartStrategy::StopStart, Some(_)) => Restart::StopStart,
        (RestartStrategy::StopStart, None) if change && !idle => Restart::StopStart,
        (_, Some(r)) => Restart::Resume {
            replicas: r.replicas,
        },
        _ => Restart::Apply,
    };
    let ours = workload::claimed_by(set, d);
    Wire {
        kind,
        name: name.to_string(),
        containers,
        fragment,
        change,
        rolls,
        idle,
        precondition: (!ours).then(|| d.meta().resource_version.clone()).flatten(),
        restart,
    }
}

fn workload_annotation<'a>(d: &'a Workload, key: &str) -> Option<&'a str> {
    d.meta().annotations.as_ref()?.get(key).map(String::as_str)
}

/// The kernel takes at most 128 KiB per environment string (`NAME=value`).
const MAX_ENV_STRING: usize = 128 * 1024;
/// Kubernetes refuses Secrets and ConfigMaps over 1 MiB of data.
const MAX_OBJECT_DATA: usize = 1024 * 1024;

/// Why the rendering cannot reach the app, when it cannot: a setting too
/// long for one environment variable, or objects the API server refuses.
/// (The CRD bounds the pins; the files and escapes only show here.)
fn too_large(r: &Rendered) -> Option<String> {
    for (key, value) in &r.config_map {
        let len = "MXRUNTIME_=".len() + key.len() + value.len();
        if len > MAX_ENV_STRING {
            return Some(format!(
                "the {key} setting would be {len} bytes, over the 128 KiB an environment variable may hold: \
                 use fewer or shorter pins"
            ));
        }
    }
    let secret: usize = [&r.secret, &r.files, &r.retained]
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| k.len() + v.0.len())
        .sum();
    let config_map: usize = r.config_map.iter().map(|(k, v)| k.len() + v.len()).sum();
    (secret.max(config_map) > MAX_OBJECT_DATA).then(|| {
        format!(
            "the rendered Secret would hold {secret} bytes (files and the previous rendering's, kept for \
             running pods), over the 1 MiB the API server takes: split the certificates over several sets"
        )
    })
}

/// The containers to wire, or why the workload cannot take the wiring: a
/// listed container it lacks, or a collision with the app's own template.
fn containers_to_wire(
    set: &ClientCertificateSet,
    d: &Workload,
    r: &Rendered,
    restore: Option<i32>,
) -> Result<Vec<String>, Target> {
    let existing = workload::container_names(d);
    let containers = match build::target_containers(set, &existing) {
        Ok(c) => c,
        Err(missing) => {
            let message = format!(
                "{} has no container {missing:?} (it has: {})",
                d.describe(),
                existing.join(", ")
            );
            return Err(refuse(Reason::ContainerNotFound, message, restore));
        }
    };
    let settings = build::wired_env(r);
    if let Some(c) = workload::collision(d, &containers, &set.spec.mount_path, &r.name, &settings) {
        let why = match c {
            Collision::MountPath { .. } => Reason::MountPathInUse,
            Collision::VolumeName => Reason::VolumeNameInUse,
            Collision::Setting { .. } => Reason::SettingSetByApp,
        };
        return Err(refuse(why, c.message(set, &d.describe()), restore));
    }
    Ok(containers)
}

fn conflict_message(d: &Workload, claim: &Claim) -> String {
    format!(
        "{} is already wired by ClientCertificateSet {:?}; one set per {} \
         (put the certificates into that set, or delete it)",
        d.describe(),
        claim.name.as_deref().unwrap_or("?"),
        d.kind()
    )
}

/// Why certpin keeps off a workload another controller owns, unless the
/// set says that owner leaves the pod template alone: an owner that
/// restores its template would undo the wiring on every sync, and certpin
/// would apply it again, for ever.
fn owned_elsewhere(set: &ClientCertificateSet, d: &Workload) -> Option<String> {
    let owner = d.controller_owner()?;
    if set.spec.app.owner_leaves_pod_template {
        return None;
    }
    let by = format!("{} {:?} ({})", owner.kind, owner.name, owner.api_version);
    let advice = if owner.api_version.starts_with("privatecloud.mendix.com/") {
        "The Mendix Operator restores its apps' pod templates and its runtime does not read \
         MXRUNTIME_* settings: give the app its certificates through the Mendix Operator \
         (the MendixApp's client certificates and the OperatorConfiguration's custom trust), \
         not through certpin"
    } else {
        "If that controller leaves the pod template alone, set spec.app.ownerLeavesPodTemplate: \
         true; otherwise give the certificates to the owner's own template"
    };
    Some(format!(
        "{} is controlled by {by}; certpin changed nothing on it. {advice}",
        d.describe()
    ))
}

/// What a pass did to the target, for the records and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Wired; `restarted` when pods are being replaced.
    Wired { restarted: bool },
    /// A StopStart waits for pods to go.
    Stopping { pods: usize },
    /// Not wired.
    Refused(Refusal),
}

/// The workloads that carry this set's changes after the pass.
pub fn records(
    old: &[WorkloadRecord],
    set: &ClientCertificateSet,
    plan: &Plan,
    outcome: &Outcome,
    target: Option<&Workload>,
) -> Vec<WorkloadRecord> {
    // Workloads that still carry the claim (the plan releases them) stay
    // recorded until they are unwired; one that is gone, or lost the claim
    // by other hands, is no longer certpin's to track.
    let wired = matches!(outcome, Outcome::Wired { .. });
    let mut out: Vec<WorkloadRecord> = plan
        .release
        .iter()
        .filter(|_| !wired)
        .map(|r| {
            old.iter()
                .find(|o| o.name == r.name && o.kind == r.kind.as_str())
                .cloned()
                .unwrap_or_else(|| WorkloadRecord {
                    kind: r.kind.as_str().into(),
                    name: r.name.clone(),
                    ..Default::default()
                })
        })
        .collect();
    let (kind, name) = set.spec.app.target();
    let previous = old
        .iter()
        .find(|r| r.name == name && r.kind == kind.as_str());
    let touched = match (outcome, &plan.target) {
        (Outcome::Wired { .. }, Target::Wire(w)) => Some(WorkloadRecord {
            kind: w.kind.as_str().into(),
            name: w.name.clone(),
            uid: target.and_then(|d| d.meta().uid.clone()),
            containers: w.containers.clone(),
            mount_path: Some(set.spec.mount_path.clone()),
            rendered: Some(names::rendered(set)),
        }),
        (Outcome::Stopping { .. }, _) => Some(previous.cloned().unwrap_or(WorkloadRecord {
            kind: kind.as_str().into(),
            name: name.to_string(),
            uid: target.and_then(|d| d.meta().uid.clone()),
            ..Default::default()
        })),
        _ => previous.cloned().filter(|_| target.is_some()),
    };
    out.extend(touched);
    out.sort_by(|a, b| (&a.name, &a.kind).cmp(&(&b.name, &b.kind)));
    out
}

#[cfg(test)]
mod tests;
