//! Hardening tests of `nfs-hostchange postlogin` (issue 5): hostile input,
//! environment faults and privileges. What `tests/postlogin.rs` covers
//! already (`../../etc`, `a/b`, `.`, `..`, `:` in USER, a missing INDEX
//! with its parent, corrupt records, a held lock, exec failures, root
//! without UID/GID...) is not repeated here.
//!
//! Every case ends the same way: the login goes on (the command runs), no
//! stale list index survives (a list index planted in the user's LISTINDEX
//! is gone, or the user's LISTINDEX could not even be named), a log line
//! says what happened, and nothing outside the LISTINDEX root is touched.
//! Each test says next to its assertions which wrong behaviour each one
//! catches.
//!
//! Faults the machine cannot produce by itself are simulated: tmpfs and
//! bind mounts (root only; always inside the test's own temporary tree and
//! unmounted by a guard, even on panic), chmod 000, a directory replaced by
//! a file, a symlink or a FIFO. Run as root (as in CI), the wrapper is given
//! UID/GID 65534 and acts as that user, so permissions apply to it.

mod support;

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rstest::rstest;

use nfs_hostchange::record::Stamp;
use support::{
    config_text, hash_dir, mail_location, running_as_root, stamp_of, Backend, Harness, Run,
    Snapshot, USER,
};

/// The names Dovecot gives a list index and its transaction logs.
const LIST_FILES: [&str; 3] = [
    "dovecot.list.index",
    "dovecot.list.index.log",
    "dovecot.list.index.log.2",
];

// ---------------------------------------------------------------------------
// Helpers.

/// `root/<%2.256Nu>/<user>`: a user's LISTINDEX below a LISTINDEX root.
fn user_dir(root: &Path, user: &[u8]) -> PathBuf {
    root.join(hash_dir(user)).join(OsStr::from_bytes(user))
}

/// Plants a (stale) list index in `dir`, owned by the user.
fn plant_list_index(h: &Harness, dir: &Path) {
    for name in LIST_FILES {
        h.plant(&dir.join(name), b"stale list index");
    }
}

/// The list index files still in `dir`.
fn list_files_left(dir: &Path) -> Vec<&'static str> {
    LIST_FILES
        .into_iter()
        .filter(|name| fs::symlink_metadata(dir.join(name)).is_ok())
        .collect()
}

/// Asserts that the list index in `dir` is gone.
fn assert_dropped(dir: &Path, run: &Run) {
    assert_eq!(
        list_files_left(dir),
        Vec::<&str>::new(),
        "a list index that may be stale survived in {}; stderr:\n{}",
        dir.display(),
        run.stderr
    );
}

/// The local record's bytes.
fn record_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join(".lasthost");
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Asserts that exactly one line at `level` was logged and that it holds
/// every needle; returns it.
fn one_line<'r>(run: &'r Run, level: &str, needles: &[&str]) -> &'r str {
    // Shown with --nocapture: what an operator would read.
    eprintln!("{}", run.stderr.trim_end());
    let lines = run.lines(level);
    assert_eq!(
        lines.len(),
        1,
        "expected one {level} line; stderr:\n{}",
        run.stderr
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "the {level} line lacks {needle:?}: {}",
            lines[0]
        );
    }
    lines[0]
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn owner_of(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid())
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A symlink owned by the user.
fn symlink_owned(h: &Harness, target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    h.chown(link);
}

/// False (and a note) when the test needs root and does not have it; in CI
/// (which runs as root) that is a failure, not a skip.
fn have_root(test: &str) -> bool {
    if running_as_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (mounts, chown), and CI runs as root");
    }
    eprintln!("skipped {test}: needs root");
    false
}

/// The common start of most tests: a user with an INDEX, a login on A
/// (record and stamp), then a list index in A's LISTINDEX. In this steady
/// state a working check keeps the list index: only a fault may drop it.
fn steady_state(h: &Harness) -> PathBuf {
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    let dir = h.listindex(Backend::A, USER);
    plant_list_index(h, &dir);
    dir
}

/// Like [`steady_state`], but B served the user after A: A's list index is
/// really stale now.
fn stale_state(h: &Harness) -> PathBuf {
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    let dir = h.listindex(Backend::A, USER);
    plant_list_index(h, &dir);
    dir
}

/// A mount made for one test inside its temporary tree; unmounted when
/// dropped, also when the test panics. Declare it after the [`Harness`] so
/// that it is dropped first.
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn call(
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: &str,
    ) -> std::io::Result<()> {
        let source = CString::new(source.as_os_str().as_bytes()).expect("no NUL");
        let target = CString::new(target.as_os_str().as_bytes()).expect("no NUL");
        let fstype = fstype.map(|t| CString::new(t).expect("no NUL"));
        let data = CString::new(data).expect("no NUL");
        // SAFETY: every pointer is a valid NUL-terminated string (or null
        // for the file system type) that lives for the whole call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                flags,
                data.as_ptr().cast(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// A tmpfs on `path` with `options` (`size=...,mode=...,uid=...`).
    fn tmpfs(path: &Path, options: &str) -> Mount {
        Self::call(
            Path::new("tmpfs"),
            path,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            options,
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", path.display()));
        Mount {
            path: path.to_path_buf(),
        }
    }

    /// `path` bind-mounted onto itself, read-only.
    fn read_only_bind(path: &Path) -> Mount {
        Self::call(path, path, None, libc::MS_BIND, "")
            .unwrap_or_else(|e| panic!("bind mount {}: {e}", path.display()));
        let mount = Mount {
            path: path.to_path_buf(),
        };
        Self::call(
            Path::new("none"),
            path,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            "",
        )
        .unwrap_or_else(|e| panic!("remount {} read-only: {e}", path.display()));
        mount
    }

    /// Remounts a tmpfs read-only.
    fn make_read_only(&self, options: &str) {
        Self::call(
            Path::new("tmpfs"),
            &self.path,
            Some("tmpfs"),
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            options,
        )
        .unwrap_or_else(|e| panic!("remount {} read-only: {e}", self.path.display()));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: as above; a lazy unmount cannot be refused as busy.
            let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            eprintln!(
                "warning: umount {}: {err}; lazy unmount {}",
                self.path.display(),
                if rc == 0 { "done" } else { "failed" }
            );
        }
    }
}

/// Gives a directory its mode back when dropped (after a chmod 000), so
/// that the temporary tree can be removed even when a test panics.
struct RestoreMode(PathBuf, u32);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(self.1));
    }
}

