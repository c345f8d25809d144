//! tractor
fn main() {}
