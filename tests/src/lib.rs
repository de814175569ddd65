//! Helpers for the end-to-end tests and the lab: network namespaces, veth links and child
//! processes, each owned by a guard that removes it on drop, also when a test fails.
//!
//! Only addresses inside namespaces these helpers create are ever used (198.18.0.0/15 and
//! fd00:198:18::/48), never the host's own networks.

pub mod dns;
pub mod frontdoor;
pub mod loadgen;
pub mod mail_lab;
pub mod netns;
pub mod proc;
pub mod sink;
pub mod topo;
pub mod xdp_tier;
