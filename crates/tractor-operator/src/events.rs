//! Kubernetes Events (`events.k8s.io/v1`) about ModelDeployments: one Event object per distinct message, a
//! repeat of the same message within a few minutes folded into that object's `series`, as client-go's
//! recorder does for Deployments and HPAs.
//!
//! kube-runtime's `Recorder` folds every event with the same type, reason and action into the first one's
//! series and keeps the first one's note, so `kubectl describe` said "replicas 1 -> 2" (count 3) where the
//! model went 1 → 2 → 4 → 1, and a second promotion showed the first one's revision.
#![allow(clippy::disallowed_methods)] // the recorder writes Events, best effort, outside any plan

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::EventType;

use crate::error::{Error, call, is_not_found};
use crate::rbac;

/// How long a message's Event keeps collecting repeats; a repeat after that starts a new Event.
const FOLD_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// One Event to publish, as decided (kube-runtime's own type is neither `Clone` nor comparable, which a
/// table-tested plan needs).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Normal or Warning.
    pub type_: EventType,
    /// A CamelCase reason.
    pub reason: String,
    /// The message.
    pub note: Option<String>,
    /// What the operator did, e.g. `Rollout`.
    pub action: String,
    /// Another object the event is about.
    pub secondary: Option<ObjectReference>,
}

/// Publishes Events, folding repeats of one message about one object.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<Key, Seen>>,
}

/// What makes two events the same one: everything `kubectl describe` shows, the message included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
}

/// The Event object a message went to, and how often it occurred.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

impl Recorder {
    /// A recorder reporting as `controller` (`reportingController`), from `instance` (`reportingInstance`,
    /// the pod name; the controller's name when not in a pod).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Recorder {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            seen: Mutex::default(),
        }
    }

    /// Publish `ev` about `regarding`: a new Event, or one more occurrence in the `series` of the Event that
    /// carried the same message within [`FOLD_WINDOW`].
    ///
    /// # Errors
    /// The API server's refusal of the create or patch, or its timeout.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), Error> {
        let now = crate::clock::now();
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.kind.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(ev.type_),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
        };
        let previous = {
            let mut seen = self.lock();
            seen.retain(|_, s| s.last + FOLD_WINDOW > now);
            seen.get(&key).cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        let folded = match &previous {
            Some(last) => {
                let series = serde_json::json!({
                    "series": EventSeries { count: last.count + 1, last_observed_time: MicroTime(now) }
                });
                match call(
                    rbac::PATCH_EVENT,
                    namespace,
                    api.patch(&last.name, &PatchParams::default(), &Patch::Merge(&series)),
                )
                .await
                {
                    Ok(_) => Some(Seen {
                        name: last.name.clone(),
                        count: last.count + 1,
                        last: now,
                    }),
                    // Events expire (the API server's --event-ttl): a repeat of a gone one starts afresh.
                    Err(Error::Api { source, .. }) if is_not_found(&source) => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let seen = match folded {
            Some(s) => s,
            None => {
                let event = self.new_event(ev, regarding, now);
                let created = call(
                    rbac::CREATE_EVENT,
                    namespace,
                    api.create(&PostParams::default(), &event),
                )
                .await?;
                Seen {
                    name: created.metadata.name.unwrap_or_default(),
                    count: 1,
                    last: now,
                }
            }
        };
        self.lock().insert(key, seen);
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> KubeEvent {
        KubeEvent {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Unique per publish: the object's name and the time, as kubectl and client-go name them.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_name(ev.type_).to_owned()),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note: ev.note.clone(),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..KubeEvent::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Seen>> {
        // The map is a cache of names: a panic mid-update leaves at worst one repeat as a new Event.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}
