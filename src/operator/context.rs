//! What every reconcile shares: the client, the event recorder, the decoder
//! and the read marks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;

use super::decoding::{DecodeCache, Limits};
use super::lock::lock;
use super::metrics::Metrics;
use super::reconcile::kinds::Workload;
use super::workarounds::freshness::Marks;

/// The field manager for every write certpin makes (server-side apply).
pub const MANAGER: &str = "certpin";

/// The workloads certpin has just written, by `Kind/namespace/name`, with the
/// trigger property (`triggers::spec_and_annotations`) of the object the API
/// server returned. The watch event that echoes such a write is not a reason
/// for another pass: certpin already acted on everything before it.
#[derive(Default)]
pub struct OwnWrites {
    expected: Mutex<HashMap<String, u64>>,
}

impl OwnWrites {
    pub fn expect(&self, key: String, property: u64) {
        self.lock().insert(key, property);
    }

    /// Whether this event is the echo of certpin's last write (forgotten
    /// once seen: a later event with the same property is someone else's).
    pub fn is_echo(&self, key: &str, property: u64) -> bool {
        let mut expected = self.lock();
        if expected.get(key) == Some(&property) {
            expected.remove(key);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.expected)
    }
}

/// The workloads, by `Kind/namespace/name`, whose rollout a set waits for:
/// their status updates trigger a pass (everyone else's are dropped), so
/// Ready follows the rollout without a watch on every Deployment's status.
/// The watch's latest object of each is kept while it is followed, so that
/// the pass of a set waiting for it need not read it again (a read per
/// rollout step and set, on an API server the rollouts load).
#[derive(Default)]
pub struct Rollouts {
    followed: Mutex<std::collections::HashSet<String>>,
    latest: Mutex<HashMap<String, Workload>>,
    /// When the controller of each kind last acted on a followed workload
    /// (its observed generation rose), as the watch saw it: the sign that a
    /// controller is working through certpin's templates, taken when the
    /// event arrives rather than when certpin's own backlog of passes gets
    /// to it (`waiting::first_look_wait`).
    looked: Mutex<HashMap<crate::resource::WorkloadKind, std::time::Instant>>,
}

impl Rollouts {
    /// Follows (or stops following) the workload, keyed as the watch keys
    /// it (`triggers::key`).
    pub fn follow(&self, kind: crate::resource::WorkloadKind, ns: &str, name: &str, on: bool) {
        let key = super::triggers::key_for(kind.as_str(), ns, name);
        if on {
            lock(&self.followed).insert(key);
        } else {
            lock(&self.followed).remove(&key);
            lock(&self.latest).remove(&key);
        }
    }

    pub fn is_followed(&self, key: &str) -> bool {
        lock(&self.followed).contains(key)
    }

    /// The watch saw the workload `key` (`object` makes it, without its
    /// field managers' records): kept if followed.
    pub fn saw(&self, key: &str, object: impl FnOnce() -> Workload) {
        if self.is_followed(key) {
            let mut w = object();
            w.meta_mut().managed_fields = None;
            let (observed, kind) = (w.observed_generation(), w.kind());
            let before = lock(&self.latest).insert(key.to_string(), w);
            if before.is_some_and(|b| observed > b.observed_generation()) {
                self.looked(kind);
            }
        }
    }

    /// The controller of `kind` acted on a workload whose rollout a set
    /// waits for.
    pub fn looked(&self, kind: crate::resource::WorkloadKind) {
        lock(&self.looked).insert(kind, std::time::Instant::now());
    }

    /// Since the controller of `kind` last acted on a followed workload, or
    /// since `since` if that is later.
    pub fn quiet(
        &self,
        kind: crate::resource::WorkloadKind,
        since: std::time::Instant,
    ) -> std::time::Duration {
        self.last_look(kind)
            .map_or(since, |l| l.max(since))
            .elapsed()
    }

    fn last_look(&self, kind: crate::resource::WorkloadKind) -> Option<std::time::Instant> {
        lock(&self.looked).get(&kind).copied()
    }

    /// The watch saw the workload `key` deleted.
    pub fn gone(&self, key: &str) {
        lock(&self.latest).remove(key);
    }

    /// The watch's latest object of a followed workload, if it has seen one
    /// since the workload was followed.
    pub fn latest(
        &self,
        kind: crate::resource::WorkloadKind,
        ns: &str,
        name: &str,
    ) -> Option<Workload> {
        let key = super::triggers::key_for(kind.as_str(), ns, name);
        lock(&self.latest).get(&key).cloned()
    }
}

