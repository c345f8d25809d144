//! The operator's one wall clock. A reconcile reads it once, in `observe`; `decide` only sees that reading,
//! so a plan can be computed again for a fixed time. (Elapsed-time measurements use `Instant`.)

use k8s_openapi::jiff::Timestamp;

/// The current time.
pub fn now() -> Timestamp {
    Timestamp::now()
}
