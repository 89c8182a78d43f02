//! End to end against a real Dovecot 2.3: two backends sharing one mail
//! store, each with its list index in its own LISTINDEX root, configured
//! from the shipped `conf.d/` files.
//!
//! Needs root, Dovecot (core, imapd, pop3d) and the user nfshc-test:
//! `sudo bash scripts/install-deps`. Without them the tests print a skip
//! notice, unless CI=true, where they fail.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::scenario::{stale_folder_list, wrapper_lines, FOLDER, LOG_WAIT};
use common::system::TEST_USER;
use common::{Cluster, Postlogin};

const A: &str = "backend-a";
const B: &str = "backend-b";

/// The host record the wrapper keeps in the user's INDEX directory.
const LASTHOST: &str = ".lasthost";

fn wrapper() -> Postlogin {
    Postlogin::Wrapper(PathBuf::from(env!("CARGO_BIN_EXE_nfs-hostchange")))
}

fn narrate(line: String) {
    eprintln!("  {line}");
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("Error:")).collect()
}

/// Without the wrapper the bug shows: after the user created a folder on B,
/// A answers LIST from its stale list index and leaves the folder out. If
/// this stops failing, the wrapped test below proves nothing.
#[test]
fn control_run_shows_stale_folder_list() {
    if !common::prerequisites_or_skip("control_run_shows_stale_folder_list") {
        return;
    }
    let cluster = Cluster::start("ctl", &[A, B], &Postlogin::Control).unwrap();

    // carol has a Maildir already; erin is new and gets her Maildir from
    // her first APPEND on A. (A user whose first LIST on A ran before the
    // Maildir existed does not see the bug: Dovecot rescans next time.)
    cluster.provision_user("carol").unwrap();
    for (user, append_first) in [("carol", false), ("erin", true)] {
        eprintln!("control run, {user}:");
        let seen = stale_folder_list(&cluster, A, B, user, append_first, &mut narrate).unwrap();
        assert_eq!(seen.first_list, ["INBOX"], "{user}: first LIST on A");
        assert!(
            seen.other_list.iter().any(|m| m == FOLDER),
            "{user}: B lists its new folder: {:?}",
            seen.other_list
        );
        assert!(
            !seen.return_list.iter().any(|m| m == FOLDER),
            "{user}: without the wrapper A was expected to serve its stale list \
             (INBOX only), but it listed {:?}; mailbox_list_index_very_dirty_syncs \
             no longer reproduces the bug, so the wrapped test proves nothing",
            seen.return_list
        );
    }

    // The POP3 post-login service works with a plain exec as well.
    let stat = cluster.backend(B).pop3_login("carol").unwrap();
    assert!(stat.starts_with("+OK 0 "), "POP3 STAT on B: {stat}");

    for backend in cluster.backends() {
        let log = backend.log_text().unwrap();
        assert!(
            error_lines(&log).is_empty(),
            "{}: errors in the Dovecot log:\n{log}",
            backend.name
        );
    }
}

/// With the wrapper, A drops its stale list index when the user returns from
/// B, lists the new folder, and says so in its Dovecot log.
#[test]
fn wrapper_drops_stale_list_index() {
    if !common::prerequisites_or_skip("wrapper_drops_stale_list_index") {
        return;
    }
    let cluster = Cluster::start("wrap", &[A, B], &wrapper()).unwrap();
    let (a, b) = (cluster.backend(A), cluster.backend(B));

    eprintln!("wrapped run, carol:");
    cluster.provision_user("carol").unwrap();
    let mark = a.log_mark();
    let seen = stale_folder_list(&cluster, A, B, "carol", false, &mut narrate).unwrap();
    assert_eq!(seen.first_list, ["INBOX"], "first LIST on A");
    assert!(
        seen.return_list.iter().any(|m| m == FOLDER),
        "A still serves a stale folder list: {:?}\nA's log:\n{}",
        seen.return_list,
        seen.return_log.join("\n")
    );
    assert_eq!(
        seen.return_status,
        Ok(1),
        "STATUS {FOLDER} (MESSAGES) on A after the message was filed on B"
    );

    // A logs the drop at Info, naming the previous host.
    let line = a
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains("Info:") && l.contains("nfs-hostchange") && l.contains(B)
        })
        .unwrap();
    eprintln!("  {A} log: {line}");

    // The record on the shared store names A now.
    let lasthost = cluster.maildir("carol").join(LASTHOST);
    let record = fs::read_to_string(&lasthost)
        .unwrap_or_else(|e| panic!("reading {}: {e}", lasthost.display()));
    assert!(
        record.contains(A),
        "{} holds {record:?}",
        lasthost.display()
    );

    // Steady state: the next login on A changes nothing and logs nothing.
    let mark = a.log_mark();
    let mut session = a.imap_login("carol").unwrap();
    let list = session.list().unwrap();
    session.logout().unwrap();
    assert!(
        list.iter().any(|m| m == FOLDER),
        "steady-state LIST on A: {list:?}"
    );
    a.wait_for_log(mark, LOG_WAIT, |l| {
        l.contains("imap(carol)") && l.contains("Disconnected")
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let lines = a.log_since(mark).unwrap();
    assert!(
        wrapper_lines(&lines).is_empty(),
        "steady-state login on A logged:\n{}",
        lines.join("\n")
    );

    // POP3 goes through pop3-postlogin: B was left by carol for A, so it
    // drops its list index too and names A.
    let mark = b.log_mark();
    let stat = b.pop3_login("carol").unwrap();
    assert!(stat.starts_with("+OK 0 "), "POP3 STAT on B: {stat}");
    let line = b
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains("pop3-postlogin") && l.contains("nfs-hostchange") && l.contains(A)
        })
        .unwrap();
    eprintln!("  {B} log: {line}");

    // New users: no INDEX directory at their first login, so nothing to
    // record then. erin's first APPEND on A creates her Maildir (and the bug
    // shows in the control run); dave's appears only when B creates the
    // folder.
    for (user, append_first) in [("erin", true), ("dave", false)] {
        eprintln!("wrapped run, {user} (new user):");
        let mark = a.log_mark();
        let seen = stale_folder_list(&cluster, A, B, user, append_first, &mut narrate).unwrap();
        assert!(
            seen.return_list.iter().any(|m| m == FOLDER),
            "{user}: A serves a stale folder list: {:?}\nA's log:\n{}",
            seen.return_list,
            seen.return_log.join("\n")
        );
        assert_eq!(seen.return_status, Ok(1), "{user}: STATUS on A");
        if append_first {
            let line = a
                .wait_for_log(mark, LOG_WAIT, |l| {
                    l.contains("Info:")
                        && l.contains(&format!("nfs-hostchange({user})"))
                        && l.contains(B)
                })
                .unwrap();
            eprintln!("  {A} log: {line}");
        }
    }

    // Nothing went wrong on the way, and nothing belongs to root.
    for backend in cluster.backends() {
        let log = backend.log_text().unwrap();
        let errors: Vec<&str> = error_lines(&log)
            .into_iter()
            .filter(|l| l.contains("nfs-hostchange") || l.contains("postlogin"))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: wrapper errors in the Dovecot log:\n{}",
            backend.name,
            errors.join("\n")
        );
    }
    let foreign = cluster.foreign_owned_files().unwrap();
    assert!(foreign.is_empty(), "not owned by {TEST_USER}: {foreign:?}");
}

