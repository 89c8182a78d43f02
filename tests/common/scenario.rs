//! The stale folder list scenario, shared by the end-to-end test (which
//! asserts on what it observed) and the demo (which narrates it).

use std::time::Duration;

use super::cluster::Cluster;

/// How long to wait for a session's lines to reach the Dovecot log.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// The folder the scenario creates on the second backend.
pub const FOLDER: &str = "Foo";

/// What the scenario saw.
#[derive(Debug)]
pub struct Observations {
    /// LIST on the first backend, before anything happened elsewhere.
    pub first_list: Vec<String>,
    /// LIST on the second backend after it created the folder.
    pub other_list: Vec<String>,
    /// LIST on the first backend when the user came back.
    pub return_list: Vec<String>,
    /// STATUS FOLDER (MESSAGES) on the first backend when the user came back.
    pub return_status: Result<u32, String>,
    /// The first backend's log lines from the return login.
    pub return_log: Vec<String>,
}

/// `user` logs in on `first` and lists (after appending a message to INBOX
/// if `append_first`); then on `other` creates FOLDER, appends a message to
/// it and lists; then logs in on `first` again, lists and asks for FOLDER's
/// STATUS. `narrate` hears each step.
pub fn stale_folder_list(
    cluster: &Cluster,
    first: &str,
    other: &str,
    user: &str,
    append_first: bool,
    narrate: &mut dyn FnMut(String),
) -> Result<Observations, String> {
    let a = cluster.backend(first);
    let b = cluster.backend(other);

    let mut session = a.imap_login(user)?;
    if append_first {
        session.append("INBOX", &message(user, first))?;
    }
    let first_list = session.list()?;
    session.logout()?;
    let appended = if append_first {
        "APPEND one message to INBOX, "
    } else {
        ""
    };
    narrate(format!(
        "{first}: {user} logs in, {appended}LIST shows {first_list:?}"
    ));

    let mut session = b.imap_login(user)?;
    session.create(FOLDER)?;
    session.append(FOLDER, &message(user, other))?;
    let other_list = session.list()?;
    session.logout()?;
    narrate(format!(
        "{other}: {user} logs in, CREATE {FOLDER}, APPEND one message to it; \
         LIST shows {other_list:?}"
    ));

    let mark = a.log_mark();
    let mut session = a.imap_login(user)?;
    let return_list = session.list()?;
    let return_status = session.status_messages(FOLDER);
    session.logout()?;
    let status_text = match &return_status {
        Ok(n) => format!("{n} message(s)"),
        Err(e) => format!("error: {e}"),
    };
    narrate(format!(
        "{first}: {user} logs in again, LIST shows {return_list:?}; \
         STATUS {FOLDER} (MESSAGES): {status_text}"
    ));

    // The session's last line; the post-login program's lines come earlier
    // but through another pipe, so they may land a moment later still.
    a.wait_for_log(mark, LOG_WAIT, |l| {
        l.contains(&format!("imap({user})")) && l.contains("Disconnected")
    })?;
    let return_log = a.log_since(mark)?;

    Ok(Observations {
        first_list,
        other_list,
        return_list,
        return_status,
        return_log,
    })
}

fn message(user: &str, backend: &str) -> String {
    format!(
        "From: {user}@example.org\nTo: {user}@example.org\n\
         Subject: filed on {backend}\n\nhello from {backend}\n"
    )
}

/// Log lines that mention nfs-hostchange.
pub fn wrapper_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("nfs-hostchange"))
        .collect()
}
