//! How long each step from model file to runnable plans took, for the server's start log and load metric.

use std::time::Duration;

/// The phase labels of [`LoadTimings::phases`]: bounded, so they can label a metric.
pub mod phase {
    /// Hashing the file (sha256).
    pub const DIGEST: &str = "digest";
    /// Reading the file and parsing it into tract's graph.
    pub const PARSE: &str = "parse";
    /// Typing the graph and decluttering it.
    pub const DECLUTTER: &str = "declutter";
    /// Optimizing the plans of every batch-size bucket and sharing their weights.
    pub const OPTIMIZE: &str = "optimize";
}

/// Start-up time by phase: [`crate::Model::timings`] has the load phases, [`crate::Runner::timings`] adds the
/// optimization of each bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// Hashing the file (sha256); zero for an NNEF folder, which has no digest.
    pub digest: Duration,
    /// Reading the file and parsing it into tract's graph (ONNX protobuf or NNEF archive).
    pub parse: Duration,
    /// Typing the graph (ONNX: shape inference with the batch symbolic) and decluttering it.
    pub declutter: Duration,
    /// Every bucket's plan, largest first, in the order they were optimized (empty before [`crate::Model::runner`]).
    pub plans: Vec<PlanTiming>,
}

/// One batch-size bucket's optimization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTiming {
    /// The bucket (0 for a model without a batch axis, which has one plan).
    pub bucket: usize,
    /// Optimizing the plan, then finding the weights it shares with the plans built before it.
    pub optimize: Duration,
    /// Whether the runner kept the plan; a bucket whose packed weights would have cost more memory than the
    /// runner allows is left out, and its batches run padded on the next larger bucket.
    pub kept: bool,
}

impl LoadTimings {
    /// Optimization time of all plans together, kept or not.
    pub fn optimize(&self) -> Duration {
        self.plans.iter().map(|plan| plan.optimize).sum()
    }

    /// All phases together.
    pub fn total(&self) -> Duration {
        self.digest + self.parse + self.declutter + self.optimize()
    }

    /// Each phase with its [`phase`] label, in start-up order.
    pub fn phases(&self) -> [(&'static str, Duration); 4] {
        [
            (phase::DIGEST, self.digest),
            (phase::PARSE, self.parse),
            (phase::DECLUTTER, self.declutter),
            (phase::OPTIMIZE, self.optimize()),
        ]
    }
}