// ---------------------------------------------------------------------------
// USER.

/// USER unset, or empty (Dovecot never sends that, a checkpassword chain
/// might): nobody to check; the command runs, nothing is touched, and the
/// log says why. The settings file asks for `nfs_hostchange_log = stderr`,
/// so that is where the line must go.
#[rstest]
#[case::unset(None)]
#[case::empty(Some(""))]
fn without_a_user_name_nothing_is_touched_and_the_log_says_why(#[case] user: Option<&str>) {
    let h = Harness::new();
    steady_state(&h);
    let before = h.snapshot();
    let mut login = h.login(Backend::A).env_remove("USER");
    if let Some(user) = user {
        login = login.user(user);
    }
    let run = login.run();
    // Catches a lock-out (no exec) and output on stdout.
    run.assert_ok();
    // Catches guessing a user (an empty name, HOME's last part...).
    before.assert_same(&h.snapshot(), "no USER");
    // Catches a silent skip, and a line sent elsewhere than the settings
    // file says (it goes to syslog when USER is checked before the
    // settings are read).
    one_line(&run, "Error", &["USER"]);
}

/// `%d/%n` layouts: a name or domain part that is `.`, `..`, empty, or
/// holds a `/` must be refused like the whole-name cases in
/// tests/postlogin.rs, wherever it sits in the template.
#[rstest]
#[case::dot_dot_name("..@example.com")]
#[case::dot_dot_domain("user@..")]
#[case::dot_name(".@example.com")]
#[case::empty_name("@example.com")]
#[case::empty_domain("user@")]
#[case::slash_in_domain("user@example.com/..")]
#[case::dot_dot_both("..@..")]
fn a_dot_dot_in_the_name_or_domain_part_touches_nothing(#[case] user: &str) {
    let h = Harness::new();
    h.create_index();
    let shm = h.shm(Backend::A);
    let location = format!(
        "maildir:~/Maildir:LISTINDEX={}/%d/%n/dovecot.list.index",
        shm.display()
    );
    let config = h.write_config("domain.conf", &config_text("backend-a", Some(&location)));
    // Where a wrapper that followed the parts would land: shm/example.com/..
    // is shm, shm/../user is outside the root, shm//user is shm/user.
    h.plant(&shm.join("dovecot.list.index"), b"root");
    h.plant(
        &shm.join("example.com").join("dovecot.list.index"),
        b"domain",
    );
    h.plant(&shm.join("user").join("dovecot.list.index"), b"user");
    h.plant(
        &h.path("user").join("dovecot.list.index"),
        b"outside the root",
    );
    let before = h.snapshot();

    let run = h.login_with(&config).user(user).run();
    // Catches a refused user locked out.
    run.assert_ok();
    // Catches following a part anywhere: nothing created, changed or
    // removed, inside the LISTINDEX root or outside it, or on NFS.
    before.assert_same(&h.snapshot(), user);
    // Catches a silent refusal.
    one_line(&run, "Error", &["refused"]);
}

/// NAME_MAX is 255: a user name of 256 bytes or more cannot be a directory
/// name, so Dovecot cannot have a list index for the user there either.
/// The wrapper must say so in one line and run the command.
#[rstest]
#[case::one_byte_over(256)]
#[case::three_hundred(300)]
#[case::four_kib(4000)]
fn a_user_name_longer_than_name_max_is_one_error_and_the_command_runs(#[case] len: usize) {
    let h = Harness::new();
    h.create_index();
    let user = "u".repeat(len);
    // The hash directory is inside the root and may be created; make it
    // exist so that the snapshot below compares everything else.
    h.mkdir_owned(&h.shm(Backend::A).join(hash_dir(user.as_bytes())));
    let before = h.snapshot();
    let run = h.login(Backend::A).user(&user).run();
    // Catches a crash or a lock-out on ENAMETOOLONG.
    run.assert_ok();
    // Catches a shortened (truncated or hashed) name that would make two
    // users share one directory, and writes on NFS without a record.
    assert_only_stamp_renewed(&h, &before, "long user name");
    let line = one_line(&run, "Error", &["File name too long"]);
    // Catches a log line that grows with the name without bound in its
    // user prefix (the name is cut there).
    let prefix = line.split(": Error: ").next().expect("prefix");
    assert!(prefix.len() < 150, "user prefix of {} bytes", prefix.len());
}

