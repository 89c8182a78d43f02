//! Integration tests of `nfs-hostchange postlogin`: the binary as Dovecot's
//! script-login runs it, on a temporary tree that plays two backends
//! sharing one NFS home (see `tests/support/mod.rs`).
//!
//! Every test says, next to its assertions, which broken behaviour each one
//! catches.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rstest::rstest;

use nfs_hostchange::record::Stamp;
use support::{
    find_strace, names_fd_under, names_in, names_path_under, parse_trace, running_as_root, Backend,
    Harness, FD3_GREETING, USER,
};

const LIST_FILES: [&str; 3] = [
    "dovecot.list.index",
    "dovecot.list.index.log",
    "dovecot.list.index.log.2",
];

/// Plants the three list index files and a file that is not one.
fn plant_list_index(h: &Harness, backend: Backend) {
    let dir = h.listindex(backend, USER);
    for name in LIST_FILES {
        h.plant(&dir.join(name), b"list index data");
    }
    h.plant(&dir.join("other"), b"not a list index");
}

/// Asserts that `stamp` names `host` followed by a 32-digit token.
fn assert_names_host(stamp: &Stamp, host: &str) {
    let text = String::from_utf8_lossy(&stamp.content).into_owned();
    let token = text
        .strip_prefix(host)
        .and_then(|t| t.strip_prefix(' '))
        .and_then(|t| t.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("INDEX/.lasthost {text:?} does not name {host}"));
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "token {token:?}"
    );
}

/// Asserts that the local record on `backend` matches INDEX/.lasthost.
fn assert_record_matches_stamp(h: &Harness, backend: Backend) {
    let record = h.record(backend).expect("a record is stored");
    assert_eq!(record, h.stamp(), "record vs stat(INDEX/.lasthost)");
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

#[test]
fn first_login_creates_the_listindex_a_record_and_the_stamp() {
    let h = Harness::new();
    h.create_index();
    let run = h.login(Backend::A).run();
    run.assert_quiet();

    let user_dir = h.listindex(Backend::A, USER);
    let hash_dir = user_dir.parent().expect("hash dir");
    // Catches a wrong %2.256Nu expansion (the directory is elsewhere) and a
    // wrong mode for what is created.
    assert_eq!(mode_of(hash_dir), 0o700, "{}", hash_dir.display());
    assert_eq!(mode_of(&user_dir), 0o700, "{}", user_dir.display());

    // Catches acting as root instead of UID/GID: "no file is ever created
    // owned by root in a user's directories".
    let ids = (h.uid, h.gid);
    for path in [
        hash_dir.to_path_buf(),
        user_dir.clone(),
        h.record_path(Backend::A, USER),
        h.stamp_path(),
    ] {
        assert_eq!(owner_of(&path), ids, "owner of {}", path.display());
    }

    // Catches a missing or wrong stamp, or a record that does not describe it.
    let stamp = h.stamp();
    assert_names_host(&stamp, "backend-a");
    assert_record_matches_stamp(&h, Backend::A);
    // Catches a temporary file left in INDEX.
    assert_eq!(names_in(&h.index()), [".lasthost"]);

    // Catches exec keeping the file system identity of the user (exec must
    // reset it to the effective one): the fourth number of each line.
    if running_as_root() {
        for line in run.report().ids {
            let numbers: Vec<&str> = line.split_whitespace().skip(1).collect();
            assert_eq!(numbers, ["0"; 4], "the command's identity: {line}");
        }
    }
}

#[test]
fn steady_state_keeps_the_stamp_and_the_list_index_and_logs_nothing() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    let planted = h.listindex(Backend::A, USER).join("dovecot.list.index");
    h.plant(&planted, b"list index data");
    let before = h.stamp();
    let record_before = fs::read(h.record_path(Backend::A, USER)).expect("record");
    // Age the record so that the login's touch shows.
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(h.record_path(Backend::A, USER))
        .expect("open record")
        .set_modified(long_ago)
        .expect("age record");

    let started = SystemTime::now() - Duration::from_secs(2);
    let run = h.login(Backend::A).run();
    run.assert_ok();
    // Catches any log line in steady state (Info included).
    assert_eq!(run.stderr, "", "steady state logs nothing");
    // Catches a rewrite of INDEX/.lasthost (new inode by rename, or new
    // mtime or content in place) in steady state.
    let after = h.stamp();
    assert_eq!(after.ino, before.ino, "inode of INDEX/.lasthost");
    assert_eq!(
        (after.mtime_sec, after.mtime_nsec),
        (before.mtime_sec, before.mtime_nsec),
        "mtime of INDEX/.lasthost"
    );
    assert_eq!(after.content, before.content);
    // Catches dropping a current list index.
    assert!(planted.exists(), "the current list index was dropped");
    assert_eq!(
        fs::read(h.record_path(Backend::A, USER)).expect("record"),
        record_before
    );
    // Catches a login that does not mark the record (the cleaner ages
    // users by its mtime).
    let mtime = fs::metadata(h.record_path(Backend::A, USER))
        .expect("record")
        .modified()
        .expect("mtime");
    assert!(
        mtime >= started,
        "record mtime {mtime:?} not set by the login"
    );
}

