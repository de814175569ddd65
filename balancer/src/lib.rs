//! The SMTP balancer's user-space side: it loads the XDP programs and keeps their maps
//! current. The binary (`src/main.rs`) is a thin CLI over this library.

pub mod dataplane;
pub mod programs;
