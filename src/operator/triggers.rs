//! Which watch events call for a reconcile. A rollout updates a Deployment's
//! status many times; each update re-running the pass of the set that wires
//! it would cost reads for nothing: a set waiting for a rollout is passed
//! only when the rollout reaches a step the set reports. Deletions always
//! count.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::{self, Event};

use super::memory::Key;

/// The objects whose `property` changed since they were last seen, unless
/// `echo` says the change is one certpin itself just made; an object whose
/// `stage` changed to one that is news to the set following it (`None`:
/// the status does not describe the current spec yet, so it says nothing
/// new); and the deleted ones.
pub fn changed_or_deleted<K, S>(
    events: S,
    property: fn(&K) -> u64,
    stage: fn(&K) -> Option<u64>,
    mut echo: impl FnMut(&Key, u64) -> bool + Send + 'static,
    news: impl Fn(&Key, u64) -> bool + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource<DynamicType = ()> + k8s_openapi::Resource + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<Key, u64> = HashMap::new();
    let mut stages: HashMap<Key, u64> = HashMap::new();
    events.flat_map(move |event| {
        let out: Vec<Result<K, watcher::Error>> = match event {
            Err(e) => vec![Err(e)],
            Ok(Event::Apply(o) | Event::InitApply(o)) => {
                let value = property(&o);
                let key = key(&o);
                let changed = seen.insert(key.clone(), value) != Some(value);
                let spec_news = changed && !echo(&key, value);
                // Every object's stage is kept, so that following starts
                // from what was last seen.
                let stage_changed =
                    stage(&o).filter(|s| stages.insert(key.clone(), *s) != Some(*s));
                if spec_news || stage_changed.is_some_and(|s| news(&key, s)) {
                    vec![Ok(o)]
                } else {
                    vec![]
                }
            }
            Ok(Event::Delete(o)) => {
                let key = key(&o);
                seen.remove(&key);
                stages.remove(&key);
                vec![Ok(o)]
            }
            Ok(Event::Init | Event::InitDone) => vec![],
        };
        futures::stream::iter(out)
    })
}

