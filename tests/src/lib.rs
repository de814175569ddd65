//! Helpers for the end-to-end tests: namespaces, veth pairs, processes, all removed on drop.
