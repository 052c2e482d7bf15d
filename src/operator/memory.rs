//! Everything certpin keeps between passes, in one place, fed by the
//! watches: when each set's inputs last changed (the quiet window), which
//! set follows which workload's rollout and what its last pass read, and
//! the echoes of certpin's own workload writes. Every object is keyed by
//! one type, [`Key`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::lock::lock;

/// An object by kind, namespace and name: a Deployment and a StatefulSet
/// (or a set) may share a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A ClientCertificateSet's key.
    pub fn set(namespace: &str, name: &str) -> Key {
        Key::new("ClientCertificateSet", namespace, name)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The changes to one set's inputs (its Secrets and ConfigMaps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Touch {
    /// How many changes so far.
    pub count: u64,
    /// The latest.
    pub at: Instant,
    /// The first of the burst the latest belongs to.
    pub first: Instant,
}

/// The objects a pass read for a set: every Secret and ConfigMap it names
/// (by name; `None`: not there), and what is under its rendered names, as
/// read or as the pass then wrote it.
#[derive(Clone)]
pub struct Objects {
    /// When they were read from the API server.
    pub read_at: Instant,
    pub secrets: BTreeMap<String, Option<Secret>>,
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub rendered_secret: Option<Secret>,
    pub rendered_config_map: Option<ConfigMap>,
}

impl Objects {
    /// These objects after a pass wrote the rendered ones (`None`: not
    /// written).
    pub fn after(
        self: &Arc<Self>,
        secret: Option<Secret>,
        config_map: Option<ConfigMap>,
    ) -> Arc<Objects> {
        if secret.is_none() && config_map.is_none() {
            return self.clone();
        }
        let mut after = Objects::clone(self);
        after.rendered_secret = secret.or(after.rendered_secret);
        after.rendered_config_map = config_map.or(after.rendered_config_map);
        Arc::new(after)
    }
}

/// What a set's objects depend on besides the watched inputs: the pass
/// that read them saw this many input changes of this set at this spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub request: Option<String>,
    pub touches: u64,
}

#[derive(Default)]
pub struct Memory {
    touches: Mutex<HashMap<Key, Touch>>,
    /// Followed workload → the set whose wiring it carries.
    followed: Mutex<HashMap<Key, Key>>,
    /// Set → what its last pass read, while it follows a rollout: the
    /// passes the rollout triggers need only the workload read again.
    read: Mutex<HashMap<Key, (Stamp, Arc<Objects>)>>,
    /// Workload → the trigger property of certpin's last write to it.
    echoes: Mutex<HashMap<Key, u64>>,
    /// Followed workload → the stage of the rollout certpin just started
    /// there, which its follower already reports.
    started: Mutex<HashMap<Key, u64>>,
}

impl Memory {
    /// An input of `set` changed at `now`; a gap of at least `window`
    /// since the previous change starts a new burst.
    pub fn touch(&self, set: &Key, now: Instant, window: Duration) {
        let mut touches = lock(&self.touches);
        let t = touches.entry(set.clone()).or_insert(Touch {
            count: 0,
            at: now,
            first: now,
        });
        if now.saturating_duration_since(t.at) >= window {
            t.first = now;
        }
        t.count += 1;
        t.at = now;
    }

    pub fn touches(&self, set: &Key) -> Option<Touch> {
        lock(&self.touches).get(set).copied()
    }

    /// `set` follows (or stops following) `workload`'s rollout: its status
    /// updates then trigger passes of that set. Only the set that follows
    /// a workload can stop it, so another set's pass or deletion cannot.
    pub fn follow(&self, workload: Key, set: &Key, on: bool) {
        let mut followed = lock(&self.followed);
        if on {
            followed.insert(workload, set.clone());
        } else if followed.get(&workload) == Some(set) {
            followed.remove(&workload);
            lock(&self.started).remove(&workload);
        }
    }

    /// Keeps what a pass of `set` read (and wrote), or forgets it (`None`).
    pub fn keep(&self, set: &Key, kept: Option<(Stamp, Arc<Objects>)>) {
        let mut read = lock(&self.read);
        match kept {
            Some(k) => read.insert(set.clone(), k),
            None => read.remove(set),
        };
    }

    /// What the last pass of `set` read, if nothing it depends on changed
    /// since (`stamp`) and it was read less than `max_age` ago: a watch
    /// event can be lost, and a rollout that waits for its user can last.
    pub fn recall(&self, set: &Key, stamp: &Stamp, max_age: Duration) -> Option<Arc<Objects>> {
        let read = lock(&self.read);
        let (kept, objects) = read.get(set)?;
        (kept == stamp && objects.read_at.elapsed() < max_age).then(|| objects.clone())
    }

