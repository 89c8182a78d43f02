//! Real-Dovecot fixtures shared by `tests/e2e_dovecot.rs` and
//! `examples/demo.rs`: a cluster of Dovecot 2.3 instances ("backends") on
//! 127.0.0.1 sharing one mail store, configured from the operator files in
//! `conf.d/`, and small IMAP and POP3 clients to drive them.
//!
//! Everything returns `Result<_, String>` instead of panicking: the demo is
//! built with `panic = "abort"`, where a panic would skip the `Drop` that
//! stops the Dovecot instances.

#![allow(dead_code)]

pub mod cluster;
pub mod conf;
pub mod imap;
pub mod pop3;
pub mod scenario;
pub mod soak;
pub mod system;

pub use cluster::{Cluster, Postlogin};
pub use system::prerequisites_or_skip;

/// The password the static passdb accepts for every user.
pub const PASSWORD: &str = "secret";
