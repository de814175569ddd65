//! The SMTP balancer's user-space side: it loads the XDP programs and keeps their maps
//! current. The binary (`src/main.rs`) is a thin CLI over this library.

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod maglev;
pub mod programs;
