//! Paths of the test guests compiled by this crate's build script.