/// The wrapper keeps its host record as a regular file in INDEX, which with
/// the shipped mail_location is the Maildir++ root, where `.name` is also how
/// folders are stored. Dovecot's LIST must not take the file for a folder.
#[test]
fn maildir_list_ignores_host_record_file() {
    if !common::prerequisites_or_skip("maildir_list_ignores_host_record_file") {
        return;
    }
    let cluster = Cluster::start("mdir", &[A], &Postlogin::Control).unwrap();
    cluster.provision_user("carol").unwrap();
    let (uid, gid) = common::system::user_ids(TEST_USER).unwrap();
    let maildir = cluster.maildir("carol");
    for name in [LASTHOST.to_string(), format!("{LASTHOST}.tmp.x1")] {
        let path = maildir.join(name);
        fs::write(&path, "backend-b 0123456789abcdef\n").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    }

    // No list index exists yet, so Dovecot builds it from the directory.
    let mut session = cluster.backend(A).imap_login("carol").unwrap();
    let list = session.list().unwrap();
    session.logout().unwrap();
    assert_eq!(
        list,
        ["INBOX"],
        "LIST with {LASTHOST} files in the Maildir++ root"
    );
}

/// The harness refuses shipped files that lost a text it substitutes.
#[test]
fn conf_files_carry_the_substituted_texts() {
    let snippet = common::conf::read_conf(common::conf::SNIPPET).unwrap();
    let wrapper_conf = common::conf::read_conf(common::conf::WRAPPER_CONF).unwrap();
    assert_eq!(
        snippet.matches(common::conf::POSTLOGIN_COMMAND).count(),
        2,
        "both imap-postlogin and pop3-postlogin run the wrapper"
    );
    assert_eq!(
        common::conf::mail_location(&snippet),
        common::conf::mail_location(&wrapper_conf),
        "mail_location must be the same in both shipped files"
    );
    let root = std::path::Path::new("/tmp/x");
    common::conf::render_snippet(root, "/usr/bin/env").unwrap();
    let rendered = common::conf::render_wrapper_conf(root, "backend-x").unwrap();
    assert!(rendered.contains("\nnfs_hostchange_hostname = backend-x\n"));
}

/// With the shipped Maildir++ layout, a user's folder named `lasthost` is
/// the directory `Maildir/.lasthost`, right where the host record goes. The
/// wrapper cannot keep a record then, but must still never let A serve a
/// stale folder list (or lock the user out).
#[test]
fn folder_in_place_of_host_record_still_drops() {
    if !common::prerequisites_or_skip("folder_in_place_of_host_record_still_drops") {
        return;
    }
    let cluster = Cluster::start("dir", &[A, B], &wrapper()).unwrap();
    cluster.provision_user("carol").unwrap();
    let folder = cluster.maildir("carol").join(LASTHOST);
    common::system::mkdir_for_test_user(&folder, 0o700).unwrap();
    for sub in ["cur", "new", "tmp"] {
        common::system::mkdir_for_test_user(&folder.join(sub), 0o700).unwrap();
    }

    eprintln!(
        "wrapped run, carol with a directory at {}:",
        folder.display()
    );
    let seen = stale_folder_list(&cluster, A, B, "carol", false, &mut narrate).unwrap();
    assert!(
        seen.return_list.iter().any(|m| m == FOLDER),
        "A serves a stale folder list: {:?}\nA's log:\n{}",
        seen.return_list,
        seen.return_log.join("\n")
    );
    assert_eq!(seen.return_status, Ok(1), "STATUS on A");
    assert!(
        folder.is_dir(),
        "the user's folder {} was replaced",
        folder.display()
    );
}