#[test]
fn coming_back_after_another_backend_drops_only_the_list_index() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);

    let run_b = h.login(Backend::B).run();
    run_b.assert_quiet();
    assert_names_host(&h.stamp(), "backend-b");
    assert_record_matches_stamp(&h, Backend::B);
    // Catches B touching A's cache (it cannot know it; nothing may).
    for name in LIST_FILES {
        assert!(h.listindex(Backend::A, USER).join(name).exists());
    }

    let run = h.login(Backend::A).run();
    run.assert_quiet();
    let dir = h.listindex(Backend::A, USER);
    // Catches keeping a stale list index (the bug this program exists for),
    // and a prefix match that misses the transaction logs.
    for name in LIST_FILES {
        assert!(!dir.join(name).exists(), "{name} was kept");
    }
    // Catches dropping too much: other files and the record stay.
    assert_eq!(names_in(&dir), [".lasthost", "other"]);
    // Catches a missing or uninformative Info line.
    let info = run.lines("Info");
    assert_eq!(info.len(), 1, "stderr:\n{}", run.stderr);
    assert!(info[0].contains("backend-b"), "{}", info[0]);
    assert!(info[0].contains("3 files"), "{}", info[0]);
    // Catches not taking INDEX/.lasthost back.
    assert_names_host(&h.stamp(), "backend-a");
    assert_record_matches_stamp(&h, Backend::A);
}

/// A backend that serves the user without being able to check (here: B's
/// local record is a directory, so B cannot lock) must still renew
/// INDEX/.lasthost, or A's record keeps matching and A serves its stale
/// list index after the user changed folders on B. Found by the soak.
#[test]
fn a_backend_that_cannot_check_still_invalidates_the_others() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let before = h.stamp();

    let b_dir = h.listindex(Backend::B, USER);
    h.mkdir_owned(&b_dir);
    h.mkdir_owned(&b_dir.join(".lasthost"));
    let run_b = h.login(Backend::B).run();
    run_b.assert_ok();
    assert!(!run_b.lines("Error").is_empty(), "{}", run_b.stderr);
    // Catches B leaving INDEX/.lasthost as A recorded it.
    let after = h.stamp();
    assert_ne!(before, after, "B did not renew INDEX/.lasthost");
    assert_names_host(&after, "backend-b");

    // And so A drops its list index.
    h.login(Backend::A).run().assert_ok();
    for name in LIST_FILES {
        assert!(
            !h.listindex(Backend::A, USER).join(name).exists(),
            "{name} was kept on A"
        );
    }
}

/// A match needs inode, mtime and content to agree: INDEX/.lasthost
/// changed in place (same inode) in its mtime only, or in its content only
/// (mtime put back), is a change.
#[rstest]
#[case::mtime_only(true)]
#[case::content_only(false)]
fn a_stamp_changed_in_place_is_a_change(#[case] mtime_only: bool) {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let path = h.stamp_path();
    let before = fs::metadata(&path).expect("stat stamp");
    let times = |m: &fs::Metadata| {
        (
            nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec()),
            nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec()),
        )
    };
    if mtime_only {
        let (atime, mtime) = times(&before);
        let later = mtime + nix::sys::time::TimeSpec::new(0, 1);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &atime,
            &later,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
    } else {
        // Same length, same inode, one byte different, mtime put back.
        let mut content = fs::read(&path).expect("read stamp");
        let last = content.len() - 2;
        content[last] = if content[last] == b'0' { b'1' } else { b'0' };
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &content))
            .expect("rewrite stamp in place");
        let (atime, mtime) = times(&before);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &atime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
    }
    assert_eq!(fs::metadata(&path).expect("stat").ino(), before.ino());

    h.login(Backend::A).run().assert_ok();
    // Catches a match rule that ignores the mtime, or the content.
    for name in LIST_FILES {
        assert!(
            !h.listindex(Backend::A, USER).join(name).exists(),
            "{name} was kept"
        );
    }
}

