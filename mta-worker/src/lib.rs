//! The MTA worker library: an ESMTP server that accepts mail into a durable spool.
//! The binary (`main.rs`) is a thin CLI over [`server::run`].

pub mod api;
pub mod append;
pub mod auth;
pub mod bounce;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod egress;
pub mod log;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod shaping;
pub mod smtp;
pub mod spool;
pub mod state;
pub mod tls;