/// The object's key in certpin's memory.
pub fn key<K: Resource + k8s_openapi::Resource>(o: &K) -> Key {
    let m = o.meta();
    Key::new(
        K::KIND,
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// Backoff for the watch streams: exponential from 0.5 s, capped at 5 s.
/// kube's default caps at 30 s and forgets errors only after 2 minutes of
/// calm, so after an API server or etcd restart (which answers watches with
/// 410 for a while) a change could wait a minute or more to be seen.
pub struct WatchBackoff {
    next: Duration,
}

const FIRST: Duration = Duration::from_millis(500);
const CAP: Duration = Duration::from_secs(5);

pub fn watch_backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff { next: FIRST }, Duration::from_secs(30))
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(CAP);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// A Deployment's spec generation and annotations (the wiring owner and the
/// StopStart record live there), without the deployment controller's own
/// `deployment.kubernetes.io/*` annotations: it bumps the revision on every
/// rollout, which is not a change certpin needs to look at.
pub fn spec_and_annotations<K: Resource>(o: &K) -> u64 {
    spec_and_annotations_of(o.meta())
}

/// `spec_and_annotations` of an object's metadata.
pub fn spec_and_annotations_of(meta: &kube::core::ObjectMeta) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    // The controlling owner too: a workload another controller gave up (or
    // took) is wired (or refused) at once, not at the next resync.
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str());
    controller.hash(&mut h);
    if let Some(annotations) = &meta.annotations {
        annotations
            .iter()
            .filter(|(k, _)| !k.starts_with("deployment.kubernetes.io/"))
            .for_each(|kv| kv.hash(&mut h));
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::core::ObjectMeta;

    fn app() -> Key {
        Key::new("Deployment", "ns", "app")
    }

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

    #[test]
    fn watch_backoff_doubles_up_to_five_seconds_and_starts_over_on_reset() {
        let mut b = WatchBackoff { next: FIRST };
        let seen: Vec<u64> = (0..6)
            .filter_map(|_| b.next())
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(seen, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
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
        assert_eq!(passed(events, |_, _| false).await, ["1", "3", "5", "6"]);
    }

    /// A Deployment at `generation` whose status has seen `observed`, with
    /// `updated` of 2 replicas updated.
    fn rolling(generation: i64, rv: &str, observed: i64, updated: i32) -> Deployment {
        let mut o = d(generation, rv);
        o.spec = Some(k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(2),
            ..Default::default()
        });
        o.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(2),
            updated_replicas: Some(updated),
            available_replicas: Some(2),
            ..Default::default()
        });
        o
    }

    #[tokio::test]
    async fn a_followed_rollout_passes_when_its_stage_changes() {
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(rolling(1, "1", 1, 2))),
            Ok(Event::Apply(rolling(2, "2", 1, 2))), // certpin's write (echo)
            Ok(Event::Apply(rolling(2, "3", 1, 2))), // status not yet of generation 2
            Ok(Event::Apply(rolling(2, "4", 2, 0))), // seen: pods being created
            Ok(Event::Apply(rolling(2, "5", 2, 1))), // same stage, other counts
            Ok(Event::Apply(rolling(2, "6", 2, 2))), // complete
            Ok(Event::Apply(rolling(2, "7", 2, 2))), // nothing new
        ]);
        let own = std::sync::Arc::new(crate::operator::memory::Memory::default());
        own.expect_echo(app(), spec_and_annotations(&d(2, "")));
        let passed = passed_with(
            events,
            crate::operator::reconcile::deployment_stage,
            move |k, v| own.is_echo(k, v),
            |key, _| *key == app(),
        )
        .await;
        assert_eq!(passed, ["1", "4", "6"]);
    }

    #[tokio::test]
    async fn the_first_stage_of_a_rollout_certpin_started_is_no_news() {
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(rolling(1, "1", 1, 2))),
            Ok(Event::Apply(rolling(2, "2", 1, 2))), // certpin's write (echo)
            Ok(Event::Apply(rolling(2, "4", 2, 0))), // what the set reports
            Ok(Event::Apply(rolling(2, "6", 2, 2))), // complete
        ]);
        let own = std::sync::Arc::new(crate::operator::memory::Memory::default());
        own.follow(app(), &Key::set("ns", "s"), true);
        own.expect_echo(app(), spec_and_annotations(&d(2, "")));
        let reported = crate::operator::reconcile::deployment_stage(&rolling(2, "4", 2, 0));
        own.expect_stage(app(), reported.expect("a stage"));
        let (echoes, stages) = (own.clone(), own);
        let passed = passed_with(
            events,
            crate::operator::reconcile::deployment_stage,
            move |k, v| echoes.is_echo(k, v),
            move |k, s| stages.stage_news(k, s),
        )
        .await;
        assert_eq!(passed, ["1", "6"]);
    }

    #[tokio::test]
    async fn stage_changes_of_a_rollout_nobody_follows_are_dropped() {
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(rolling(1, "1", 1, 2))),
            Ok(Event::Apply(rolling(1, "2", 1, 0))),
            Ok(Event::Apply(rolling(1, "3", 1, 2))),
        ]);
        let passed = passed_with(
            events,
            crate::operator::reconcile::deployment_stage,
            |_, _| false,
            |_, _| false,
        )
        .await;
        assert_eq!(passed, ["1"]);
    }

    async fn passed(
        events: impl Stream<Item = Result<Event<Deployment>, watcher::Error>> + Send,
        echo: impl FnMut(&Key, u64) -> bool + Send + 'static,
    ) -> Vec<String> {
        passed_with(events, |_| None, echo, |_, _| false).await
    }

    /// The resourceVersions of the events `changed_or_deleted` lets through.
    async fn passed_with(
        events: impl Stream<Item = Result<Event<Deployment>, watcher::Error>> + Send,
        stage: fn(&Deployment) -> Option<u64>,
        echo: impl FnMut(&Key, u64) -> bool + Send + 'static,
        news: impl Fn(&Key, u64) -> bool + Send + 'static,
    ) -> Vec<String> {
        changed_or_deleted(events, spec_and_annotations, stage, echo, news)
            .map(|r| r.map(|o| o.metadata.resource_version.unwrap_or_default()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    }

    fn annotated(generation: i64, rv: &str, annotations: &[(&str, &str)]) -> Deployment {
        let mut o = d(generation, rv);
        o.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        o
    }

    #[tokio::test]
    async fn the_deployment_controllers_revision_bump_is_not_a_change() {
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(annotated(1, "1", &[("a", "1")]))),
            Ok(Event::Apply(annotated(
                1,
                "2",
                &[("a", "1"), ("deployment.kubernetes.io/revision", "2")],
            ))),
            Ok(Event::Apply(annotated(
                1,
                "3",
                &[("a", "2"), ("deployment.kubernetes.io/revision", "2")],
            ))),
        ]);
        assert_eq!(passed(events, |_, _| false).await, ["1", "3"]);
    }

    #[tokio::test]
    async fn the_echo_of_certpins_own_write_is_dropped_once() {
        let own = std::sync::Arc::new(crate::operator::memory::Memory::default());
        own.expect_echo(app(), spec_and_annotations(&d(2, "")));
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(d(1, "1"))),
            Ok(Event::Apply(d(2, "2"))), // certpin's write
            Ok(Event::Delete(d(2, "3"))),
            Ok(Event::Apply(d(2, "4"))), // created again by someone else
        ]);
        let echoes = own.clone();
        let passed = passed(events, move |k, v| echoes.is_echo(k, v)).await;
        assert_eq!(passed, ["1", "3", "4"]);
    }
}