/// The other side of NAME_MAX: a 255-byte name works.
#[test]
fn a_user_name_of_exactly_name_max_bytes_works() {
    let h = Harness::new();
    h.create_index();
    let user = "u".repeat(255);
    let run = h.login(Backend::A).user(&user).run();
    // Catches an off-by-one limit of the wrapper's own.
    run.assert_quiet();
    let dir = user_dir(&h.shm(Backend::A), user.as_bytes());
    let record = Stamp::decode(&record_bytes(&dir)).expect("valid record");
    assert_eq!(record, Some(h.stamp()));
}

/// A name that is not UTF-8 is a valid file name: it is used byte for byte
/// (a lossy conversion would make two users share U+FFFD names), and the
/// log shows it escaped.
#[test]
fn a_user_name_that_is_not_utf8_is_used_byte_for_byte_and_logged_escaped() {
    let h = Harness::new();
    h.create_index();
    let user: &[u8] = b"b\xffo\xc3b";
    let login = |backend| h.login(backend).user(OsStr::from_bytes(user));
    login(Backend::A).run().assert_quiet();
    let dir = user_dir(&h.shm(Backend::A), user);
    // Catches a lossily converted name (the directory is elsewhere).
    let record = Stamp::decode(&record_bytes(&dir)).expect("valid record");
    assert_eq!(record, Some(h.stamp()));
    login(Backend::B).run().assert_quiet();
    plant_list_index(&h, &dir);

    let run = login(Backend::A).run();
    run.assert_quiet();
    assert_dropped(&dir, &run);
    // Catches raw invalid bytes in the log (the capture turns them into
    // U+FFFD) and a missing line.
    assert!(!run.stderr.contains('\u{fffd}'), "{:?}", run.stderr);
    one_line(&run, "Info", &["nfs-hostchange(b\\xffo\\xc3b)", "dropped"]);
}

/// A tab, newline or carriage return in the name is legal in a file name,
/// but must not split or forge a log line.
#[rstest]
#[case::tab("b\tob", "b\\x09ob")]
#[case::newline("b\nob", "b\\x0aob")]
#[case::carriage_return("b\rob", "b\\x0dob")]
#[case::forged_line("b\nnfs-hostchange(root) Error forged", "b\\x0anfs-hostchange(root)")]
fn control_characters_in_the_user_name_stay_on_one_escaped_log_line(
    #[case] user: &str,
    #[case] escaped: &str,
) {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).user(user).run().assert_quiet();
    h.login(Backend::B).user(user).run().assert_quiet();
    let dir = user_dir(&h.shm(Backend::A), user.as_bytes());
    plant_list_index(&h, &dir);

    let run = h.login(Backend::A).user(user).run();
    run.assert_ok();
    assert_dropped(&dir, &run);
    // Catches a raw control character anywhere in the log: one line, one
    // final newline, nothing else below U+0020.
    assert!(run.stderr.ends_with('\n'), "{:?}", run.stderr);
    let body = &run.stderr[..run.stderr.len() - 1];
    assert!(
        !body.chars().any(char::is_control),
        "raw control character in the log: {:?}",
        run.stderr
    );
    // Catches escaping the prefix but not the path in the text (or the
    // other way round).
    assert!(
        run.stderr.starts_with(&format!("nfs-hostchange({escaped}")),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("/{escaped}")),
        "{:?}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// HOME.

/// A `%` in HOME is part of a directory name, not a variable.
#[test]
fn a_home_with_a_percent_sign_is_used_literally() {
    let h = Harness::new();
    let home = h.path("nfs").join("100%u");
    h.mkdir_owned(&home.join("Maildir"));
    let run = h.login(Backend::A).env("HOME", &home).run();
    // Catches re-expansion of HOME (%u -> bob: INDEX nfs/100bob/Maildir
    // does not exist, which logs a warning).
    run.assert_quiet();
    let stamp = home.join("Maildir").join(".lasthost");
    let record = Stamp::decode(&record_bytes(&h.listindex(Backend::A, USER))).expect("valid");
    assert_eq!(record, Some(stamp_of(&stamp)));
    assert!(!h.path("nfs").join("100bob").exists());
}

/// HOME that gives no usable INDEX (relative, with `..`, or missing when
/// mail_location says `~/`): INDEX cannot be checked, but the user's
/// LISTINDEX does not depend on HOME and is known. The design's first
/// invariant ("any error errs toward deleting the local list index") asks
/// for the list index to be dropped; with HOME `/nfs/../nfs/bob` Dovecot
/// itself goes on and would otherwise serve the stale list index.
#[rstest]
#[case::relative(Some("nfs/bob"), "not an absolute path")]
#[case::dot_dot(Some("DOTDOT"), ". or .. part")]
#[case::missing(None, "HOME")]
fn a_home_that_gives_no_usable_index_still_drops_the_list_index(
    #[case] home: Option<&str>,
    #[case] needle: &str,
) {
    let h = Harness::new();
    let dir = stale_state(&h);
    let stamp = h.stamp();
    let nfs_before = fs::read_dir(h.home()).expect("home").count();
    let dot_dot = format!("{}/nfs/../nfs/{USER}", h.root.display());
    let login = match home {
        Some("DOTDOT") => h.login(Backend::A).env("HOME", &dot_dot),
        Some(home) => h.login(Backend::A).env("HOME", home),
        None => h.login(Backend::A).env_remove("HOME"),
    };
    let run = login.run();
    run.assert_ok();
    // Catches the skip that keeps a stale list index (B served the user
    // since A's record was written).
    assert_dropped(&dir, &run);
    // Catches writing on NFS through a path that was refused or unknown.
    assert_eq!(h.stamp(), stamp, "INDEX/.lasthost changed");
    assert_eq!(fs::read_dir(h.home()).expect("home").count(), nfs_before);
    // Catches a silent skip or a line that does not say what is wrong.
    one_line(&run, "Error", &[needle]);
}

