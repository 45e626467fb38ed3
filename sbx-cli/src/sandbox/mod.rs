//! Sandboxes: their state folders, the per-sandbox supervisor, the two backends, and the
//! terminal attach that `sbx run` and `sbx exec` share.

pub mod backend_ns;
pub mod backend_vm;
pub mod clone;
pub mod config;
pub mod lifecycle;
pub mod lock;
pub mod network;
pub mod state;
pub mod supervisor;
pub mod terminal;
pub mod workspace;
