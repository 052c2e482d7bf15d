//! One reconcile pass over a ClientCertificateSet: dereference, validate,
//! build (pure), apply, restart, status. Invalid input changes nothing that
//! runs: the last good rendering and wiring stay.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod dereference;
pub mod finalizer;
pub mod names;
pub mod restart;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{info, instrument};

use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::{faults, triggers};
use crate::resource::{ClientCertificateSet, ClientCertificateSetStatus, RestartStrategy};
use names::*;
use status::{APPLIED, CERTIFICATES_VALID, Cond, READY, RESTART_DUE};

#[instrument(skip_all, fields(namespace = set.namespace().unwrap_or_default(), set = set.name_any()))]
pub async fn reconcile(set: Arc<ClientCertificateSet>, ctx: Arc<Context>) -> Result<Action> {
    let ns = set.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<ClientCertificateSet> = Api::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let deleting = set.metadata.deletion_timestamp.is_some();
    let result = if deleting && !set.finalizers().iter().any(|f| f == FINALIZER) {
        // Deleted and already released: nothing of certpin's is left.
        Ok(Action::await_change())
    } else if deleting {
        match cleanup::cleanup(&set, &ctx, &ns).await {
            Ok(action) => finalizer::remove(&api, &set).await.map(|()| action),
            Err(e) => Err(e),
        }
    } else {
        reconcile_set(&set, &ctx, &ns, &api).await
    };
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciliations
        .get_or_create(&crate::operator::metrics::ResultLabel {
            result: label.into(),
        })
        .inc();
    result
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// How often a Manual set with a restart due looks for the user's restart.
const MANUAL_RECHECK: Duration = Duration::from_secs(5);

/// What happened to the Deployment in this pass.
enum Wiring {
    /// Wired with this config hash; `restarted` when pods are being replaced.
    Done { restart_due: Option<String> },
    /// A StopStart is waiting for pods to go.
    Stopping { pods: usize },
    /// Not wired: condition reason and message.
    NotApplied {
        reason: &'static str,
        message: String,
        waiting: bool,
    },
}

async fn reconcile_set(
    set: &ClientCertificateSet,
    ctx: &Context,
    ns: &str,
    api: &Api<ClientCertificateSet>,
) -> Result<Action> {
    let now = Utc::now();
    // The finalizer goes on while the inputs are read: both must succeed
    // before anything is written, and neither needs the other, so a new set
    // waits for one round trip here instead of two.
    let (finalized, inputs) = futures::join!(
        finalizer::ensure(api, set),
        dereference::dereference(ctx, set, ns),
    );
    finalized?;
    let inputs = inputs?;
    faults::after("dereference");
    let validation = validate::validate(set, &inputs, &ctx.cache, now);
    faults::after("validate");
    let old = set.status.clone().unwrap_or_default();
    let mut status = ClientCertificateSetStatus {
        observed_generation: set.metadata.generation,
        certificate_count: Some(set.spec.certificates.len() as i32),
        earliest_expiry: validation
            .rows
            .iter()
            .filter_map(|r| r.not_after.clone())
            .min_by_key(|t| t.0),
        certificates: validation.rows.clone(),
        applied_hash: old.applied_hash.clone(),
        last_restart: old.last_restart.clone(),
        conditions: Vec::new(),
    };
    let mut conds = Vec::new();
    match &validation.failure {
        None => conds.push(Cond::new(
            CERTIFICATES_VALID,
            true,
            "Valid",
            "every certificate is valid and its pins render",
        )),
        Some(f) => conds.push(Cond::new(
            CERTIFICATES_VALID,
            false,
            f.reason.clone(),
            f.message.clone(),
        )),
    }

    let wiring = match (&inputs.deployment, &validation.valid) {
        (None, _) => Wiring::NotApplied {
            reason: "DeploymentNotFound",
            message: format!(
                "Deployment {:?} does not exist (yet); certpin wires it when it appears",
                set.spec.app.deployment
            ),
            waiting: true,
        },
        (Some(_), None) => Wiring::NotApplied {
            reason: "InvalidInput",
            message: match &old.applied_hash {
                Some(h) => {
                    format!("nothing changed: the last good configuration ({h}) stays in place")
                }
                None => "nothing applied until the certificates are valid".into(),
            },
            waiting: false,
        },
        (Some(d), Some(valid)) => wire(set, ctx, ns, d, valid, &inputs, &mut status).await?,
    };
    let mut requeue = ctx.resync;
    let ready_blocker: Option<(String, String)> = match &wiring {
        Wiring::Done {
            restart_due: Some(msg),
            ..
        } => {
            conds.push(Cond::new(
                APPLIED,
                true,
                "Applied",
                applied_message(set, &status),
            ));
            conds.push(Cond::new(RESTART_DUE, true, "RestartDue", msg.clone()));
            // Pods are not watched (and the Deployment's status changes do
            // not trigger a pass): look again soon for the user's restart.
            requeue = requeue.min(MANUAL_RECHECK);
            Some(("RestartDue".into(), msg.clone()))
        }
        Wiring::Done { .. } => {
            conds.push(Cond::new(
                APPLIED,
                true,
                "Applied",
                applied_message(set, &status),
            ));
            conds.push(Cond::new(
                RESTART_DUE,
                false,
                "UpToDate",
                "the app runs with the applied settings",
            ));
            None
        }
        Wiring::Stopping { pods } => {
            requeue = Duration::from_secs(2);
            let msg = format!("StopStart in progress: waiting for {pods} pod(s) to stop");
            conds.push(Cond::new(
                APPLIED,
                false,
                "StopStartInProgress",
                msg.clone(),
            ));
            Some(("StopStartInProgress".into(), msg))
        }
        Wiring::NotApplied {
            reason,
            message,
            waiting,
        } => {
            if *waiting {
                requeue = Duration::from_secs(30);
            }
            conds.push(Cond::new(APPLIED, false, *reason, message.clone()));
            Some((reason.to_string(), message.clone()))
        }
    };
    let ready = match (&validation.failure, ready_blocker) {
        (Some(f), _) => Cond::new(READY, false, f.reason.clone(), f.message.clone()),
        (None, Some((reason, message))) => Cond::new(READY, false, reason, message),
        (None, None) if !validation.warnings.is_empty() => Cond::new(
            READY,
            true,
            "ValidWithWarnings",
            validation.warnings.join("; "),
        ),
        (None, None) => Cond::new(
            READY,
            true,
            "Applied",
            "the app runs with its client certificates",
        ),
    };
    conds.insert(0, ready.clone());
    status.conditions = status::conditions(
        &old.conditions,
        &conds,
        set.metadata.generation,
        &now_time(),
    );

    record_metrics(ctx, set, ns, &old, &status, &ready);
    // The status is what users wait on; the Events go out beside it.
    let (_, patched) = futures::join!(
        events(ctx, set, &old, &status, &ready, &validation.warnings),
        status::patch_status(&ctx.client, set, ns, &status),
    );
    patched?;
    faults::after("status");
    if let Some(wake) = next_expiry_check(&validation, set, now) {
        requeue = requeue.min(wake);
    }
    Ok(Action::requeue(requeue))
}

fn record_metrics(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
    ready: &Cond,
) {
    use crate::operator::metrics::{ReasonLabel, StrategyLabel};
    if !ready.ok {
        ctx.metrics
            .failures
            .get_or_create(&ReasonLabel {
                reason: ready.reason.clone(),
            })
            .inc();
    }
    if old.last_restart != new.last_restart && new.last_restart.is_some() {
        ctx.metrics
            .restarts
            .get_or_create(&StrategyLabel {
                strategy: format!("{:?}", set.spec.restart),
            })
            .inc();
    }
    let expiries: Vec<(String, i64)> = new
        .certificates
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.not_after.as_ref()?.0.as_second())))
        .collect();
    ctx.metrics.set_expiries(ns, set_name(set), &expiries);
}

