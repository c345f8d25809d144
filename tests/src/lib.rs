//! End-to-end tests of tractor against a real local Kubernetes; the harness lives in [`cluster`].

pub mod canary;
pub mod cluster;
pub mod install;
pub mod modeldeployment;
pub mod node;
pub mod operator;
pub mod optimize;
pub mod paths;
pub mod scale;
pub mod serve;
pub mod sink;
