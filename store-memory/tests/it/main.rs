//! `store-memory`'s integration tests, in one binary: the conformance suite (`conformance`) and
//! behaviour of its own: the full-store rule, memory limits, cleanup (`memory`).

mod conformance;
mod memory;