fn applied_message(set: &ClientCertificateSet, status: &ClientCertificateSetStatus) -> String {
    format!(
        "rendered ConfigMap and Secret {:?} (hash {}) and wired them into Deployment {:?}",
        names::rendered(set),
        status.applied_hash.as_deref().unwrap_or("-"),
        set.spec.app.deployment
    )
}

/// When to look again so that "expiring soon" and "expired" show on time.
fn next_expiry_check(
    v: &validate::Validation,
    set: &ClientCertificateSet,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    let warn = chrono::Duration::days(i64::from(set.spec.expiry_warning_days.max(0)));
    v.valid
        .iter()
        .flatten()
        .flat_map(|c| {
            [
                c.decoded.facts.not_after - warn,
                c.decoded.facts.not_after + chrono::Duration::seconds(1),
            ]
        })
        .filter(|t| *t > now)
        .map(|t| (t - now).to_std().unwrap_or(Duration::from_secs(1)))
        .min()
        .map(|d| d.max(Duration::from_secs(1)))
}

/// Publishes the Events of this pass at once: each is its own request, and
/// one after another they held a reconcile slot for a round trip each.
async fn events(
    ctx: &Context,
    set: &ClientCertificateSet,
    old: &ClientCertificateSetStatus,
    new: &ClientCertificateSetStatus,
    ready: &Cond,
    warnings: &[String],
) {
    let due = status::events_due(set, old, new, ready, warnings);
    futures::future::join_all(due.into_iter().map(|e| status::event(ctx, set, e))).await;
}

