//! Everything that touches mount(2) and mountinfo.
//!
//! [`table`] reads the kernel's mount table (the only source of truth for what is mounted,
//! published or broken), concurrent readers sharing a read ([`coalesce`]); [`ops`] wraps the few mount operations the plugin performs:
//! tmpfs holders, read-only binds, propagation changes and lazy unmounts.

pub mod coalesce;
pub mod ops;
pub mod table;
