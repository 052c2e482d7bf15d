//! Which watch events call for a reconcile. A rollout updates a Deployment's
//! status many times; each update re-running the pass of the set that wires
//! it would cost reads for nothing. Deletions always count.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher::{self, Event};

/// The objects whose `property` changed since they were last seen, and the
/// deleted ones.
pub fn changed_or_deleted<K, S>(
    events: S,
    property: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.flat_map(move |event| {
        let out: Vec<Result<K, watcher::Error>> = match event {
            Err(e) => vec![Err(e)],
            Ok(Event::Apply(o) | Event::InitApply(o)) => {
                let value = property(&o);
                if seen.insert(key(&o), value) == Some(value) {
                    vec![]
                } else {
                    vec![Ok(o)]
                }
            }
            Ok(Event::Delete(o)) => {
                seen.remove(&key(&o));
                vec![Ok(o)]
            }
            Ok(Event::Init | Event::InitDone) => vec![],
        };
        futures::stream::iter(out)
    })
}

fn key<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// A Deployment's spec generation and annotations (the wiring owner and the
/// StopStart record live there).
pub fn spec_and_annotations<K: Resource>(o: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    o.meta().generation.hash(&mut h);
    o.meta().annotations.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::core::ObjectMeta;

    fn d(generation: i64, rv: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("ns".into()),
                generation: Some(generation),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        }
    }

    #[tokio::test]
    async fn status_only_updates_are_dropped_spec_changes_and_deletions_pass() {
        let events = futures::stream::iter(vec![
            Ok(Event::InitApply(d(1, "1"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(d(1, "2"))), // status update
            Ok(Event::Apply(d(2, "3"))), // spec change
            Ok(Event::Apply(d(2, "4"))), // status update
            Ok(Event::Delete(d(2, "5"))),
            Ok(Event::Apply(d(1, "6"))), // created again
        ]);
        let passed: Vec<String> = changed_or_deleted(events, spec_and_annotations)
            .map(|r| r.map(|o| o.metadata.resource_version.unwrap_or_default()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(passed, ["1", "3", "5", "6"]);
    }
}
