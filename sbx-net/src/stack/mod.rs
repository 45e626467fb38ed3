//! The userspace network stack between a guest's Ethernet frames and the egress proxy.

mod bridge;
mod classify;
mod config;
mod device;
mod dns;
mod engine;
mod flow;
mod handler;
mod names;

pub use config::StackConfig;
pub use dns::{DnsError, DnsQuery, DnsRcode};
pub use engine::{NetStack, NetStackHandle, StackStats};
pub use handler::{
    BoxFuture, DropReason, Dropped, DroppedProtocol, FlowHandler, FlowStream, GuestAnswer,
};
