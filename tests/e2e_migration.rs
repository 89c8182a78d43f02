//! Migration end to end on real Dovecot 2.3: three backends share one mail
//! store. OLD runs plain Dovecot with the list index on the store (the
//! shipped mail_location without LISTINDEX, no post-login service); A and B
//! run the wrapper with `nfs_hostchange_migration = yes`.
//!
//! Needs root, Dovecot (core, imapd, pop3d) and the user nfshc-test:
//! `sudo bash scripts/install-deps`. Without them the tests print a skip
//! notice, unless CI=true, where they fail.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{Backend, BackendKind};
use common::scenario::{stale_folder_list, wrapper_lines, FOLDER, LOG_WAIT};
use common::system::TEST_USER;
use common::{Cluster, Postlogin};

const OLD: &str = "backend-old";
const A: &str = "backend-a";
const B: &str = "backend-b";
const PREFIX: &str = "dovecot.list.index";

fn wrapped_with_migration() -> BackendKind {
    BackendKind::Current {
        postlogin: Postlogin::Wrapper(PathBuf::from(env!("CARGO_BIN_EXE_nfs-hostchange"))),
        migration: true,
    }
}

fn narrate(line: String) {
    eprintln!("  {line}");
}

/// `dovecot.list.index*` in `dir`: name -> size.
fn list_index_files(dir: &Path) -> BTreeMap<String, u64> {
    let Ok(rd) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| {
            let size = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect()
}

/// Logs in on `backend`, runs `body`, logs out, and waits until the session
/// has ended in the log (so the imap process has finished writing).
fn session<T>(
    backend: &Backend,
    user: &str,
    body: impl FnOnce(&mut common::imap::ImapClient) -> Result<T, String>,
) -> T {
    let mark = backend.log_mark();
    let mut client = backend.imap_login(user).unwrap();
    let out = body(&mut client).unwrap_or_else(|e| panic!("{}: {e}", backend.name));
    client.logout().unwrap();
    backend
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains(&format!("imap({user})")) && l.contains("Disconnected")
        })
        .unwrap();
    out
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

/// `Error:` lines in a backend's whole log.
fn error_lines(backend: &Backend) -> Vec<String> {
    backend
        .log_text()
        .unwrap()
        .lines()
        .filter(|l| l.contains("Error:"))
        .map(str::to_string)
        .collect()
}

/// Waits for A's Info line about a migration after `mark`, which must say
/// how many files and bytes (those OLD left on the store) and from where.
fn migration_line(
    a: &Backend,
    mark: u64,
    user: &str,
    maildir: &Path,
    moved: &BTreeMap<String, u64>,
) -> String {
    let line = a
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains("Info:")
                && l.contains(&format!("nfs-hostchange({user})"))
                && l.contains("migrated")
        })
        .unwrap();
    let bytes: u64 = moved.values().sum();
    let files = moved.len();
    let counts = format!(
        "({files} file{}, {bytes} bytes)",
        if files == 1 { "" } else { "s" }
    );
    assert!(line.contains(&counts), "{line:?} should say {counts}");
    assert!(
        line.contains(&maildir.display().to_string()),
        "{line:?} should name {}",
        maildir.display()
    );
    line
}

