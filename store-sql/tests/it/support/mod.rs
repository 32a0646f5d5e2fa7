//! Helpers shared by the test binaries and the benchmark.

pub mod pg;