// ---------------------------------------------------------------------------
// MAIL from the userdb.

/// MAIL replaces mail_location for this user, as in Dovecot. Garbage there
/// is one error naming where it came from; the user's LISTINDEX (per MAIL)
/// cannot be named, and the one the settings file would give is not the
/// user's, so nothing is touched.
#[rstest]
#[case::word("garbage")]
#[case::format_only("maildir:")]
#[case::colons(":::")]
#[case::lone_percent("%")]
#[case::control_bytes("maildir:\x01\x7f:LISTINDEX")]
#[case::listindex_without_variable("maildir:/srv/m:LISTINDEX=/x/dovecot.list.index")]
#[case::listindex_file_name_only("maildir:/srv/m:LISTINDEX=dovecot.list.index")]
fn garbage_mail_from_the_userdb_is_one_error_and_touches_nothing(#[case] mail: &str) {
    let h = Harness::new();
    steady_state(&h);
    let before = h.snapshot();
    let run = h.login(Backend::A).env("MAIL", mail).run();
    // Catches a lock-out.
    run.assert_ok();
    // Catches falling back to the settings file's mail_location (whose
    // LISTINDEX is not where Dovecot keeps this user's list index).
    before.assert_same(&h.snapshot(), mail);
    // Catches an error that blames the settings file.
    let line = one_line(&run, "Error", &["MAIL from the userdb"]);
    assert!(!line.contains(".conf"), "{line}");
}

/// MAIL without LISTINDEX: Dovecot keeps this user's list index on NFS, so
/// there is nothing to manage; one line says so, nothing is touched.
#[test]
fn mail_without_listindex_from_the_userdb_touches_nothing() {
    let h = Harness::new();
    steady_state(&h);
    let before = h.snapshot();
    let run = h.login(Backend::A).env("MAIL", "maildir:~/Maildir").run();
    run.assert_ok();
    // Catches using the settings file's LISTINDEX for this user.
    before.assert_same(&h.snapshot(), "MAIL without LISTINDEX");
    // Catches a silent skip (any level: this is not the operator's error
    // only).
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{}", run.stderr);
    assert!(lines[0].contains("MAIL from the userdb"), "{}", lines[0]);
    assert!(lines[0].contains("LISTINDEX"), "{}", lines[0]);
}

/// MAIL with its own LISTINDEX root: that root is the user's, and the
/// settings file's is not.
#[test]
fn mail_from_the_userdb_with_its_own_listindex_root_is_used() {
    let h = Harness::new();
    let config_dir = steady_state(&h);
    let elsewhere = h.path("elsewhere");
    h.mkdir_owned(&elsewhere);
    let dir = user_dir(&elsewhere, USER.as_bytes());
    plant_list_index(&h, &dir);
    let config_record = record_bytes(&config_dir);

    let run = h
        .login(Backend::A)
        .env("MAIL", mail_location(&elsewhere))
        .run();
    run.assert_quiet();
    // Catches ignoring MAIL: the list index under MAIL's root has no
    // record there, so it must go, and a record must be stored there.
    assert_dropped(&dir, &run);
    let record = Stamp::decode(&record_bytes(&dir)).expect("valid record");
    assert_eq!(record, Some(h.stamp()));
    // Catches touching the settings file's LISTINDEX for this user.
    assert_eq!(list_files_left(&config_dir), LIST_FILES.to_vec());
    assert_eq!(record_bytes(&config_dir), config_record);
}

// ---------------------------------------------------------------------------
// The settings file.

/// An unknown key is a warning naming file and line; the check still runs.
#[test]
fn an_unknown_setting_is_one_warning_with_file_and_line_and_the_check_runs() {
    let h = Harness::new();
    let dir = stale_state(&h);
    let mut text = config_text("backend-a", Some(&mail_location(&h.shm(Backend::A))));
    text.push_str("mail_locaton = maildir:/somewhere/else\n");
    let config = h.write_config("typo.conf", &text);
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches a missing warning, one without file and line, or one that
    // names the wrong line.
    let want = format!(
        "{} line 5: unknown setting \"mail_locaton\"",
        config.display()
    );
    one_line(&run, "Warning", &[&want]);
    assert!(run.lines("Error").is_empty(), "stderr:\n{}", run.stderr);
    // Catches an unknown key that stops the check.
    assert_dropped(&dir, &run);
    assert_eq!(
        Stamp::decode(&record_bytes(&dir)).expect("valid"),
        Some(h.stamp())
    );
}