/// Which set already wires this Deployment, if another one that still exists.
async fn wired_by_other(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    d: &Deployment,
) -> Result<Option<String>> {
    let Some(owner) = wired_by(d) else {
        return Ok(None);
    };
    if owner == set_name(set) {
        return Ok(None);
    }
    let other = Api::<ClientCertificateSet>::namespaced(ctx.client.clone(), ns)
        .get_opt(owner)
        .await?;
    Ok(other
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(|_| owner.to_string()))
}

/// Steps 3 to 5 for valid input: build, apply, restart.
async fn wire(
    set: &ClientCertificateSet,
    ctx: &Context,
    ns: &str,
    d: &Deployment,
    valid: &[validate::ValidCertificate],
    inputs: &dereference::Inputs,
    status: &mut ClientCertificateSetStatus,
) -> Result<Wiring> {
    let dname = d.metadata.name.clone().unwrap_or_default();
    if let Some(other) = wired_by_other(ctx, set, ns, d).await? {
        return Ok(Wiring::NotApplied {
            reason: "Conflict",
            message: format!(
                "Deployment {dname:?} is already wired by ClientCertificateSet {other:?}; one set per Deployment \
                 (put the certificates into that set, or delete it)"
            ),
            waiting: false,
        });
    }
    let read_now;
    let prior = match &inputs.previous {
        Some(p) => p,
        None => {
            read_now = if dereference::previous_needed(set, d) {
                dereference::previous(ctx, set, ns).await?
            } else {
                dereference::Previous::default()
            };
            &read_now
        }
    };
    let previous = prior.secret.as_ref();
    let live_cm = prior.config_map.as_ref();
    let existing: Vec<String> = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let containers = match build::target_containers(set, &existing) {
        Ok(c) => c,
        Err(missing) => {
            return Ok(Wiring::NotApplied {
                reason: "ContainerNotFound",
                message: format!(
                    "Deployment {dname:?} has no container {missing:?} (it has: {})",
                    existing.join(", ")
                ),
                waiting: false,
            });
        }
    };

    // Build (pure) and apply the rendered objects, writing only on change.
    // Second precision, as pod creation timestamps have.
    let rendered = build::render_objects(
        set,
        valid,
        previous,
        &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )?;
    let cm_body = build::config_map_object(set, ns, &rendered);
    let write_cm = !live_cm
        .is_some_and(|cm| apply::contains(&serde_json::to_value(cm).unwrap_or_default(), &cm_body));
    let secret_body = build::secret_object(set, ns, &rendered);
    let write_secret = !(rendered.reused
        && previous.is_some_and(|s| {
            apply::contains(&serde_json::to_value(s).unwrap_or_default(), &secret_body)
        }));
    // Both before the Deployment points at them; neither depends on the other.
    let (cm, secret) = futures::join!(
        async {
            if write_cm {
                apply::apply_config_map(ctx, ns, &rendered.name, &cm_body).await?;
                faults::after("apply-configmap");
            }
            Ok::<(), Error>(())
        },
        async {
            if write_secret {
                apply::apply_secret(ctx, ns, &rendered.name, &secret_body).await?;
                faults::after("apply-secret");
                info!(hash = %rendered.config_hash, reused = rendered.reused, "rendered client certificate settings");
            }
            Ok::<(), Error>(())
        },
    );
    cm?;
    secret?;

    let live_hash = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(ANN_CONFIG_HASH))
        .cloned();
    let template_hash = build::template_hash(
        set.spec.restart,
        live_hash.as_deref(),
        &rendered.config_hash,
    );
    let fragment =
        build::deployment_fragment(set, ns, &dname, &rendered, &containers, &template_hash);
    let needs_change = !apply::deployment_has(d, &fragment);
    let in_progress = restart::record_of(d);
    let mut restarted = false;

    if set.spec.restart == RestartStrategy::StopStart
        && (in_progress.is_some() || (needs_change && restart::replicas_of(d) > 0))
    {
        match restart::stop(ctx, ns, d).await? {
            restart::StopStart::Waiting { pods } => return Ok(Wiring::Stopping { pods }),
            restart::StopStart::Stopped { replicas } => {
                if needs_change {
                    apply::apply_deployment(ctx, ns, &dname, &fragment).await?;
                    faults::after("apply-deployment");
                }
                restart::start(ctx, ns, &dname, replicas).await?;
                info!(replicas, "StopStart: started again");
                restarted = true;
            }
        }
    } else if needs_change {
        // The watch event of this write can arrive before its response:
        // expect what the write should produce, then what it did produce.
        let key = triggers::key(d);
        ctx.own_writes.expect(
            key.clone(),
            triggers::spec_and_annotations(&apply::after_apply(d, &fragment)),
        );
        let written = apply::apply_deployment(ctx, ns, &dname, &fragment).await?;
        faults::after("apply-deployment");
        ctx.own_writes
            .expect(key, triggers::spec_and_annotations(&written));
        restarted =
            live_hash.as_deref() != Some(template_hash.as_str()) && restart::replicas_of(d) > 0;
        info!(hash = %template_hash, restarted, "wired Deployment");
    }
    if restarted {
        status.last_restart = Some(now_time());
    }
    status.applied_hash = Some(rendered.config_hash.clone());
    let restart_due = if set.spec.restart == RestartStrategy::Manual {
        restart_due(ctx, ns, d, &rendered.rendered_at).await?
    } else {
        None
    };
    Ok(Wiring::Done { restart_due })
}

/// Manual: pods created before the content was rendered run old settings.
async fn restart_due(
    ctx: &Context,
    ns: &str,
    d: &Deployment,
    rendered_at: &str,
) -> Result<Option<String>> {
    let Ok(rendered) = rendered_at.parse::<k8s_openapi::jiff::Timestamp>() else {
        return Ok(None);
    };
    let pods = restart::pods_of(&ctx.client, ns, d).await?;
    let stale = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 < rendered)
        })
        .count();
    Ok((stale > 0).then(|| {
        format!(
            "{stale} pod(s) started before the settings changed; restart the app to apply them \
             (kubectl rollout restart deployment/{})",
            d.metadata.name.as_deref().unwrap_or_default()
        )
    }))
}
