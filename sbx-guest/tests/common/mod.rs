//! Shared helpers for the agent's integration tests.

#![allow(dead_code)]

mod sandbox;

pub use sandbox::*;