    /// certpin started a rollout of `workload`, now at `stage`.
    pub fn expect_stage(&self, workload: Key, stage: u64) {
        lock(&self.started).insert(workload, stage);
    }

    /// Whether `workload`'s rollout reaching `stage` is news to a set: one
    /// follows it, and it is not the start that set's pass reported.
    pub fn stage_news(&self, workload: &Key, stage: u64) -> bool {
        if self.follower(workload).is_none() {
            return false;
        }
        let mut started = lock(&self.started);
        let known = started.get(workload) == Some(&stage);
        started.remove(workload);
        !known
    }

    /// The set that follows `workload`'s rollout, if any.
    pub fn follower(&self, workload: &Key) -> Option<Key> {
        lock(&self.followed).get(workload).cloned()
    }

    /// certpin wrote `workload`, which should now have trigger `property`.
    pub fn expect_echo(&self, workload: Key, property: u64) {
        lock(&self.echoes).insert(workload, property);
    }

    /// Whether this watch event is the echo of certpin's last write
    /// (forgotten once seen: a later event with the same property is
    /// someone else's).
    pub fn is_echo(&self, workload: &Key, property: u64) -> bool {
        let mut echoes = lock(&self.echoes);
        if echoes.get(workload) == Some(&property) {
            echoes.remove(workload);
            true
        } else {
            false
        }
    }

    /// The set is gone: forget what was kept for it.
    pub fn forget_set(&self, set: &Key) {
        lock(&self.touches).remove(set);
        lock(&self.followed).retain(|_, follower| follower != set);
        lock(&self.read).remove(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Key {
        Key::new("Deployment", "ns", "app")
    }

    #[test]
    fn only_the_following_set_stops_following_a_rollout() {
        let m = Memory::default();
        let (owner, other) = (Key::set("ns", "owner"), Key::set("ns", "other"));
        m.follow(app(), &owner, true);
        m.follow(app(), &other, false);
        assert_eq!(m.follower(&app()), Some(owner.clone()));
        m.forget_set(&other);
        assert_eq!(m.follower(&app()), Some(owner.clone()));
        m.follow(app(), &owner, false);
        assert_eq!(m.follower(&app()), None);
        m.follow(app(), &owner, true);
        m.forget_set(&owner);
        assert_eq!(m.follower(&app()), None);
    }

    #[test]
    fn what_a_pass_read_is_recalled_only_unchanged_and_young() {
        let m = Memory::default();
        let s = Key::set("ns", "s");
        let stamp = Stamp {
            uid: Some("u".into()),
            generation: Some(1),
            request: None,
            touches: 3,
        };
        let objects = Arc::new(Objects {
            read_at: Instant::now() - Duration::from_secs(2),
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            rendered_secret: None,
            rendered_config_map: None,
        });
        m.keep(&s, Some((stamp.clone(), objects)));
        let young = Duration::from_secs(60);
        assert!(m.recall(&s, &stamp, young).is_some());
        assert!(m.recall(&s, &stamp, Duration::from_secs(1)).is_none());
        let touched = Stamp {
            touches: 4,
            ..stamp.clone()
        };
        assert!(m.recall(&s, &touched, young).is_none());
        m.keep(&s, None);
        assert!(m.recall(&s, &stamp, young).is_none());
    }

    #[test]
    fn an_echo_is_recognised_once() {
        let m = Memory::default();
        m.expect_echo(app(), 7);
        assert!(!m.is_echo(&app(), 8));
        assert!(m.is_echo(&app(), 7));
        assert!(!m.is_echo(&app(), 7));
    }

    #[test]
    fn touches_count_and_a_quiet_gap_starts_a_new_burst() {
        let m = Memory::default();
        let s = Key::set("ns", "s");
        let w = Duration::from_millis(20);
        let t0 = Instant::now();
        m.touch(&s, t0, w);
        m.touch(&s, t0 + Duration::from_millis(5), w);
        let t = m.touches(&s).expect("touched");
        assert_eq!((t.count, t.first), (2, t0));
        let later = t0 + Duration::from_secs(1);
        m.touch(&s, later, w);
        assert_eq!(m.touches(&s).map(|t| (t.count, t.first)), Some((3, later)));
    }
}