/// OLD leaves a list index on the store; A moves it into its LISTINDEX at
/// the next login and lists right; OLD writes it again, A replaces its own
/// with it; then A and B hand the user over as in the post-login scenario.
#[test]
fn old_backend_list_index_moves_into_listindex() {
    if !common::prerequisites_or_skip("old_backend_list_index_moves_into_listindex") {
        return;
    }
    let cluster = Cluster::start_mixed(
        "mig",
        &[
            (OLD, BackendKind::Old),
            (A, wrapped_with_migration()),
            (B, wrapped_with_migration()),
        ],
    )
    .unwrap();
    let (old, a, b) = (cluster.backend(OLD), cluster.backend(A), cluster.backend(B));
    let user = "carol";
    cluster.provision_user(user).unwrap();
    let maildir = cluster.maildir(user);

    // OLD: folders F1 and F2; its list index lands on the store.
    let list = session(old, user, |s| {
        s.create("F1")?;
        s.create("F2")?;
        s.list()
    });
    eprintln!("  {OLD}: CREATE F1, F2; LIST shows {list:?}");
    assert_eq!(sorted(list), ["F1", "F2", "INBOX"], "LIST on OLD");
    let on_store = list_index_files(&maildir);
    assert!(
        on_store.contains_key(&format!("{PREFIX}.log")),
        "OLD left no list index in {}: {on_store:?}",
        maildir.display()
    );
    assert!(
        a.list_index_files(user).is_empty(),
        "{A} has a list index already"
    );

    // A folder made behind Dovecot's back, which OLD's list index does not
    // know: A must answer from the moved list index (trusted, as
    // mailbox_list_index_very_dirty_syncs says), not rebuild one from the
    // directories, which would list it.
    let hidden = maildir.join(".Hidden");
    for dir in [
        hidden.clone(),
        hidden.join("cur"),
        hidden.join("new"),
        hidden.join("tmp"),
    ] {
        common::system::mkdir_for_test_user(&dir, 0o700).unwrap();
    }

    // A: the list index moves into A's LISTINDEX, and LIST is right.
    let mark = a.log_mark();
    let list = session(a, user, |s| s.list());
    eprintln!("  {A}: LIST shows {list:?}");
    assert_eq!(
        sorted(list),
        ["F1", "F2", "INBOX"],
        "LIST on A (listing Hidden means A rebuilt its list index instead of \
         using the moved one)"
    );
    fs::remove_dir_all(&hidden).unwrap();
    let line = migration_line(a, mark, user, &maildir, &on_store);
    eprintln!("  {A} log: {line}");
    assert!(
        list_index_files(&maildir).is_empty(),
        "the list index is still on the store: {:?}",
        list_index_files(&maildir)
    );
    let local = a.list_index_files(user);
    for name in on_store.keys() {
        assert!(
            local.contains(name),
            "{name} did not move into {A}'s LISTINDEX: {local:?}"
        );
    }

    // OLD again: F3. Its list index is back on the store.
    let list = session(old, user, |s| {
        s.create("F3")?;
        s.list()
    });
    eprintln!("  {OLD}: CREATE F3; LIST shows {list:?}");
    assert_eq!(sorted(list), ["F1", "F2", "F3", "INBOX"], "LIST on OLD");
    let on_store = list_index_files(&maildir);
    assert!(
        on_store.contains_key(&format!("{PREFIX}.log")),
        "OLD wrote no list index: {on_store:?}"
    );

    // A: its own list index is replaced by OLD's, so F3 shows (with
    // mailbox_list_index_very_dirty_syncs, a kept one would not list it).
    let mark = a.log_mark();
    let list = session(a, user, |s| s.list());
    eprintln!("  {A}: LIST shows {list:?}");
    assert_eq!(sorted(list), ["F1", "F2", "F3", "INBOX"], "LIST on A");
    let line = migration_line(a, mark, user, &maildir, &on_store);
    eprintln!("  {A} log: {line}");
    assert!(
        line.contains("replacing the local one"),
        "{line:?} should mention the replacement"
    );
    assert!(list_index_files(&maildir).is_empty());

    // A -> B -> A, as in the post-login scenario.
    let mark = a.log_mark();
    let seen = stale_folder_list(&cluster, A, B, user, false, &mut narrate).unwrap();
    assert_eq!(
        sorted(seen.first_list.clone()),
        ["F1", "F2", "F3", "INBOX"],
        "steady-state LIST on A"
    );
    assert!(
        seen.other_list.iter().any(|m| m == FOLDER),
        "B lists its new folder: {:?}",
        seen.other_list
    );
    assert!(
        seen.return_list.iter().any(|m| m == FOLDER),
        "A still serves a stale folder list: {:?}\nA's log:\n{}",
        seen.return_list,
        seen.return_log.join("\n")
    );
    assert_eq!(seen.return_status, Ok(1), "STATUS {FOLDER} on A");
    let line = a
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains("Info:") && l.contains("nfs-hostchange") && l.contains(B)
        })
        .unwrap();
    eprintln!("  {A} log: {line}");
    assert!(
        list_index_files(&maildir).is_empty(),
        "a wrapped backend wrote a list index on the store: {:?}",
        list_index_files(&maildir)
    );

    // Steady state on A: nothing logged by the wrapper.
    let mark = a.log_mark();
    let list = session(a, user, |s| s.list());
    assert!(list.iter().any(|m| m == FOLDER), "{list:?}");
    std::thread::sleep(Duration::from_millis(200));
    let lines = a.log_since(mark).unwrap();
    assert!(
        wrapper_lines(&lines).is_empty(),
        "steady-state login on A logged:\n{}",
        lines.join("\n")
    );

    // No errors from the wrapper, nor from Dovecot reading the moved
    // list index; nothing belongs to root.
    for backend in [old, a, b] {
        let errors = error_lines(backend);
        assert!(
            errors.is_empty(),
            "{}: errors in the Dovecot log:\n{}",
            backend.name,
            errors.join("\n")
        );
    }
    let foreign = cluster.foreign_owned_files().unwrap();
    assert!(foreign.is_empty(), "not owned by {TEST_USER}: {foreign:?}");
}