/// Design: always rewrite on a mismatch, even when the content already
/// names this host, so two backends misconfigured with one host name still
/// invalidate each other.
#[test]
fn two_backends_with_one_host_name_still_invalidate_each_other() {
    let h = Harness::new();
    h.create_index();
    let twin = h.write_config(
        "twin.conf",
        &support::config_text(
            "backend-a",
            Some(&support::mail_location(&h.shm(Backend::B))),
        ),
    );
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    h.login_with(&twin).run().assert_quiet();
    h.login(Backend::A).run().assert_quiet();
    // Catches a check that compares host names instead of inode, mtime and
    // content.
    for name in LIST_FILES {
        assert!(
            !h.listindex(Backend::A, USER).join(name).exists(),
            "{name} was kept"
        );
    }
    assert_record_matches_stamp(&h, Backend::A);
}

#[rstest]
#[case::garbage(|_: &[u8]| b"hello world\n".to_vec())]
#[case::truncated(|valid: &[u8]| valid[..valid.len() - 5].to_vec())]
#[case::empty(|_: &[u8]| Vec::new())]
#[case::wrong_inode(|valid: &[u8]| {
    let text = String::from_utf8(valid.to_vec()).expect("utf8");
    let ino = text.lines().nth(1).expect("ino line").to_string();
    text.replace(&ino, "ino 1").into_bytes()
})]
fn a_bad_record_drops_the_list_index_and_is_replaced(#[case] spoil: fn(&[u8]) -> Vec<u8>) {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let record = h.record_path(Backend::A, USER);
    let valid = fs::read(&record).expect("record");
    fs::write(&record, spoil(&valid)).expect("spoil record");

    let run = h.login(Backend::A).run();
    run.assert_ok();
    assert!(run.lines("Error").is_empty(), "stderr:\n{}", run.stderr);
    // Catches trusting a record that does not match exactly.
    for name in LIST_FILES {
        assert!(
            !h.listindex(Backend::A, USER).join(name).exists(),
            "{name} was kept"
        );
    }
    // Catches leaving the bad record in place.
    assert_record_matches_stamp(&h, Backend::A);
    assert_names_host(&h.stamp(), "backend-a");
}

#[test]
fn missing_index_drops_the_list_index_and_stores_no_record() {
    let h = Harness::new();
    // nfs/bob exists, nfs/bob/Maildir does not (new user, NFS not mounted).
    plant_list_index(&h, Backend::A);
    fs::set_permissions(
        h.listindex(Backend::A, USER),
        fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");

    let run = h.login(Backend::A).run();
    run.assert_ok();
    // The command runs (assert_ok). Catches keeping the list index.
    for name in LIST_FILES {
        assert!(
            !h.listindex(Backend::A, USER).join(name).exists(),
            "{name} was kept"
        );
    }
    // Catches creating INDEX ("never create INDEX itself").
    assert!(!h.index().exists(), "INDEX was created");
    assert_eq!(names_in(&h.home()), Vec::<String>::new());
    // Catches storing a record for a stamp that was never written.
    assert_eq!(
        fs::read(h.record_path(Backend::A, USER)).expect("record"),
        b""
    );
    assert!(run.lines("Error").is_empty(), "stderr:\n{}", run.stderr);
}

#[test]
fn concurrent_logins_of_one_user_agree() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    // Many list index files make dropping them slow enough that logins
    // without mutual exclusion would overlap in it.
    let dir = h.listindex(Backend::A, USER);
    for i in 0..600 {
        h.plant(&dir.join(format!("dovecot.list.index.tmp.{i}")), b"x");
    }

    let pending: Vec<_> = (0..20).map(|_| h.login(Backend::A).spawn()).collect();
    let runs: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
    let mut info = Vec::new();
    for run in &runs {
        // Catches lock timeouts, lock errors and races that log problems.
        run.assert_quiet();
        info.extend(run.lines("Info").into_iter().map(str::to_string));
    }
    // Catches logins that are not mutually exclusive: several of them then
    // judge the record stale and drop files (each logging what it dropped).
    assert_eq!(info.len(), 1, "Info lines across all runs: {info:#?}");
    assert!(info[0].contains("603 files"), "{}", info[0]);
    assert_eq!(names_in(&dir), [".lasthost", "other"]);
    // Catches unserialised writers: a record that names another write of
    // INDEX/.lasthost than the last one.
    let record = Stamp::decode(&fs::read(h.record_path(Backend::A, USER)).expect("record"))
        .expect("valid record")
        .expect("a record");
    assert_eq!(record, h.stamp());
    assert_names_host(&record, "backend-a");
    assert_eq!(names_in(&h.index()), [".lasthost"], "temporary files left");
}

