//! The ESMTP server side: protocol parsing is `smtp-proto`'s, this module owns the
//! session state machine, limits, body checks and replies.

mod body_buf;
mod clean_lines;
pub mod conn;
pub mod data;
pub mod received;
pub mod reply;
mod sasl;
pub mod session;
pub mod stream;
mod txn;

pub use reply::Reply;
