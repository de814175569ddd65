//! The MTA worker library.
