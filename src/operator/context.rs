//! What every reconcile shares: the client, the event recorder, the decoder
//! and the read marks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;

use super::decoding::{DecodeCache, Limits};
use super::metrics::Metrics;
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
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The workloads, by `namespace/name`, whose rollout a set waits for:
/// their status updates trigger a pass (everyone else's are dropped), so
/// Ready follows the rollout without a watch on every Deployment's status.
#[derive(Default)]
pub struct Rollouts {
    followed: Mutex<std::collections::HashSet<String>>,
}

impl Rollouts {
    /// Follows (or stops following) the workload, keyed as the watch keys
    /// it (`triggers::key`).
    pub fn follow(&self, kind: crate::resource::WorkloadKind, ns: &str, name: &str, on: bool) {
        let key = super::triggers::key_for(kind.as_str(), ns, name);
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            followed.insert(key);
        } else {
            followed.remove(&key);
        }
    }

    pub fn is_followed(&self, key: &str) -> bool {
        self.followed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
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
}

impl Context {
    #[cfg(test)]
    pub fn new(client: Client, resync: std::time::Duration) -> Arc<Context> {
        Context::with_limits(client, resync, Limits::default())
    }

    pub fn with_limits(
        client: Client,
        resync: std::time::Duration,
        decoding: Limits,
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
            cache: DecodeCache::new(decoding, metrics.decodes.clone()),
            metrics,
        })
    }
}