/// A login that finds the user's lock held waits for it, then checks.
#[test]
fn a_login_waits_for_the_lock_then_checks() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let holder = fs::File::open(h.record_path(Backend::A, USER)).expect("open record");
    let lock = nix::fcntl::Flock::lock(holder, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .unwrap_or_else(|(_, e)| panic!("flock: {e}"));
    let pending = h.login(Backend::A).spawn();
    std::thread::sleep(Duration::from_millis(400));
    // Catches a login that does not wait for the lock (it would have
    // dropped the list index, rewritten the stamp and run the command).
    assert!(
        h.listindex(Backend::A, USER).join(LIST_FILES[0]).exists(),
        "the list index was dropped while the lock was held"
    );
    assert_names_host(&h.stamp(), "backend-b");
    drop(lock);
    let run = pending.wait();
    // Catches a login that gives up at once instead of waiting.
    run.assert_quiet();
    assert!(
        run.elapsed >= Duration::from_millis(400),
        "{:?}",
        run.elapsed
    );
    assert_eq!(run.lines("Info").len(), 1, "stderr:\n{}", run.stderr);
    assert_names_host(&h.stamp(), "backend-a");
    assert_record_matches_stamp(&h, Backend::A);
}

/// The cleaner's side of the lock protocol, done by hand: while a login
/// waits for the user's lock, the holder removes the user's directory (the
/// list index, then the record, then the directory) and only then lets go.
/// The login must notice that the record it locked is gone, open the
/// directory again from the root, and end with a directory and a valid
/// record; a login that trusted the unlinked record would check and record
/// into nothing.
#[test]
fn a_login_that_waited_while_the_cleaner_removed_the_user_starts_over() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    h.login(Backend::B).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let dir = h.listindex(Backend::A, USER);
    let record = h.record_path(Backend::A, USER);
    let holder = fs::File::open(&record).expect("open record");
    let lock = nix::fcntl::Flock::lock(holder, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .unwrap_or_else(|(_, e)| panic!("flock: {e}"));
    let pending = h.login(Backend::A).spawn();
    std::thread::sleep(Duration::from_millis(400));
    for name in LIST_FILES.iter().chain(["other"].iter()) {
        fs::remove_file(dir.join(name)).expect("remove list index file");
    }
    fs::remove_file(&record).expect("remove record");
    fs::remove_dir(&dir).expect("remove user directory");
    drop(lock);
    let run = pending.wait();
    run.assert_quiet();
    // Catches a login that went on with the record it had locked: the
    // directory would not exist again, or would hold no valid record.
    assert!(dir.is_dir(), "the login did not recreate {}", dir.display());
    assert_record_matches_stamp(&h, Backend::A);
    assert_names_host(&h.stamp(), "backend-a");
}

#[test]
fn stdin_is_not_read_and_stdout_stays_empty() {
    let h = Harness::new();
    h.create_index();
    let data: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    // Both a first login (drop and write) and steady state.
    for round in 0..2 {
        let run = h.login(Backend::A).stdin(&data).probe_reads_stdin().run();
        // Catches any write to stdout (the IMAP client's socket).
        run.assert_quiet();
        // Catches the wrapper reading (or draining, or closing) stdin.
        assert_eq!(
            run.report().stdin.as_deref(),
            Some(&data[..]),
            "round {round}: the command did not get all of stdin"
        );
    }
}

