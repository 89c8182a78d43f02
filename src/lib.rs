//! nfs-hostchange: keep Dovecot's mailbox list index in local tmpfs and drop it
//! whenever the user was served by another backend since.

pub mod interval;
pub mod varexpand;