/// A key set twice is an error naming both lines; which value wins would be
/// a guess, so the check does not run.
#[test]
fn a_duplicated_setting_is_one_error_naming_both_lines() {
    let h = Harness::new();
    steady_state(&h);
    let mut text = config_text("backend-a", Some(&mail_location(&h.shm(Backend::A))));
    text.push_str(&format!(
        "mail_location = {}\n",
        mail_location(&h.shm(Backend::B))
    ));
    let config = h.write_config("twice.conf", &text);
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches "the last one wins" (B's tree would get a record).
    before.assert_same(&h.snapshot(), "duplicated key");
    let want = format!("{} line 5", config.display());
    one_line(&run, "Error", &[&want, "first on line 4"]);
}

/// A settings file named explicitly that is missing, or that the wrapper
/// cannot read (chmod 000; as root the wrapper itself is run as the user,
/// since root reads anything): one line naming the file, the command runs.
/// Nothing said where the log should go, and syslog may not exist (it does
/// not on this test machine, nor in many containers); stderr is Dovecot's
/// log in both deployment shapes, so that is where the line must be.
#[rstest]
#[case::missing(false)]
#[case::unreadable(true)]
fn a_settings_file_that_cannot_be_read_is_named_and_the_command_runs(#[case] exists: bool) {
    let h = Harness::new();
    steady_state(&h);
    let config = if exists {
        let path = h.write_config(
            "locked.conf",
            &config_text("backend-a", Some(&mail_location(&h.shm(Backend::A)))),
        );
        chmod(&path, 0o000);
        path
    } else {
        h.path("missing.conf")
    };
    let mut login = h.login_with(&config);
    if exists && running_as_root() {
        // The probe, run as the user too, writes its report in out/.
        chmod(&h.path("out"), 0o1777);
        login = login.run_as(h.uid, h.gid);
    }
    let before = h.snapshot();
    let run = login.run();
    // Catches a lock-out.
    run.assert_ok();
    before.assert_same(&h.snapshot(), "unreadable settings");
    // Catches an error nobody sees: exactly one line, on stderr, naming
    // the file.
    let name = config.display().to_string();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line naming {name} on stderr; stderr: {:?}",
        run.stderr
    );
    assert!(lines[0].contains(&name), "{}", lines[0]);
    let reason = if exists {
        "Permission denied"
    } else {
        "No such file"
    };
    assert!(lines[0].contains(reason), "{}", lines[0]);
}

/// A NUL byte in the settings file (a damaged file; Dovecot's own parser
/// stops the value there). Here it ends up in the list index file name,
/// which then matches no file: the stale list index is silently kept and
/// a record is stored as if it had been dropped.
#[test]
fn a_nul_byte_in_the_listindex_file_name_is_refused() {
    let h = Harness::new();
    let dir = stale_state(&h);
    let location = format!(
        "maildir:~/Maildir:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index\0",
        h.shm(Backend::A).display()
    );
    let config = h.write_config("nul.conf", &config_text("backend-a", Some(&location)));
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches a check that "drops" with a prefix no file name can start
    // with, or a configuration error that is not reported.
    let dropped = list_files_left(&dir).is_empty();
    let errors = run.lines("Error");
    assert!(
        dropped
            || (errors.len() == 1 && errors[0].contains(&format!("{} line 4", config.display()))),
        "the stale list index survived without an error naming the line; stderr:\n{}",
        run.stderr
    );
}

/// A template the expander cannot read: one error naming the settings
/// file, the line, and what is wrong.
#[rstest]
#[case::unknown_long_variable(
    "maildir:/srv/%{nope}/Maildir:LISTINDEX=SHM/%2.256Nu/%u/dovecot.list.index",
    "unknown variable %{nope}"
)]
#[case::unknown_letter_after_modifier(
    "maildir:~/Maildir:LISTINDEX=SHM/%LZu/%u/dovecot.list.index",
    "%Z"
)]
#[case::too_many_modifiers(
    "maildir:~/Maildir:LISTINDEX=SHM/%LLLLLLLLLLLu/dovecot.list.index",
    "too many modifiers"
)]
#[case::trailing_percent(
    "maildir:/srv/mail/%u%:LISTINDEX=SHM/%2.256Nu/%u/dovecot.list.index",
    "'%' at end"
)]
#[case::unterminated_brace(
    "maildir:~/Maildir:LISTINDEX=SHM/%{user/dovecot.list.index",
    "unterminated"
)]
#[case::number_too_large(
    "maildir:~/Maildir:LISTINDEX=SHM/%99999999999u/dovecot.list.index",
    "number too large"
)]
fn a_bad_template_is_one_error_naming_file_and_line(#[case] location: &str, #[case] needle: &str) {
    let h = Harness::new();
    steady_state(&h);
    let location = location.replace("SHM", &h.shm(Backend::A).display().to_string());
    let config = h.write_config("template.conf", &config_text("backend-a", Some(&location)));
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches going on with a half-expanded path.
    before.assert_same(&h.snapshot(), needle);
    // Catches an error without file and line, or that does not say what.
    let want = format!("{} line 4", config.display());
    one_line(&run, "Error", &[&want, "mail_location", needle]);
}

/// A width no file name can have (`%01000000000u`, a typo for `%01u`?):
/// the expander pads to it before any length check, a 1 GB allocation. Run
/// with a 512 MiB address-space limit (as a small container or a
/// `service { vsz_limit }` may impose), the allocation fails, which aborts
/// the wrapper before exec: every login fails. It must be one error naming
/// the line instead.
#[test]
fn a_huge_width_in_a_template_is_one_error_not_a_lock_out() {
    let Some(prlimit) = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    };
    let h = Harness::new();
    steady_state(&h);
    let location = format!(
        "maildir:~/Maildir:LISTINDEX={}/%01000000000u/dovecot.list.index",
        h.shm(Backend::A).display()
    );
    let config = h.write_config("wide.conf", &config_text("backend-a", Some(&location)));
    let before = h.snapshot();
    let run = h
        .login_with(&config)
        .under(&[
            prlimit.as_os_str(),
            OsStr::new("--as=536870912"),
            OsStr::new("--"),
        ])
        .run();
    // Catches the abort (status: signal 6, no exec).
    run.assert_ok();
    before.assert_same(&h.snapshot(), "huge width");
    let want = format!("{} line 4", config.display());
    one_line(&run, "Error", &[&want]);
}