#[test]
fn inherited_descriptors_survive_and_nothing_leaks() {
    let h = Harness::new();
    h.create_index();
    let fd3_path = h.out_file("fd3");
    let fd4_path = h.out_file("fd4");
    fs::write(&fd4_path, "read by nobody").expect("write fd4 file");
    let open_fd3 = || -> OwnedFd {
        fs::File::options()
            .create(true)
            .append(true)
            .open(&fd3_path)
            .expect("open fd3 file")
            .into()
    };
    let open_fd4 = || -> OwnedFd { fs::File::open(&fd4_path).expect("open fd4 file").into() };
    // First login (creates and writes), steady state, and a drop after B.
    let steps = [Backend::A, Backend::A, Backend::B, Backend::A];
    for (i, backend) in steps.into_iter().enumerate() {
        if i == 2 {
            plant_list_index(&h, Backend::A);
        }
        let run = h
            .login(backend)
            .inherit(open_fd3())
            .inherit(open_fd4())
            .probe_writes_fd3()
            .run();
        run.assert_quiet();
        let report = run.report();
        // Catches closing or moving descriptors 3 and 4 (a checkpassword
        // chain's protocol), and leaking any of the wrapper's own (directory,
        // lock, INDEX, settings file, syslog socket).
        assert_eq!(
            report.fd_numbers(),
            [0, 1, 2, 3, 4],
            "step {i}: descriptors seen by the command: {:?}",
            report.fds
        );
        assert_eq!(report.fds[3].1, fd3_path.display().to_string());
        assert_eq!(report.fds[4].1, fd4_path.display().to_string());
    }
    // Catches a descriptor 3 that is open but not the one inherited.
    assert_eq!(
        fs::read_to_string(&fd3_path).expect("fd3 file"),
        FD3_GREETING.repeat(steps.len())
    );
    // And without inherited descriptors, the command has only 0 to 2.
    let run = h.login(Backend::A).run();
    run.assert_quiet();
    assert_eq!(run.report().fd_numbers(), [0, 1, 2]);
}

#[rstest]
#[case::config_option(false)]
#[case::config_equals_and_double_dash(true)]
fn environment_and_argv_pass_through_unchanged(#[case] other_form: bool) {
    let h = Harness::new();
    h.create_index();
    let tricky: [&OsStr; 8] = [
        OsStr::new("two words"),
        OsStr::new(""),
        OsStr::new("--config"),
        OsStr::new("/etc/passwd"),
        OsStr::new("-x"),
        OsStr::new("--"),
        OsStr::new("tab\there  "),
        OsStr::from_bytes(b"not utf-8 \xff\xfe"),
    ];
    let mut login = h
        .login(Backend::A)
        .env("NFS_HOSTCHANGE_CUSTOM", "kept = as is")
        .env("AUTH_MECH", "PLAIN")
        // glibc drops these from a program started in secure-execution
        // mode, which an exec with a changed file-system identity is (as
        // root, the wrapper acts with the user's; it must give it back).
        .env("TMPDIR", "/nonexistent-nfshc-tmpdir")
        .env("LD_LIBRARY_PATH", "/nonexistent-nfshc-libs")
        .probe_args(&tricky);
    if other_form {
        let option = format!("--config={}", h.config(Backend::A).display());
        login = login.options(&[OsStr::new(&option), OsStr::new("--")]);
    }
    let run = login.run();
    run.assert_quiet();
    // The check ran with these options.
    assert_record_matches_stamp(&h, Backend::A);
    let report = run.report();
    // Catches argv being re-split, re-joined, dropped, or cut at the
    // command's own option-like words.
    let sent: Vec<Vec<u8>> = run.command.iter().map(|a| a.as_bytes().to_vec()).collect();
    assert_eq!(report.argv, sent);
    // Catches added (PATH above all), removed or changed variables.
    assert_eq!(report.env_sorted(), run.env_sent());
    assert!(!report.env.iter().any(|v| v.starts_with(b"PATH=")));
}

#[rstest]
#[case::env("env")]
#[case::true_("true")]
fn a_command_without_a_slash_is_found_without_path(#[case] name: &str) {
    let h = Harness::new();
    h.create_index();
    let run = h.login(Backend::A).command(&[OsStr::new(name)]).run();
    // Catches a PATH lookup that fails without PATH (exit 127, a log line).
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.stderr, "",
        "first login with no list index logs nothing"
    );
    if name == "env" {
        // env's output is the environment it got: unchanged, no PATH.
        let mut printed: Vec<Vec<u8>> = run
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        printed.sort();
        assert_eq!(printed, run.env_sent());
    }
}

