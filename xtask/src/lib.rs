//! The parts of `cargo xtask` worth testing on their own: the cluster-test checker.

pub mod checker;
