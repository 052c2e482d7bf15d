//! Which sets name which objects (the Secrets, ConfigMaps and workloads
//! they read or target), kept from the set watch, so that an object's event
//! finds its sets without scanning every set: a scan per event grows with
//! sets × events (for Secrets about 2% of certpin's CPU at 1000 sets, and
//! 25 times that work at 5000).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;

use crate::resource::{CertificateSpec, ClientCertificateSet, WorkloadKind};

/// The Secrets a set reads: PKCS12 files, passwords, TLS pairs and CA bundles.
pub fn referenced_secrets(set: &ClientCertificateSet) -> BTreeSet<&str> {
    set.spec
        .certificates
        .iter()
        .flat_map(names_of)
        .chain(
            set.spec
                .ca_certificates
                .iter()
                .filter_map(|c| c.secret.as_ref().map(|s| s.secret_name.as_str())),
        )
        .collect()
}

/// The ConfigMaps a set reads: CA bundles.
pub fn referenced_config_maps(set: &ClientCertificateSet) -> BTreeSet<&str> {
    set.spec
        .ca_certificates
        .iter()
        .filter_map(|c| c.config_map.as_ref().map(|m| m.name.as_str()))
        .collect()
}

/// The Deployment a set targets.
pub fn targeted_deployments(set: &ClientCertificateSet) -> BTreeSet<&str> {
    targeted(set, WorkloadKind::Deployment)
}

/// The StatefulSet a set targets.
pub fn targeted_stateful_sets(set: &ClientCertificateSet) -> BTreeSet<&str> {
    targeted(set, WorkloadKind::StatefulSet)
}

fn targeted(set: &ClientCertificateSet, kind: WorkloadKind) -> BTreeSet<&str> {
    let (k, name) = set.spec.app.target();
    (k == kind && !name.is_empty())
        .then_some(name)
        .into_iter()
        .collect()
}

