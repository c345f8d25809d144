//! placeholder

pub mod fetch;
pub mod optimize;
