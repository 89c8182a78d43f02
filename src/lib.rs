//! nfs-hostchange: keep Dovecot's mailbox list index in local tmpfs and drop
//! it whenever the user was served by another backend since.
//!
//! The binary in `main.rs` only dispatches; everything else lives here, in
//! modules named after what they are.

pub mod check;
pub mod cli;
pub mod help;
pub mod interval;
pub mod listindex;
pub mod lock;
pub mod log;
pub mod login;
pub mod mail_location;
pub mod migrate;
pub mod nfs;
pub mod record;
pub mod settings;
pub mod show;
pub mod sys;
pub mod usercache;
pub mod var24;
pub mod varexpand;