/// The Secrets one certificate reads.
pub fn names_of(c: &CertificateSpec) -> Vec<&str> {
    [
        c.pkcs12.as_ref().map(|r| r.secret_name.as_str()),
        c.password.as_ref().map(|r| r.secret_name.as_str()),
        c.tls.as_ref().map(|r| r.secret_name.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Default)]
struct State {
    /// Object name → the sets that name it.
    sets: HashMap<Key, HashSet<String>>,
    /// Set → the names it named when last seen (to drop them when its
    /// spec changes).
    names: HashMap<Key, Vec<String>>,
}

/// What a set references, of one kind of object.
pub type References = fn(&ClientCertificateSet) -> BTreeSet<&str>;

/// An index that may hold more than is true (a set deleted while the watch
/// was relisting leaves its entries), never less: every set the watch has
/// shown is in it with its latest references. Callers check candidates
/// against the store.
pub struct NameIndex {
    state: Mutex<State>,
    /// The names the index keeps, of each set.
    pub references: References,
}

impl NameIndex {
    /// An index of what `references` names (Secrets, ConfigMaps or a
    /// workload).
    pub fn of(references: References) -> Self {
        NameIndex {
            state: Mutex::default(),
            references,
        }
    }

    /// Records `set` as it is now, replacing what it referenced before.
    pub fn update(&self, set: &ClientCertificateSet) {
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let now: Vec<String> = (self.references)(set)
            .into_iter()
            .map(str::to_string)
            .collect();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let State { sets, names } = &mut *state;
        let before = names
            .insert((ns.clone(), name.clone()), now.clone())
            .unwrap_or_default();
        for s in before.iter().filter(|s| !now.contains(s)) {
            unlink(sets, &ns, s, &name);
        }
        for s in now {
            sets.entry((ns.clone(), s))
                .or_default()
                .insert(name.clone());
        }
    }

    /// Forgets a deleted set.
    pub fn remove(&self, set: &ClientCertificateSet) {
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let State { sets, names } = &mut *state;
        for s in names
            .remove(&(ns.clone(), name.clone()))
            .unwrap_or_default()
        {
            unlink(sets, &ns, &s, &name);
        }
    }

    /// The names of the sets in `ns` that name the object `name`.
    pub fn sets_using(&self, ns: &str, name: &str) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .sets
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn unlink(sets: &mut HashMap<Key, HashSet<String>>, ns: &str, name: &str, set: &str) {
    let key = (ns.to_string(), name.to_string());
    if let Some(users) = sets.get_mut(&key) {
        users.remove(set);
        if users.is_empty() {
            sets.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NameIndex;
    use crate::resource::ClientCertificateSet;
    use serde_json::json;

    fn set(name: &str, ns: &str, secrets: &[&str]) -> ClientCertificateSet {
        let certs: Vec<_> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("c{i}"),
                "pkcs12": {"secretName": s, "key": "k"}, "password": {"secretName": "pw", "key": "p"}}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"app": {"deployment": "app"}, "certificates": certs}
        }))
        .unwrap()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn finds_the_sets_of_a_secret_and_follows_spec_changes_and_deletes() {
        let index = NameIndex::of(super::referenced_secrets);
        index.update(&set("s1", "a", &["x", "y"]));
        index.update(&set("s2", "a", &["y"]));
        index.update(&set("s3", "b", &["y"]));
        assert_eq!(sorted(index.sets_using("a", "y")), ["s1", "s2"]);
        assert_eq!(index.sets_using("a", "x"), ["s1"]);
        assert_eq!(sorted(index.sets_using("a", "pw")), ["s1", "s2"]);
        assert_eq!(index.sets_using("b", "y"), ["s3"]);
        assert!(index.sets_using("a", "z").is_empty());

        // s1 stops using x and starts using z.
        index.update(&set("s1", "a", &["z", "y"]));
        assert!(index.sets_using("a", "x").is_empty());
        assert_eq!(index.sets_using("a", "z"), ["s1"]);
        assert_eq!(sorted(index.sets_using("a", "y")), ["s1", "s2"]);

        index.remove(&set("s1", "a", &[]));
        assert!(index.sets_using("a", "z").is_empty());
        assert_eq!(index.sets_using("a", "y"), ["s2"]);
        assert_eq!(index.sets_using("a", "pw"), ["s2"]);
        assert_eq!(index.sets_using("b", "y"), ["s3"]);
    }

    fn targeting(name: &str, ns: &str, app: serde_json::Value) -> ClientCertificateSet {
        let mut s = set(name, ns, &["x"]);
        s.spec.app = serde_json::from_value(app).unwrap();
        s
    }

    #[test]
    fn finds_the_sets_of_a_workload_by_kind_and_follows_a_changed_target() {
        let deployments = NameIndex::of(super::targeted_deployments);
        let stateful_sets = NameIndex::of(super::targeted_stateful_sets);
        let both = [&deployments, &stateful_sets];
        let d = targeting("s1", "a", json!({"deployment": "web"}));
        let st = targeting("s2", "a", json!({"statefulSet": "web"}));
        both.iter().for_each(|i| {
            i.update(&d);
            i.update(&st);
        });
        assert_eq!(deployments.sets_using("a", "web"), ["s1"]);
        assert_eq!(stateful_sets.sets_using("a", "web"), ["s2"]);
        assert!(deployments.sets_using("b", "web").is_empty());

        // s1 moves from the Deployment web to the StatefulSet db.
        let moved = targeting("s1", "a", json!({"statefulSet": "db"}));
        both.iter().for_each(|i| i.update(&moved));
        assert!(deployments.sets_using("a", "web").is_empty());
        assert_eq!(stateful_sets.sets_using("a", "db"), ["s1"]);

        both.iter().for_each(|i| i.remove(&st));
        assert!(stateful_sets.sets_using("a", "web").is_empty());
    }
}
