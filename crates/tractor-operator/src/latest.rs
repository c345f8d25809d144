//! Read-your-writes for the reconciler: the newest copy of each ModelDeployment this operator wrote, used
//! while the watch-fed store still holds an older one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use tractor_api::ModelDeployment;

use crate::object_key as key;

/// Read-your-writes: the newest copy of each ModelDeployment this operator wrote, used while the watch-fed store
/// still holds an older one.
///
/// Why: the status carries what later reconciles build on (the autoscaler's count, the canary's step and
/// weight). A reconcile woken by a child's event can run before the watch delivers the status just written;
/// built on the store's older copy it would undo a scale-up within a second and restart a canary step (seen
/// in the autoscaler's process tests before this existed). Resource versions compare as integers since
/// Kubernetes 1.35 (KEP-5504); where one does not parse, the store's copy is used.
#[derive(Default)]
pub struct Written {
    objects: Mutex<HashMap<String, Arc<ModelDeployment>>>,
}

impl Written {
    /// Keeps `written` (the API server's answer to a write) until the store has caught up with it.
    pub fn remember(&self, mut written: ModelDeployment) {
        // As the store does: managedFields are half the object and never read.
        written.managed_fields_mut().clear();
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(key(&written), Arc::new(written));
        }
    }

    /// The newer of the store's copy and the last one written; forgets the written one once the store has
    /// it (or something newer, or the object is gone).
    pub fn latest(&self, from_store: Arc<ModelDeployment>) -> Arc<ModelDeployment> {
        let Ok(mut objects) = self.objects.lock() else {
            return from_store;
        };
        let k = key(&from_store);
        let Some(written) = objects.get(&k) else {
            return from_store;
        };
        let newer = match (
            written.metadata.resource_version.as_deref(),
            from_store.metadata.resource_version.as_deref(),
        ) {
            (Some(w), Some(s)) => compare(w, s) == Some(std::cmp::Ordering::Greater),
            _ => false,
        };
        // A different uid is a new object of the same name: nothing written to the old one applies.
        if newer && written.metadata.uid == from_store.metadata.uid {
            return written.clone();
        }
        objects.remove(&k);
        from_store
    }

    /// Drops what is remembered about an object (it is being deleted).
    pub fn forget(&self, md: &ModelDeployment) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.remove(&key(md));
        }
    }
}

/// Orders two resource versions as KEP-5504 defines them (decimal integers without leading zeros, at most
/// 128 bits); `None` when either is not one.
pub fn compare(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let parse = |s: &str| -> Option<u128> {
        if s.is_empty() || s.starts_with('0') || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    Some(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(rv: &str, uid: &str, replicas: i32) -> ModelDeployment {
        let mut m: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.tractor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns", "resourceVersion": rv, "uid": uid},
            "spec": {"model": {"uri": "https://example.com/m.onnx"}},
        }))
        .expect("a ModelDeployment");
        m.status
            .get_or_insert_with(Default::default)
            .desired_replicas = Some(replicas);
        m
    }

    fn replicas(m: &ModelDeployment) -> Option<i32> {
        m.status.as_ref().and_then(|s| s.desired_replicas)
    }

    #[test]
    fn resource_versions_compare_as_integers() {
        assert_eq!(compare("9", "10"), Some(std::cmp::Ordering::Less));
        assert_eq!(compare("1001", "1001"), Some(std::cmp::Ordering::Equal));
        assert_eq!(compare("20", "3"), Some(std::cmp::Ordering::Greater));
        for bad in ["", "012", "12a", "-1"] {
            assert_eq!(compare(bad, "5"), None, "{bad:?}");
            assert_eq!(compare("5", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_written_copy_wins_until_the_store_catches_up() {
        let w = Written::default();
        w.remember(md("101", "u", 3));
        // The store still has the version the write was made on.
        assert_eq!(replicas(&w.latest(Arc::new(md("100", "u", 2)))), Some(3));
        // It caught up: the store's copy, and the written one is forgotten.
        assert_eq!(replicas(&w.latest(Arc::new(md("101", "u", 3)))), Some(3));
        assert_eq!(replicas(&w.latest(Arc::new(md("100", "u", 2)))), Some(2));
        // Something newer than the write (a user's edit) wins too.
        w.remember(md("200", "u", 4));
        assert_eq!(replicas(&w.latest(Arc::new(md("205", "u", 5)))), Some(5));
    }

    #[test]
    fn a_recreated_object_or_an_unparsable_version_takes_the_store() {
        let w = Written::default();
        w.remember(md("101", "old", 3));
        assert_eq!(replicas(&w.latest(Arc::new(md("50", "new", 1)))), Some(1));
        w.remember(md("x1", "u", 3));
        assert_eq!(replicas(&w.latest(Arc::new(md("100", "u", 2)))), Some(2));
        w.remember(md("101", "u", 3));
        w.forget(&md("100", "u", 2));
        assert_eq!(replicas(&w.latest(Arc::new(md("100", "u", 2)))), Some(2));
    }
}