// ---------------------------------------------------------------------------
// Environment faults: INDEX on NFS.

/// INDEX unreadable (chmod 000): whether the user moved is unknown, so the
/// list index must go, even though the record would have matched.
#[test]
fn an_unreadable_index_drops_the_list_index() {
    let h = Harness::new();
    let dir = steady_state(&h);
    let stamp = h.stamp();
    chmod(&h.index(), 0o000);
    let _restore = RestoreMode(h.index(), 0o755);
    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches trusting the cache when INDEX/.lasthost cannot be read (the
    // record matches what was there).
    assert_dropped(&dir, &run);
    // Catches keeping a record that was not checked.
    assert_eq!(record_bytes(&dir), b"");
    let path = h.stamp_path().display().to_string();
    one_line(&run, "Error", &[&path, "Permission denied"]);
    drop(_restore);
    assert_eq!(h.stamp(), stamp, "INDEX/.lasthost changed");
}

/// NFS read-only (a read-only bind mount of the NFS tree): the list index
/// goes, INDEX/.lasthost cannot be rewritten, so no record is stored.
#[test]
fn a_read_only_nfs_drops_the_list_index_and_stores_no_record() {
    if !have_root("a_read_only_nfs_drops_the_list_index_and_stores_no_record") {
        return;
    }
    let h = Harness::new();
    let dir = stale_state(&h);
    let stamp = h.stamp();
    let nfs = Mount::read_only_bind(&h.path("nfs"));
    let run = h.login(Backend::A).run();
    drop(nfs);
    run.assert_ok();
    // Catches keeping a stale list index because the stamp cannot be
    // written.
    assert_dropped(&dir, &run);
    // Catches a record stored for a stamp that was not written (the next
    // login would then trust B's stamp).
    assert_eq!(record_bytes(&dir), b"");
    assert_eq!(h.stamp(), stamp);
    assert_eq!(
        support::names_in(&h.index()),
        [".lasthost"],
        "temporary file left"
    );
    one_line(
        &run,
        "Error",
        &["Read-only file system", "no record stored"],
    );
}

/// NFS not mounted (or a new user whose home Dovecot has not created yet:
/// the two look the same from here): HOME itself is missing. The list
/// index goes, nothing is created where NFS should be, and one Info line
/// says so, without crying wolf at every new user's first login.
#[test]
fn nfs_not_mounted_drops_the_list_index_and_creates_nothing() {
    let h = Harness::new();
    let dir = steady_state(&h);
    fs::remove_dir_all(h.home()).expect("remove HOME");
    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches trusting the record when INDEX/.lasthost is gone.
    assert_dropped(&dir, &run);
    assert_eq!(record_bytes(&dir), b"");
    // Catches creating HOME or INDEX on the (unmounted) mount point.
    assert!(!h.home().exists(), "HOME was created");
    assert!(run.lines("Error").is_empty(), "stderr:\n{}", run.stderr);
    assert!(run.lines("Warning").is_empty(), "stderr:\n{}", run.stderr);
    assert!(
        run.lines("Info")
            .iter()
            .any(|l| l.contains("does not exist yet") && l.contains("no record stored")),
        "stderr:\n{}",
        run.stderr
    );
}

/// INDEX/.lasthost is a symlink to the very file the record describes
/// (same inode, mtime and content): a wrapper that followed it would call
/// the list index current. It must not follow it, nor write through it.
#[test]
fn an_index_lasthost_symlink_is_neither_followed_nor_written_through() {
    let h = Harness::new();
    let dir = steady_state(&h);
    let moved = h.path("nfs").join("elsewhere-lasthost");
    fs::rename(h.stamp_path(), &moved).expect("move INDEX/.lasthost");
    symlink_owned(&h, &moved, &h.stamp_path());
    let target = stamp_of(&moved);

    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches following the symlink (the target matches the record).
    assert_dropped(&dir, &run);
    // Catches writing through the symlink.
    assert_eq!(stamp_of(&moved), target, "the symlink's target changed");
    // Catches temporary files left in INDEX.
    assert_eq!(support::names_in(&h.index()), [".lasthost"]);
    one_line(&run, "Error", &[".lasthost", "not a regular file"]);
}

/// INDEX/.lasthost is a FIFO (opening it for reading would block until a
/// writer comes) or a directory: the login must not hang, and the list
/// index goes.
#[rstest]
#[case::fifo(true)]
#[case::directory(false)]
fn an_index_lasthost_fifo_or_directory_does_not_hang_and_drops(#[case] fifo: bool) {
    let h = Harness::new();
    let dir = steady_state(&h);
    let path = h.stamp_path();
    fs::remove_file(&path).expect("remove INDEX/.lasthost");
    if fifo {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
    } else {
        fs::create_dir(&path).expect("mkdir");
    }
    h.chown(&path);

    let (run, killed) = h
        .login(Backend::A)
        .spawn()
        .wait_timeout(Duration::from_secs(15));
    // Catches a blocking open of the FIFO.
    assert!(
        !killed,
        "the login hung and was killed; stderr:\n{}",
        run.stderr
    );
    run.assert_ok();
    // Catches treating the special file as "no stamp yet" and keeping or
    // half-trusting the cache.
    assert_dropped(&dir, &run);
    assert_eq!(record_bytes(&dir), b"");
    one_line(&run, "Error", &[".lasthost", "not a regular file"]);
    // A FIFO is replaced by a renewed stamp (the rename takes its name); a
    // directory cannot be, and stays.
    let kind = fs::symlink_metadata(&path).expect("lstat").file_type();
    if fifo {
        assert!(kind.is_file());
        assert!(h.stamp().content.starts_with(b"backend-a "));
    } else {
        assert!(kind.is_dir());
    }
}

// ---------------------------------------------------------------------------
// Environment faults: the LISTINDEX root in tmpfs.

/// The LISTINDEX root is full (a 256 KiB tmpfs filled to the last page).
/// The list index files are hard links to the filler, so dropping them
/// frees nothing, and the record starts empty (lost), so that storing a
/// new record really hits ENOSPC. The drop must still work, and no record
/// may be left that a later login would trust.
#[test]
fn a_full_listindex_root_still_drops_and_stores_no_half_written_record() {
    if !have_root("a_full_listindex_root_still_drops_and_stores_no_half_written_record") {
        return;
    }
    let h = Harness::new();
    h.create_index();
    let shm = h.shm(Backend::A);
    let options = format!("size=256k,mode=0755,uid={},gid={}", h.uid, h.gid);
    let _tmpfs = Mount::tmpfs(&shm, &options);
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    let dir = h.listindex(Backend::A, USER);
    fs::write(dir.join(".lasthost"), b"").expect("lose the record");

    let filler = shm.join("filler");
    fs::write(&filler, b"").expect("filler");
    for name in LIST_FILES {
        fs::hard_link(&filler, dir.join(name)).expect("hard link");
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&filler)
        .expect("open filler");
    let chunk = vec![b'x'; 4096];
    let full = loop {
        match file.write(&chunk) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(e),
        }
    };
    drop(file);
    let full = full.expect("the tmpfs filled up");
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");

    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches a drop that needs free space (a rename to a trash name, a
    // copy...).
    assert_dropped(&dir, &run);
    // Catches a record half-written, or written despite the error, that a
    // later login could take as valid.
    let record = record_bytes(&dir);
    assert!(
        record.is_empty(),
        "record after ENOSPC: {:?}",
        String::from_utf8_lossy(&record)
    );
    one_line(&run, "Error", &["No space left on device"]);

    // With room again, the next login stores a valid record.
    fs::remove_file(&filler).expect("unlink filler");
    let run = h.login(Backend::A).run();
    run.assert_quiet();
    assert_eq!(
        Stamp::decode(&record_bytes(&dir)).expect("valid"),
        Some(h.stamp())
    );
}

/// The LISTINDEX root is read-only: the stale list index cannot be
/// dropped. The log must say it may be stale, and the exit status is still
/// the command's.
#[test]
fn a_read_only_listindex_root_says_the_list_index_may_be_stale() {
    if !have_root("a_read_only_listindex_root_says_the_list_index_may_be_stale") {
        return;
    }
    let h = Harness::new();
    h.create_index();
    let options = format!("size=1m,mode=0755,uid={},gid={}", h.uid, h.gid);
    let tmpfs = Mount::tmpfs(&h.shm(Backend::A), &options);
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    let dir = h.listindex(Backend::A, USER);
    plant_list_index(&h, &dir);
    tmpfs.make_read_only(&options);

    let run = h
        .login(Backend::A)
        .command(&[
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new("exit 7"),
        ])
        .run();
    eprintln!("{}", run.stderr.trim_end());
    // Catches a wrapper that fails the login, or reports its own status.
    assert_eq!(run.status.code(), Some(7), "stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty());
    // Catches a silent failure: the operator must learn that Dovecot may
    // now serve a stale list index for this user.
    let errors = run.lines("Error");
    let dir_name = dir.display().to_string();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("may be stale") && l.contains(&dir_name)),
        "no Error line says the list index in {dir_name} may be stale:\n{}",
        run.stderr
    );
    assert!(errors.len() <= 2, "stderr:\n{}", run.stderr);
    // Catches a backend that serves the user without renewing
    // INDEX/.lasthost: the others would keep trusting their list indexes.
    assert!(
        h.stamp().content.starts_with(b"backend-a "),
        "INDEX/.lasthost not renewed"
    );
}

