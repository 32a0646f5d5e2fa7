//! `store-config`'s integration tests, in one binary: registries that load (`registry`) and a
//! table of broken ones, each error naming file, entry, field and line (`broken`).

mod broken;
mod registry;
