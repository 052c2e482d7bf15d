//! Everything certpin keeps between passes, in one place, fed by the
//! watches: when each set's inputs last changed (the quiet window), which
//! set follows which workload's rollout, and the echoes of certpin's own
//! workload writes (the spec it wrote, the rollout stage it started).
//! Every object is keyed by one type, [`Key`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[derive(Default)]
pub struct Memory {
    touches: Mutex<HashMap<Key, Touch>>,
    /// Followed workload → the set whose wiring it carries.
    followed: Mutex<HashMap<Key, Key>>,
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

    /// certpin started a rollout of `workload`, now at `stage`.
    pub fn expect_stage(&self, workload: Key, stage: u64) {
        lock(&self.started).insert(workload, stage);
    }

    /// Whether `workload`'s rollout reaching `stage` is news to a set: one
    /// follows it, and it is not the start that set's pass reported.
    pub fn stage_news(&self, workload: &Key, stage: u64) -> bool {
        let expected = lock(&self.started).remove(workload);
        self.follower(workload).is_some() && expected != Some(stage)
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