pub struct Context {
    pub client: Client,
    pub own_writes: OwnWrites,
    pub rollouts: Rollouts,
    /// The sets waiting only for their rollouts (see `reconcile::waiting`).
    pub waits: super::reconcile::waiting::Waits,
    /// How new a read must be (see `freshness`).
    pub marks: Marks,
    pub events: super::workarounds::events::Publisher,
    pub cache: DecodeCache,
    pub metrics: Arc<Metrics>,
    /// Every set is reconciled at least this often, changed or not.
    pub resync: std::time::Duration,
    /// How long a set's inputs must be quiet before a pass writes.
    pub quiet: super::reconcile::quiet::Window,
}

impl Context {
    #[cfg(test)]
    pub fn new(client: Client, resync: std::time::Duration) -> Arc<Context> {
        Context::with_limits(client, resync, Limits::default(), std::time::Duration::ZERO)
    }

    pub fn with_limits(
        client: Client,
        resync: std::time::Duration,
        decoding: Limits,
        quiet: std::time::Duration,
    ) -> Arc<Context> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Context {
            events: super::workarounds::events::Publisher::new(
                client.clone(),
                "certpin",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            own_writes: OwnWrites::default(),
            rollouts: Rollouts::default(),
            waits: Default::default(),
            marks: Marks::default(),
            resync,
            quiet: super::reconcile::quiet::Window::new(quiet),
            cache: DecodeCache::new(decoding, metrics.decodes.clone()),
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::WorkloadKind;

    fn app() -> Workload {
        Workload::from_value(
            WorkloadKind::Deployment,
            serde_json::json!({"metadata": {"name": "app", "namespace": "ns",
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]}}),
        )
        .expect("a Deployment")
    }

    #[test]
    fn only_a_followed_workload_is_kept_and_only_while_it_is_followed() {
        let r = Rollouts::default();
        let key = "Deployment/ns/app";
        r.saw(key, app);
        assert!(r.latest(WorkloadKind::Deployment, "ns", "app").is_none());
        r.follow(WorkloadKind::Deployment, "ns", "app", true);
        r.saw(key, app);
        let kept = r
            .latest(WorkloadKind::Deployment, "ns", "app")
            .expect("kept");
        assert_eq!(
            kept.meta().managed_fields,
            None,
            "kept without field managers"
        );
        assert!(r.latest(WorkloadKind::StatefulSet, "ns", "app").is_none());
        r.gone(key);
        assert!(r.latest(WorkloadKind::Deployment, "ns", "app").is_none());
        r.saw(key, app);
        r.follow(WorkloadKind::Deployment, "ns", "app", false);
        assert!(r.latest(WorkloadKind::Deployment, "ns", "app").is_none());
    }

    fn at(kind: WorkloadKind, generation: i64, observed: i64) -> Workload {
        Workload::from_value(
            kind,
            serde_json::json!({"metadata": {"name": "app", "namespace": "ns", "generation": generation},
                "status": {"observedGeneration": observed}}),
        )
        .expect("a workload")
    }

    #[test]
    fn a_controller_looks_when_a_followed_workloads_observed_generation_rises() {
        let r = Rollouts::default();
        let key = "Deployment/ns/app";
        let quiet = |kind| r.last_look(kind).is_none();
        // Not followed: nothing kept, so nothing to compare.
        r.saw(key, || at(WorkloadKind::Deployment, 1, 0));
        r.saw(key, || at(WorkloadKind::Deployment, 1, 1));
        assert!(quiet(WorkloadKind::Deployment));
        r.follow(WorkloadKind::Deployment, "ns", "app", true);
        // The first event after following, and certpin's own template change
        // (a new generation the controller has not observed): no look.
        r.saw(key, || at(WorkloadKind::Deployment, 1, 1));
        r.saw(key, || at(WorkloadKind::Deployment, 2, 1));
        // Another status update for the old generation: no look either.
        r.saw(key, || at(WorkloadKind::Deployment, 2, 1));
        assert!(quiet(WorkloadKind::Deployment));
        r.saw(key, || at(WorkloadKind::Deployment, 2, 2));
        assert!(!quiet(WorkloadKind::Deployment), "the controller looked");
        assert!(quiet(WorkloadKind::StatefulSet), "a look is per kind");
        // Quiet counts from the later of the look and the start given.
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            r.quiet(WorkloadKind::Deployment, later),
            std::time::Duration::ZERO
        );
    }
}