/// Asserts that the tree is as before except for INDEX/.lasthost (and
/// INDEX's own entry), and that INDEX/.lasthost was renewed by backend-a:
/// a backend that serves the user without being able to check or record
/// must still make every other backend stop trusting its list index.
fn assert_only_stamp_renewed(h: &Harness, before: &Snapshot, what: &str) {
    let index = h.index();
    let rel_index = index
        .strip_prefix(h.path(""))
        .expect("INDEX below the harness root");
    let rel_stamp = rel_index.join(".lasthost");
    let skip = [rel_index, rel_stamp.as_path()];
    before
        .without(&skip)
        .assert_same(&h.snapshot().without(&skip), what);
    let content = h.stamp().content;
    assert!(
        content.starts_with(b"backend-a "),
        "{what}: INDEX/.lasthost not renewed by backend-a: {:?}",
        String::from_utf8_lossy(&content)
    );
}

/// A directory on the way to the user's LISTINDEX replaced by a file or a
/// symlink: refused where it is, nothing followed or created.
#[rstest]
#[case::root_is_a_file("root")]
#[case::hash_dir_is_a_file("hash")]
#[case::user_dir_is_a_file("user")]
#[case::user_dir_is_a_symlink("symlink")]
fn a_listindex_directory_replaced_by_a_file_or_symlink_is_refused(#[case] kind: &str) {
    let h = Harness::new();
    h.create_index();
    let shm = h.shm(Backend::A);
    let hash = shm.join(hash_dir(USER.as_bytes()));
    let user = hash.join(USER);
    let replaced = match kind {
        "root" => {
            fs::remove_dir(&shm).expect("rmdir root");
            h.plant(&shm, b"a file where the root should be");
            shm.clone()
        }
        "hash" => {
            h.plant(&hash, b"a file where the hash directory should be");
            hash.clone()
        }
        "user" => {
            h.plant(&user, b"a file where the user directory should be");
            user.clone()
        }
        _ => {
            let target = h.path("elsewhere");
            plant_list_index(&h, &target);
            h.mkdir_owned(&hash);
            symlink_owned(&h, &target, &user);
            user.clone()
        }
    };
    let before = h.snapshot();
    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches following a symlink or replacing the file.
    assert_only_stamp_renewed(&h, &before, kind);
    one_line(&run, "Error", &[&replaced.display().to_string()]);
}