#[rstest]
#[case::up_to_etc("../../etc")]
#[case::slash("a/b")]
#[case::dotdot("..")]
#[case::dot(".")]
#[case::colon("x:LISTINDEX=/etc/x")]
fn a_hostile_user_name_touches_nothing(#[case] user: &str) {
    let h = Harness::new();
    h.create_index();
    // What a wrapper that followed the name would reach: shmA/xx/../../etc
    // is <tmp>/etc, shmA/xx/.. is shmA/xx's parent.
    let etc = h.path("etc");
    h.plant(&etc.join("dovecot.list.index"), b"outside");
    h.plant(&h.shm(Backend::A).join("dovecot.list.index"), b"root");
    let hash = support::hash_dir(user.as_bytes());
    h.plant(
        &h.shm(Backend::A).join(&hash).join("dovecot.list.index"),
        b"hash dir",
    );
    let before = h.snapshot();

    let run = h.login(Backend::A).user(user).run();
    // Catches a refused user locked out (the command must still run).
    run.assert_ok();
    // Catches following the name anywhere: nothing created or changed, in
    // the LISTINDEX root or outside it, and nothing on NFS.
    before.assert_same(&h.snapshot(), user);
    let errors = run.lines("Error");
    assert_eq!(errors.len(), 1, "stderr:\n{}", run.stderr);
    assert!(errors[0].contains("refused"), "{}", errors[0]);
}

#[rstest]
#[case::no_mail_location(None, "mail_location is not set")]
#[case::no_listindex(Some("maildir:~/Maildir"), "no LISTINDEX")]
#[case::unknown_variable(
    Some("maildir:~/Maildir:LISTINDEX=SHM/%q/%u/dovecot.list.index"),
    "unknown variable %q"
)]
#[case::relative_listindex(
    Some("maildir:~/Maildir:LISTINDEX=lists/dovecot.list.index"),
    "relative"
)]
fn a_configuration_error_skips_the_check_but_runs_the_command(
    #[case] location: Option<&str>,
    #[case] needle: &str,
) {
    let h = Harness::new();
    h.create_index();
    plant_list_index(&h, Backend::A);
    let shm = h.shm(Backend::A).display().to_string();
    let location = location.map(|l| l.replace("SHM", &shm));
    let config = h.write_config(
        "broken.conf",
        &support::config_text("backend-a", location.as_deref()),
    );
    let before = h.snapshot();

    let run = h.login_with(&config).run();
    // Catches a configuration error that locks users out.
    run.assert_ok();
    // Catches a check that goes on with half-resolved paths.
    before.assert_same(&h.snapshot(), needle);
    // Catches a silent failure, or a message that does not say what is wrong.
    let errors = run.lines("Error");
    assert_eq!(errors.len(), 1, "stderr:\n{}", run.stderr);
    assert!(
        errors[0].contains(needle),
        "{:?} lacks {needle:?}",
        errors[0]
    );
}

#[test]
fn a_bad_settings_line_is_named_and_the_command_runs() {
    let h = Harness::new();
    h.create_index();
    let mut text = support::config_text(
        "backend-a",
        Some(&support::mail_location(&h.shm(Backend::A))),
    );
    text.push_str("nfs_hostchange_migration = maybe\n");
    let config = h.write_config("bad-line.conf", &text);
    let before = h.snapshot();
    let run = h.login_with(&config).run();
    run.assert_ok();
    before.assert_same(&h.snapshot(), "bad settings line");
    let errors = run.lines("Error");
    assert_eq!(errors.len(), 1, "stderr:\n{}", run.stderr);
    assert!(errors[0].contains("line 5"), "{}", errors[0]);
}

