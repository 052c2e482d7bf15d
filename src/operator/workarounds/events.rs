//! Publishing Events (events.k8s.io/v1), with repeats folded into a series.
//!
//! A kube workaround: kube-runtime 5.0's `Recorder` folds an Event into an
//! earlier one with the same reason and action whatever its note, so a
//! second "Applied" within six minutes showed the first one's hash for
//! ever. Here the note is part of what makes a repeat. Delete this module
//! when kube's `EventKey` includes the note.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::Mutex;

/// How long a repeat is folded into the earlier Event (as kube and client-go do).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: String,
    regarding: Option<String>,
    related: Option<String>,
}

struct Published {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<Key, Published>>,
}

/// One Event to publish.
pub struct Note<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: &'a str,
    pub regarding: &'a ObjectReference,
    pub related: Option<&'a ObjectReference>,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Publisher {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or_else(|| controller.into()),
            published: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Published>> {
        crate::operator::lock::lock(&self.published)
    }

    pub async fn publish(&self, n: Note<'_>) -> kube::Result<()> {
        let key = Key {
            warning: n.warning,
            reason: n.reason.into(),
            action: n.action.into(),
            note: n.note.into(),
            regarding: n.regarding.uid.clone(),
            related: n.related.and_then(|r| r.uid.clone()),
        };
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        // Decided under the lock, written without it: Events of many
        // passes go out at once.
        let repeat = {
            let mut published = self.lock();
            published.retain(|_, p| p.at.elapsed() < SERIES_WINDOW);
            published.get_mut(&key).map(|p| {
                p.count += 1;
                p.at = Instant::now();
                (p.namespace.clone(), p.name.clone(), p.count)
            })
        };
        match repeat {
            Some((ns, name, count)) => self.count_repeat(&ns, &name, count, now).await,
            None => {
                let event = self.event(&n, now);
                let (namespace, name) = (
                    event.metadata.namespace.clone(),
                    event.metadata.name.clone(),
                );
                let namespace = namespace.unwrap_or_default();
                Api::<Event>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &event)
                    .await?;
                let (name, count, at) = (name.unwrap_or_default(), 1, Instant::now());
                self.lock().insert(
                    key,
                    Published {
                        namespace,
                        name,
                        count,
                        at,
                    },
                );
                Ok(())
            }
        }
    }

    /// A repeat: the earlier Event's series counts it.
    async fn count_repeat(
        &self,
        ns: &str,
        name: &str,
        count: i32,
        now: MicroTime,
    ) -> kube::Result<()> {
        let series = EventSeries {
            count,
            last_observed_time: now,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({ "series": series });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// A new Event for `n`.
    fn event(&self, n: &Note<'_>, now: MicroTime) -> Event {
        let namespace = n.regarding.namespace.clone();
        let name = format!(
            "{}.{:x}",
            n.regarding.name.as_deref().unwrap_or(&self.controller),
            now.0.as_nanosecond()
        );
        Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.unwrap_or_else(|| "default".into())),
                ..Default::default()
            },
            event_time: Some(now),
            type_: Some(if n.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(n.reason.into()),
            action: Some(n.action.into()),
            note: Some(n.note.into()),
            regarding: Some(n.regarding.clone()),
            related: n.related.cloned(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}