// ---------------------------------------------------------------------------
// Privileges: a LISTINDEX root under a world-writable parent such as
// /dev/shm, where anyone may have created it first.

/// `pub/` (mode 1777, like /dev/shm) and a settings file whose LISTINDEX
/// root is `pub/li`.
fn public_parent(h: &Harness) -> (PathBuf, PathBuf) {
    let parent = h.path("pub");
    fs::create_dir(&parent).expect("mkdir pub");
    chmod(&parent, 0o1777);
    let root = parent.join("li");
    let config = h.write_config(
        "pub.conf",
        &config_text("backend-a", Some(&mail_location(&root))),
    );
    (root, config)
}

/// A root that is a symlink (to a directory the user owns, holding a list
/// index where the user's would be): refused, nothing followed.
#[test]
fn a_listindex_root_that_is_a_symlink_is_refused() {
    let h = Harness::new();
    h.create_index();
    let (root, config) = public_parent(&h);
    let target = h.path("target");
    h.mkdir_owned(&target);
    chmod(&target, 0o700);
    plant_list_index(&h, &user_dir(&target, USER.as_bytes()));
    symlink_owned(&h, &target, &root);
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches following the symlink (a record would appear in target/).
    assert_only_stamp_renewed(&h, &before, "symlinked root");
    one_line(&run, "Error", &[&root.display().to_string()]);
}

/// A root owned by another uid, even 1777 (so that without the check the
/// wrapper could create the user's directories in it): refused.
#[test]
fn a_listindex_root_owned_by_another_user_is_refused() {
    if !have_root("a_listindex_root_owned_by_another_user_is_refused") {
        return;
    }
    let h = Harness::new();
    h.create_index();
    let (root, config) = public_parent(&h);
    fs::create_dir(&root).expect("mkdir root");
    std::os::unix::fs::lchown(&root, Some(12345), Some(12345)).expect("chown");
    chmod(&root, 0o1777);
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches a missing owner check: the user's directories would be
    // created in a directory another user controls.
    assert_only_stamp_renewed(&h, &before, "foreign root");
    one_line(
        &run,
        "Error",
        &[&root.display().to_string(), "owned by uid 12345"],
    );
}

/// A root the user owns but that others may write to, without the sticky
/// bit (anyone could rename the user's directory away and put their own
/// there): refused.
#[rstest]
#[case::world_writable(0o777)]
#[case::other_writable(0o757)]
fn a_listindex_root_writable_by_others_without_sticky_bit_is_refused(#[case] mode: u32) {
    let h = Harness::new();
    h.create_index();
    let (root, config) = public_parent(&h);
    h.mkdir_owned(&root);
    chmod(&root, mode);
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches a missing mode check.
    assert_only_stamp_renewed(&h, &before, "writable root");
    let mode_text = format!("{mode:04o}");
    one_line(&run, "Error", &[&root.display().to_string(), &mode_text]);
}

/// A root-owned 1777 root (what `mkdir -m 1777` by an administrator gives)
/// is accepted, and the user's directories are the user's.
#[test]
fn a_root_owned_sticky_listindex_root_is_accepted() {
    if !have_root("a_root_owned_sticky_listindex_root_is_accepted") {
        return;
    }
    let h = Harness::new();
    h.create_index();
    let (root, config) = public_parent(&h);
    fs::create_dir(&root).expect("mkdir root");
    chmod(&root, 0o1777);
    let run = h.login_with(&config).run();
    // Catches a check that refuses the administrator's own layout.
    run.assert_quiet();
    let dir = user_dir(&root, USER.as_bytes());
    assert_eq!(owner_of(&dir), (h.uid, h.gid));
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(
        Stamp::decode(&record_bytes(&dir)).expect("valid"),
        Some(h.stamp())
    );
}

/// A missing root is created 0700 and belongs to the user; so does the
/// record (0600).
#[test]
fn a_missing_listindex_root_is_created_0700_for_the_user() {
    let h = Harness::new();
    h.create_index();
    let (root, config) = public_parent(&h);
    let run = h.login_with(&config).run();
    run.assert_quiet();
    // Catches a root created with the umask's mode (others could enter or
    // write), or as root.
    assert_eq!(mode_of(&root), 0o700, "{}", root.display());
    assert_eq!(owner_of(&root), (h.uid, h.gid));
    let record = user_dir(&root, USER.as_bytes()).join(".lasthost");
    assert_eq!(mode_of(&record), 0o600, "{}", record.display());
    assert_eq!(owner_of(&record), (h.uid, h.gid));
}