/// A failed migration on B keeps the list index on the store (as the issue
/// asks, so that a later login can retry). But B's Dovecot then serves the
/// user from a list index of its own, and the kept copy on the store falls
/// behind: here it lacks the folder the user creates on B. When the user
/// then logs in on A, A must not take that copy for the freshest list index
/// there is: LIST on A must show the folder.
#[test]
fn failed_migration_on_b_does_not_make_a_stale() {
    if !common::prerequisites_or_skip("failed_migration_on_b_does_not_make_a_stale") {
        return;
    }
    let cluster = Cluster::start_mixed(
        "migfail",
        &[
            (OLD, BackendKind::Old),
            (A, wrapped_with_migration()),
            (B, wrapped_with_migration()),
        ],
    )
    .unwrap();
    let (old, a, b) = (cluster.backend(OLD), cluster.backend(A), cluster.backend(B));
    let user = "carol";
    cluster.provision_user(user).unwrap();
    let maildir = cluster.maildir(user);

    // OLD: F1; its list index is on the store.
    let list = session(old, user, |s| {
        s.create("F1")?;
        s.list()
    });
    eprintln!("  {OLD}: CREATE F1; LIST shows {list:?}");
    let log_path = maildir.join(format!("{PREFIX}.log"));
    assert!(log_path.is_file(), "OLD left no {}", log_path.display());

    // B: the copy fails (the log cannot be read: a stand-in for EIO or a
    // full tmpfs). The user creates Foo on B.
    common::system::set_mode(&log_path, 0o000).unwrap();
    let mark = b.log_mark();
    let list = session(b, user, |s| {
        s.create(FOLDER)?;
        s.list()
    });
    if log_path.exists() {
        common::system::set_mode(&log_path, 0o600).unwrap();
    }
    eprintln!("  {B}: (migration fails) CREATE {FOLDER}; LIST shows {list:?}");
    assert!(list.iter().any(|m| m == FOLDER), "LIST on B: {list:?}");
    let line = b
        .wait_for_log(mark, LOG_WAIT, |l| {
            l.contains("Error:") && l.contains("not migrated")
        })
        .unwrap();
    eprintln!("  {B} log: {line}");
    eprintln!(
        "  store after B's failed migration: {:?}",
        list_index_files(&maildir)
    );

    // Every backend must now list Foo: OLD (a copy kept on the store is
    // OLD's own list index, which it trusts just as A would), then A.
    let mut stale = Vec::new();
    for backend in [old, a] {
        let mark = backend.log_mark();
        let list = session(backend, user, |s| s.list());
        eprintln!("  {}: LIST shows {list:?}", backend.name);
        if !list.iter().any(|m| m == FOLDER) {
            std::thread::sleep(Duration::from_millis(200));
            stale.push(format!(
                "{} serves a stale folder list {list:?}; its log:\n{}",
                backend.name,
                backend.log_since(mark).unwrap().join("\n")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the list index B's failed migration left on the store lacks {FOLDER}, \
         created on B since, and was trusted:\n{}",
        stale.join("\n")
    );
}

/// New users (no Maildir yet at their first login) with migration on: the
/// post-login scenario works as without migration, and the wrapper logs no
/// error, since there is nothing to migrate.
#[test]
fn new_users_with_migration_log_no_errors() {
    if !common::prerequisites_or_skip("new_users_with_migration_log_no_errors") {
        return;
    }
    let cluster = Cluster::start_mixed(
        "mignew",
        &[(A, wrapped_with_migration()), (B, wrapped_with_migration())],
    )
    .unwrap();
    for (user, append_first) in [("erin", true), ("dave", false)] {
        eprintln!("migration on, {user} (new user):");
        let seen = stale_folder_list(&cluster, A, B, user, append_first, &mut narrate).unwrap();
        assert!(
            seen.return_list.iter().any(|m| m == FOLDER),
            "{user}: A serves a stale folder list: {:?}",
            seen.return_list
        );
        assert_eq!(seen.return_status, Ok(1), "{user}: STATUS on A");
    }
    for backend in cluster.backends() {
        let errors: Vec<String> = error_lines(backend)
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

/// The harness derives the OLD backend's snippet and the migration setting
/// from the shipped files, and fails clearly when they drift.
#[test]
fn migration_conf_rendering() {
    use common::conf;
    let old = conf::render_old_snippet().unwrap();
    assert_eq!(conf::mail_location(&old), Some("maildir:~/Maildir"));
    assert!(!old.contains("LISTINDEX"));
    assert!(!old.contains("postlogin"));
    let root = Path::new("/tmp/x");
    let on = conf::render_wrapper_conf_with(root, "backend-x", true).unwrap();
    assert!(on.contains(&format!("\n{}\n", conf::MIGRATION_ON_LINE)));
    assert!(!on.contains(conf::MIGRATION_OFF_LINE));
    let off = conf::render_wrapper_conf_with(root, "backend-x", false).unwrap();
    assert!(off.contains(&format!("\n{}\n", conf::MIGRATION_OFF_LINE)));
    let err = conf::enable_migration("mail_location = x\n").unwrap_err();
    assert!(err.contains(conf::MIGRATION_OFF_LINE), "{err}");
}