#[rstest]
#[case::missing_path("/nonexistent/nfs-hostchange-test-command", 127)]
#[case::missing_name("nfs-hostchange-no-such-command", 127)]
#[case::not_executable("PLAIN", 126)]
#[case::directory("DIR", 126)]
fn an_exec_failure_exits_like_a_shell_and_says_so(#[case] command: &str, #[case] code: i32) {
    let h = Harness::new();
    h.create_index();
    let plain = h.path("plain-file");
    fs::write(&plain, "#!/bin/sh\nexit 0\n").expect("write");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod");
    let command = match command {
        "PLAIN" => plain.display().to_string(),
        "DIR" => h.path("run").display().to_string(),
        other => other.to_string(),
    };
    let run = h.login(Backend::A).command(&[OsStr::new(&command)]).run();
    // Catches a wrong exit status (Dovecot and shells tell "not found"
    // from "cannot run" by it) and a crash.
    assert_eq!(run.status.code(), Some(code), "stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty());
    // Catches a failure nobody hears about.
    let errors = run.lines("Error");
    assert_eq!(errors.len(), 1, "stderr:\n{}", run.stderr);
    assert!(errors[0].contains(&command), "{}", errors[0]);
    // The check itself ran before the exec.
    assert_record_matches_stamp(&h, Backend::A);
}

#[rstest]
#[case::no_ids(None, None, "UID")]
#[case::only_uid(Some("65534"), None, "UID")]
#[case::not_numeric(Some("nobody"), Some("nogroup"), "UID")]
#[case::uid_zero(Some("0"), Some("0"), "UID 0")]
fn as_root_without_a_user_identity_nothing_is_touched(
    #[case] uid: Option<&str>,
    #[case] gid: Option<&str>,
    #[case] needle: &str,
) {
    if !running_as_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let h = Harness::new();
    h.create_index();
    plant_list_index(&h, Backend::A);
    let before = h.snapshot();
    let mut login = h.login(Backend::A).env_remove("UID").env_remove("GID");
    if let Some(uid) = uid {
        login = login.env("UID", uid);
    }
    if let Some(gid) = gid {
        login = login.env("GID", gid);
    }
    let run = login.run();
    // Catches locking the user out.
    run.assert_ok();
    // Catches creating root-owned files (or anything) in the user's trees.
    before.assert_same(&h.snapshot(), needle);
    let errors = run.lines("Error");
    assert_eq!(errors.len(), 1, "stderr:\n{}", run.stderr);
    assert!(errors[0].contains(needle), "{}", errors[0]);
}

/// A login that finds the user's lock held (the cleaner, or a stuck
/// login) waits a bounded time, then drops the list index without the lock
/// and renews INDEX/.lasthost, leaving the record to the lock holder.
#[test]
fn a_held_lock_delays_the_login_boundedly_and_drops_the_list_index() {
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    plant_list_index(&h, Backend::A);
    let record_path = h.record_path(Backend::A, USER);
    let record = fs::read(&record_path).expect("record");
    let stamp = h.stamp();
    let holder = fs::File::open(&record_path).expect("open record");
    nix::fcntl::Flock::lock(holder, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(|lock| {
            let run = h.login(Backend::A).run();
            drop(lock);
            // Catches waiting forever (or not at all).
            assert!(
                run.elapsed >= Duration::from_secs(4) && run.elapsed < Duration::from_secs(15),
                "took {:?}",
                run.elapsed
            );
            run.assert_ok();
            assert_eq!(run.lines("Error").len(), 1, "stderr:\n{}", run.stderr);
            // Catches keeping a list index that could not be checked.
            for name in LIST_FILES {
                assert!(!h.listindex(Backend::A, USER).join(name).exists());
            }
            // Catches writing the record without the lock.
            assert_eq!(fs::read(&record_path).expect("record"), record);
            // Catches serving the user without renewing INDEX/.lasthost:
            // the other backends must stop trusting their list indexes
            // (a renewal is a rename, atomic without our lock).
            assert_ne!(h.stamp(), stamp, "INDEX/.lasthost not renewed");
            assert_names_host(&h.stamp(), "backend-a");
        })
        .unwrap_or_else(|(_, e)| panic!("flock: {e}"));
}

/// `nfs_hostchange_log = dovecot`: Dovecot's internal log protocol.
#[test]
fn dovecot_log_lines_use_the_internal_protocol() {
    let h = Harness::new();
    h.create_index();
    let text = support::config_text(
        "backend-a",
        Some(&support::mail_location(&h.shm(Backend::A))),
    )
    .replace(
        "nfs_hostchange_log = stderr",
        "nfs_hostchange_log = dovecot",
    );
    let config = h.write_config("dovecot-log.conf", &text);
    h.login_with(&config).run().assert_ok();
    plant_list_index(&h, Backend::A);
    h.login(Backend::B).run().assert_quiet();
    let run = h.login_with(&config).run();
    run.assert_ok();
    // Catches plain lines (Dovecot would log them as errors) and a wrong
    // level byte or pid.
    let want = format!("\x01\x02{} nfs-hostchange({USER}): dropped", run.pid);
    assert!(
        run.stderr.starts_with(&want) && run.stderr.ends_with('\n'),
        "{:?}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
}

/// The static part of LISTINDEX is the administrator's; its parent being a
/// symlink is common (`/var/run` -> `/run` on Debian). Fails while
/// `listindex::open_or_create` opens the root's parent with `dir_flags()`,
/// whose O_NOFOLLOW (with O_DIRECTORY) makes that open fail with ENOTDIR.
#[test]
fn a_listindex_root_whose_parent_is_a_symlink_works() {
    let h = Harness::new();
    h.create_index();
    h.mkdir_owned(&h.path("real/shm"));
    std::os::unix::fs::symlink(h.path("real"), h.path("link")).expect("symlink");
    let config = h.write_config(
        "symlinked.conf",
        &support::config_text(
            "backend-a",
            Some(&support::mail_location(&h.path("link/shm"))),
        ),
    );
    let run = h.login_with(&config).run();
    // Catches O_NOFOLLOW applied to the root's parent: the login is then
    // never checked ("Too many levels of symbolic links").
    run.assert_quiet();
    let record = h
        .path("real/shm")
        .join(support::hash_dir(USER.as_bytes()))
        .join(USER)
        .join(".lasthost");
    let data = fs::read(&record).expect("a record below the symlinked parent");
    assert_eq!(Stamp::decode(&data).expect("valid"), Some(h.stamp()));
}

#[test]
fn steady_state_opens_index_lasthost_once_and_writes_nothing_on_nfs() {
    let Some(strace) = find_strace() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("strace is not installed (Debian package strace); CI must install it");
        }
        eprintln!("skipped: strace is not installed");
        return;
    };
    let h = Harness::new();
    h.create_index();
    h.login(Backend::A).run().assert_quiet();
    let before = h.stamp();
    let trace = h.out_file("strace");

    let run = h
        .login(Backend::A)
        .under(&[
            strace.as_os_str(),
            OsStr::new("-f"),
            OsStr::new("-y"),
            OsStr::new("-s"),
            OsStr::new("256"),
            OsStr::new("-e"),
            OsStr::new("trace=%file,%desc"),
            OsStr::new("-o"),
            trace.as_os_str(),
        ])
        .run();
    assert!(
        run.status.success(),
        "strace run failed ({:?}):\n{}",
        run.status,
        run.stderr
    );
    assert!(run.probe_ran(), "the command did not run:\n{}", run.stderr);
    assert_eq!(h.stamp(), before);

    let text = fs::read_to_string(&trace).expect("trace");
    let calls = parse_trace(&text);
    // The trace is real: it saw the wrapper exec the probe.
    let exe = std::env::current_exe().expect("test binary");
    assert!(
        calls
            .iter()
            .any(|c| c.name == "execve" && c.line.contains(&exe.display().to_string())),
        "no execve of the probe in the trace:\n{text}"
    );

    let index = h.index();
    let by_path: Vec<_> = calls
        .iter()
        .filter(|c| names_path_under(&c.line, &index))
        .collect();
    // Catches extra NFS lookups (a stat before the open, a second open, a
    // directory scan) and a missing open (a cached stat instead).
    assert_eq!(
        by_path.len(),
        1,
        "system calls on paths under INDEX:\n{:#?}",
        by_path
    );
    let open = by_path[0];
    assert!(
        matches!(open.name.as_str(), "openat" | "open" | "openat2"),
        "{}",
        open.line
    );
    assert!(open.line.contains(".lasthost\""), "{}", open.line);
    // Catches opening it for writing or creating it.
    for flag in ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"] {
        assert!(!open.line.contains(flag), "{}", open.line);
    }
    // Catches writes, renames, unlinks, locks, syncs or time changes on
    // NFS through a descriptor.
    const READ_ONLY: [&str; 9] = [
        "read",
        "pread64",
        "fstat",
        "newfstatat",
        "statx",
        "close",
        "fcntl",
        "lseek",
        "fadvise64",
    ];
    let by_fd: Vec<_> = calls
        .iter()
        .filter(|c| !names_path_under(&c.line, &index) && names_fd_under(&c.line, &index))
        .filter(|c| !READ_ONLY.contains(&c.name.as_str()))
        .collect();
    assert!(
        by_fd.is_empty(),
        "non-read-only calls on INDEX descriptors:\n{by_fd:#?}"
    );
}
