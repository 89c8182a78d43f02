//! The operators' tools: `show`, `check`, the help texts and the man page,
//! and Dovecot 2.4 templates (the same paths as their 2.3 forms, through
//! the library and through a real login).
//!
//! Each test builds its own tree in a temporary directory:
//!
//! ```text
//! <tmp>/nfs/bob/Maildir   the user's INDEX on "NFS" (HOME is nfs/bob)
//! <tmp>/shmA, shmB        the LISTINDEX roots of backends A and B (mode 1777)
//! <tmp>/a.conf, b.conf    their settings (host backend-a, backend-b)
//! <tmp>/bin/doveconf      a stand-in doveconf, when a test needs one
//! ```
//!
//! Children run with a cleared environment and an explicit PATH, so no
//! test reads /etc/dovecot: `check` gets `--dovecot-config` with a file the
//! test wrote, or a PATH without doveconf. Run as root (as in CI), the
//! user's files belong to `nobody`, as after a login with `script-login -d`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nfs_hostchange::mail_location::{self, PathError, Settings24};
use nfs_hostchange::varexpand::Vars;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// The program under test.
const BIN: &str = env!("CARGO_BIN_EXE_nfs-hostchange");

/// Dovecot 2.3.19.1's own expansions, one user per row.
const TSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/dovecot-var-expand.tsv"
);

/// The man page in the repository.
const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/nfs-hostchange.1");

/// A PATH with the usual system directories and nothing of the test's.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One test's tree.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::Builder::new()
            .prefix("nfs-hostchange-operators.")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path().canonicalize().expect("canonical path");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let (uid, gid) = if running_as_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let tree = Tree {
            _dir: dir,
            root,
            uid,
            gid,
        };
        for shm in ["shmA", "shmB"] {
            let path = tree.path(shm);
            fs::create_dir(&path).expect("mkdir shm");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o1777)).expect("chmod shm");
        }
        tree.user_dir("bob");
        tree.write_conf("a.conf", "shmA", "backend-a", "");
        tree.write_conf("b.conf", "shmB", "backend-b", "");
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// nfs/USER/Maildir, owned by the test user.
    fn user_dir(&self, user: &str) {
        let home = self.path(&format!("nfs/{user}"));
        fs::create_dir_all(home.join("Maildir")).expect("mkdir Maildir");
        for dir in [home.clone(), home.join("Maildir")] {
            std::os::unix::fs::lchown(&dir, Some(self.uid), Some(self.gid)).expect("chown");
        }
    }

    /// A 2.3 settings file for one backend; `extra` lines go at the end.
    /// Not run as root, the LISTINDEX roots belong to the test's user, who
    /// is then named as the mail user (for `check`).
    fn write_conf(&self, name: &str, shm: &str, host: &str, extra: &str) -> PathBuf {
        let mail_uid = self.mail_uid_line();
        let text = format!(
            "mail_location = maildir:~/Maildir:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index\n\
             nfs_hostchange_hostname = {host}\nnfs_hostchange_log = stderr\n{mail_uid}{extra}",
            self.path(shm).display()
        );
        self.write(name, &text)
    }

    /// `mail_uid = UID` when not run as root, else nothing.
    fn mail_uid_line(&self) -> String {
        if running_as_root() {
            String::new()
        } else {
            format!("mail_uid = {}\n", self.uid)
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).expect("write file");
        path
    }

    /// `postlogin` for `user` as script-login runs it; the command is
    /// /bin/true.
    fn login(&self, conf: &str, user: &str) {
        let home = self.path(&format!("nfs/{user}"));
        let out = Command::new(BIN)
            .env_clear()
            .env("USER", user)
            .env("HOME", &home)
            .env("UID", self.uid.to_string())
            .env("GID", self.gid.to_string())
            .args(["postlogin", "--config"])
            .arg(self.path(conf))
            .arg("/bin/true")
            .output()
            .expect("run postlogin");
        assert!(
            out.status.success(),
            "postlogin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the program with `args`, a cleared environment and `path`.
    fn run(&self, path: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .env_clear()
            .env("PATH", path)
            .current_dir(&self.root)
            .args(args)
            .output()
            .expect("run nfs-hostchange")
    }

    fn show(&self, conf: &str, user: &str, extra: &[&str]) -> (i32, String) {
        let conf = self.path(conf);
        let home = self.path(&format!("nfs/{user}"));
        let mut args = vec![
            "show",
            user,
            "--config",
            conf.to_str().expect("utf-8 path"),
            "--home",
            home.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let out = self.run(SYSTEM_PATH, &args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
    }

    /// The LISTINDEX directory of bob on one backend (`%2.256Nu` is `ca`).
    fn bob_listindex(&self, shm: &str) -> PathBuf {
        self.path(&format!("{shm}/ca/bob"))
    }
}

/// The `verdict` line of `show`'s text output.
fn verdict_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("verdict"))
        .unwrap_or_else(|| panic!("no verdict in:\n{text}"))
}

// ---------------------------------------------------------------------------
// show

#[test]
fn show_follows_the_login_verdicts() {
    let t = Tree::new();

    // Never logged in here.
    let (code, out) = t.show("a.conf", "bob", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        verdict_line(&out).contains("would drop: no record"),
        "{out}"
    );
    assert!(out.contains("LISTINDEX does not exist"), "{out}");
    assert!(
        !t.path("shmA/ca").exists(),
        "show created the LISTINDEX directory"
    );

    // After a login on A: current, with the stamp and the paths.
    t.login("a.conf", "bob");
    fs::write(t.bob_listindex("shmA").join("dovecot.list.index"), b"12345").expect("write");
    let (code, out) = t.show("a.conf", "bob", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(verdict_line(&out).contains("current"), "{out}");
    assert!(out.contains("record      backend-a, inode"), "{out}");
    assert!(out.contains("NFS stamp   backend-a, inode"), "{out}");
    assert!(
        out.contains("1 file, 5 bytes: dovecot.list.index 5"),
        "{out}"
    );
    assert!(out.contains("s ago ("), "{out}");
    assert!(
        out.contains(&format!(
            "LISTINDEX   {}",
            t.bob_listindex("shmA").display()
        )),
        "{out}"
    );

    // Backend B serves the user: A would drop.
    t.login("b.conf", "bob");
    let (_, out) = t.show("a.conf", "bob", &[]);
    assert!(
        verdict_line(&out).contains("would drop: INDEX/.lasthost changed")
            && verdict_line(&out).contains("backend-b"),
        "{out}"
    );

    // A corrupt record is never trusted.
    fs::write(t.bob_listindex("shmB").join(".lasthost"), b"garbage").expect("write");
    let (_, out) = t.show("b.conf", "bob", &[]);
    assert!(verdict_line(&out).contains("not valid"), "{out}");

    // Migration: a backend without nfs-hostchange left INDEX/PREFIX.log.
    t.write_conf(
        "m.conf",
        "shmA",
        "backend-a",
        "nfs_hostchange_migration = yes\n",
    );
    fs::write(t.path("nfs/bob/Maildir/dovecot.list.index.log"), b"log").expect("write");
    let (_, out) = t.show("m.conf", "bob", &[]);
    assert!(verdict_line(&out).contains("migration pending"), "{out}");
    assert!(
        out.contains("migration   on; INDEX/PREFIX.log exists"),
        "{out}"
    );
}

#[test]
fn show_json_is_one_valid_object() {
    let t = Tree::new();
    t.login("a.conf", "bob");
    let (code, out) = t.show("a.conf", "bob", &["--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    json::check(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for needle in [
        "\"verdict\":\"current\"",
        "\"setting\":\"mail_location\"",
        "\"syntax\":\"2.3\"",
        "\"record\":{\"state\":\"valid\",\"host\":\"backend-a\"",
        "\"migration\":null",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }

    // Names that need escaping stay valid JSON.
    let odd = "we\"ird\\us\u{1}er";
    t.user_dir(odd);
    let (code, out) = t.show("a.conf", odd, &["--json"]);
    assert_eq!(code, 0, "{out}");
    json::check(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(out.contains("\"verdict\":\"would drop\""), "{out}");
    assert!(out.contains("\"last_login\":null"), "{out}");
}

#[test]
fn show_reports_bad_settings_and_usage() {
    let t = Tree::new();
    let conf = t.path("a.conf");
    let conf = conf.to_str().expect("utf-8");
    let out = t.run(SYSTEM_PATH, &["show", "bob", "--config", conf]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--home DIR"),
        "{:?}",
        out
    );
    let bad = t.write("bad.conf", "mail_location = maildir:~/M:LISTINDEX=rel/x\n");
    let out = t.run(
        SYSTEM_PATH,
        &[
            "show",
            "bob",
            "--home",
            "/h",
            "--config",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("relative"));
    for args in [
        &["show"][..],
        &["show", "a", "b"],
        &["show", "--bogus", "a"],
    ] {
        assert_eq!(t.run(SYSTEM_PATH, args).status.code(), Some(2), "{args:?}");
    }
}

/// Everything below `root`: path → (dev, ino, mode, uid, size, atime,
/// mtime, ctime), symlinks not followed. Directories are listed through
/// O_NOATIME descriptors, so taking a snapshot changes no atime itself.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, [i64; 11]> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let m = fs::symlink_metadata(&path).expect("lstat");
        out.insert(
            path.clone(),
            [
                m.dev() as i64,
                m.ino() as i64,
                i64::from(m.mode()),
                i64::from(m.uid()),
                m.size() as i64,
                m.atime(),
                m.atime_nsec(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ],
        );
        if m.is_dir() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_NOATIME;
            let mut dir = Dir::open(&path, flags, Mode::empty()).expect("open directory");
            for entry in dir.iter() {
                let entry = entry.expect("readdir");
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    stack.push(path.join(OsStr::from_bytes(name)));
                }
            }
        }
    }
    out
}

/// Sets every atime below `root` two days back and every mtime three days
/// back, so that any read would move an atime even under relatime.
fn age_everything(root: &Path) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let atime = TimeSpec::new(now - 2 * 86_400, 0);
    let mtime = TimeSpec::new(now - 3 * 86_400, 0);
    for path in snapshot(root).keys() {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path.as_path(),
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
    }
}

/// `show` changes no timestamp, creates nothing, and removes nothing, for
/// a user with a full cache, a user never seen, and with migration on.
#[test]
fn show_changes_nothing() {
    let t = Tree::new();
    t.login("a.conf", "bob");
    t.login("b.conf", "bob");
    t.login("a.conf", "bob");
    let li = t.bob_listindex("shmA");
    for name in ["dovecot.list.index", "dovecot.list.index.log"] {
        fs::write(li.join(name), b"list index").expect("write");
        std::os::unix::fs::lchown(li.join(name), Some(t.uid), Some(t.gid)).expect("chown");
    }
    fs::write(t.path("nfs/bob/Maildir/dovecot.list.index.log"), b"nfs").expect("write");
    t.write_conf(
        "m.conf",
        "shmA",
        "backend-a",
        "nfs_hostchange_migration = yes\n",
    );
    t.user_dir("carol");
    age_everything(&t.root);

    // Is this file system one where reading moves atime at all?
    let probe = t.path("probe");
    fs::write(&probe, b"x").expect("write probe");
    age_everything(&probe);
    let before_probe = fs::metadata(&probe).expect("stat").atime();
    let _ = fs::read(&probe).expect("read probe");
    if fs::metadata(&probe).expect("stat").atime() == before_probe {
        eprintln!("note: reads do not update atime here (noatime?): the atime part proves less");
    }
    fs::remove_file(&probe).expect("remove probe");

    let before = snapshot(&t.root);
    for (conf, user) in [
        ("a.conf", "bob"),
        ("b.conf", "bob"),
        ("m.conf", "bob"),
        ("a.conf", "carol"),
    ] {
        for extra in [&[][..], &["--json"]] {
            let (code, out) = t.show(conf, user, extra);
            assert_eq!(code, 0, "{out}");
        }
    }
    let conf = t.path("a.conf");
    let out = t.run(
        SYSTEM_PATH_WITHOUT_DOVECONF,
        &["check", "--config", conf.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = snapshot(&t.root);
    let appeared: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let vanished: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    assert!(appeared.is_empty(), "show created {appeared:?}");
    assert!(vanished.is_empty(), "show removed {vanished:?}");
    for (path, old) in &before {
        assert_eq!(
            Some(old),
            after.get(path),
            "{} changed (dev ino mode uid size atime mtime ctime)",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// check

/// A stand-in doveconf: answers `-n` with a version line and `-h NAME`
/// from `values`, and logs every argument list to `bin/doveconf.log`.
fn fake_doveconf(t: &Tree, version: &str, values: &[(&str, &str)]) -> String {
    let bin = t.path("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    let log = bin.join("doveconf.log");
    let mut script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\n\
         while [ $# -gt 0 ]; do case \"$1\" in -c) shift;; -n) echo '# {version} (0123456789): conf';\
         echo 'passdb {{'; echo '  driver = pam'; echo '}}'; exit 0;; -h) shift; break;; esac; shift; done\n\
         case \"$1\" in\n",
        log.display()
    );
    for (name, value) in values {
        script.push_str(&format!("  '{name}') printf '%s\\n' '{value}';;\n"));
    }
    script.push_str("  *) echo;;\nesac\n");
    let path = bin.join("doveconf");
    fs::write(&path, script).expect("write doveconf");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    format!("{}:{SYSTEM_PATH}", bin.display())
}

/// dovecot.conf values of a backend set up as the README says.
fn dovecot_values(location_key: &str, location: &str, postlogin: &str) -> Vec<(String, String)> {
    vec![
        (location_key.to_string(), location.to_string()),
        ("mailbox_list_index".into(), "yes".into()),
        ("mailbox_list_index_very_dirty_syncs".into(), "yes".into()),
        ("protocols".into(), "imap pop3".into()),
        (
            "service/imap/executable".into(),
            "imap imap-postlogin".into(),
        ),
        (
            "service/pop3/executable".into(),
            "pop3 pop3-postlogin".into(),
        ),
        ("service/imap-postlogin/executable".into(), postlogin.into()),
        ("service/pop3-postlogin/executable".into(), postlogin.into()),
    ]
}

fn check(t: &Tree, path: &str, conf: &Path) -> (i32, String) {
    let dovecot_conf = t.write("dovecot.conf", "# read by the stand-in only\n");
    let out = t.run(
        path,
        &[
            "check",
            "--config",
            conf.to_str().expect("utf-8"),
            "--dovecot-config",
            dovecot_conf.to_str().expect("utf-8"),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn location_of(t: &Tree, conf: &str) -> String {
    let text = fs::read_to_string(t.path(conf)).expect("read conf");
    let line = text.lines().next().expect("first line");
    line.split_once(" = ").expect("key = value").1.to_string()
}

const WITH_D: &str = "script-login -d /usr/local/bin/nfs-hostchange postlogin";

#[test]
fn check_all_well_and_doveconf_gets_the_config_file() {
    let t = Tree::new();
    let values = dovecot_values("mail_location", &location_of(&t, "a.conf"), WITH_D);
    let refs: Vec<(&str, &str)> = values
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let path = fake_doveconf(&t, "2.3.19.1", &refs);
    let (code, out) = check(&t, &path, &t.path("a.conf"));
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("all well\n"), "{out}");
    assert!(
        out.contains("ok       mail_location is the same in dovecot.conf"),
        "{out}"
    );
    assert!(
        out.contains("imap logins run nfs-hostchange postlogin"),
        "{out}"
    );
    let log = fs::read_to_string(t.path("bin/doveconf.log")).expect("doveconf log");
    let dovecot_conf = t.path("dovecot.conf");
    for line in log.lines() {
        assert!(
            line.starts_with(&format!("-c {} ", dovecot_conf.display())),
            "doveconf ran without -c: {line}"
        );
    }
}

#[test]
fn check_finds_drift_and_risky_services() {
    let t = Tree::new();

    // mail_location differs, and pop3's script-login has no -d.
    let mut values = dovecot_values("mail_location", "maildir:~/Maildir", WITH_D);
    values[7].1 = "script-login /usr/local/bin/nfs-hostchange postlogin".into();
    let refs: Vec<(&str, &str)> = values
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let path = fake_doveconf(&t, "2.3.19.1", &refs);
    let (code, out) = check(&t, &path, &t.path("a.conf"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error    mail_location differs from dovecot.conf"),
        "{out}"
    );
    assert!(
        out.contains("warning  service pop3-postlogin runs script-login without -d"),
        "{out}"
    );

    // No post-login wrapper at all, with very dirty syncs.
    let values = dovecot_values(
        "mail_location",
        &location_of(&t, "a.conf"),
        "script-login -d /usr/bin/env",
    );
    let refs: Vec<(&str, &str)> = values
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let path = fake_doveconf(&t, "2.3.19.1", &refs);
    let (code, out) = check(&t, &path, &t.path("a.conf"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("imap logins do not run nfs-hostchange postlogin, and")
            && out.contains("very_dirty_syncs = yes"),
        "{out}"
    );

    // 2.3 settings against a Dovecot 2.4.
    let values = dovecot_values("mail_path", "~/Maildir", WITH_D);
    let refs: Vec<(&str, &str)> = values
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let path = fake_doveconf(&t, "2.4.1", &refs);
    let (code, out) = check(&t, &path, &t.path("a.conf"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Dovecot 2.4.1 has no mail_location"), "{out}");
}

#[test]
fn check_dovecot_24_settings() {
    let t = Tree::new();
    let prefix = format!(
        "{}/%{{user | md5 | substr(0, 8) % 256 | hex(2)}}/%{{user}}/dovecot.list.index",
        t.path("shmA").display()
    );
    let conf = t.write(
        "c24.conf",
        &format!(
            "dovecot_config_version = 2.4.1\nmail_driver = maildir\nmail_path = ~/Maildir\n\
             mailbox_list_index_prefix = {prefix}\nnfs_hostchange_hostname = backend-a\n{}",
            t.mail_uid_line()
        ),
    );
    let mut values = dovecot_values("mail_path", "~/Maildir", WITH_D);
    values.push(("mail_driver".into(), "maildir".into()));
    values.push(("mail_index_path".into(), String::new()));
    values.push(("mailbox_list_index_prefix".into(), prefix.clone()));
    let refs: Vec<(&str, &str)> = values
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let path = fake_doveconf(&t, "2.4.1", &refs);
    let (code, out) = check(&t, &path, &conf);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("read in Dovecot 2.4 syntax"), "{out}");
    assert!(
        out.contains("ok       mailbox_list_index_prefix is the same"),
        "{out}"
    );

    // The same against Dovecot 2.3, and with a leftover %u.
    let path = fake_doveconf(&t, "2.3.19.1", &refs);
    let (code, out) = check(&t, &path, &conf);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Dovecot 2.3.19.1 has no mail_path"), "{out}");
    let leftover = t.write(
        "old.conf",
        &format!(
            "mail_path = ~/Maildir\nmailbox_list_index_prefix = {}/%{{user | md5}}/%u/x\n",
            t.path("shmA").display()
        ),
    );
    let (code, out) = check(&t, SYSTEM_PATH_WITHOUT_DOVECONF, &leftover);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("contains %u, which Dovecot 2.4 does not expand"),
        "{out}"
    );
}

/// A PATH where no doveconf can be: the test's own empty directory.
const SYSTEM_PATH_WITHOUT_DOVECONF: &str = "/nonexistent-nfs-hostchange-test";

#[test]
fn check_settings_and_root_problems() {
    let t = Tree::new();
    let shm = t.path("shmA");
    let cases = [
        (
            "mail_location = maildir:~/M:LISTINDEX=rel/%u/x\n".to_string(),
            "relative path",
        ),
        (
            format!(
                "mail_location = maildir:~/M:INDEX=MEMORY:LISTINDEX={}/%u/x\n",
                shm.display()
            ),
            "INDEX=MEMORY",
        ),
        (
            format!(
                "mail_location = maildir:~/M:LISTINDEX={}/all/x\n",
                shm.display()
            ),
            "share one list index",
        ),
        (
            format!(
                "mail_location = maildir:~/M:LISTINDEX={}/%{{user | md5}}/x\n",
                shm.display()
            ),
            "looks like Dovecot 2.4 syntax",
        ),
        (
            "nfs_hostchange_migration = maybe\n".to_string(),
            "yes or no",
        ),
    ];
    for (text, needle) in cases {
        let conf = t.write("case.conf", &text);
        let (code, out) = check(&t, SYSTEM_PATH_WITHOUT_DOVECONF, &conf);
        assert_eq!(code, 1, "{text}: {out}");
        assert!(out.contains("error    "), "{text}: {out}");
        assert!(out.contains(needle), "{needle}: {out}");
    }

    // Without doveconf, a good set-up is all well (with a note).
    let (code, out) = check(&t, SYSTEM_PATH_WITHOUT_DOVECONF, &t.path("a.conf"));
    assert_eq!(code, 1, "--dovecot-config without doveconf warns: {out}");
    assert!(out.contains("doveconf is not on PATH"), "{out}");
    let out = t.run(
        SYSTEM_PATH_WITHOUT_DOVECONF,
        &[
            "check",
            "--config",
            t.path("a.conf").to_str().expect("utf-8"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("note     doveconf is not on PATH"), "{text}");

    // The root: writable by others without the sticky bit, then missing.
    fs::set_permissions(&shm, fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, out) = check(&t, SYSTEM_PATH_WITHOUT_DOVECONF, &t.path("a.conf"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("without the sticky bit, so logins refuse it"),
        "{out}"
    );
    fs::remove_dir(&shm).expect("rmdir");
    let (code, out) = check(&t, SYSTEM_PATH_WITHOUT_DOVECONF, &t.path("a.conf"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not exist: the first login creates it"),
        "{out}"
    );

    // Bad usage.
    for args in [
        &["check", "extra"][..],
        &["check", "--bogus"],
        &["check", "--config"],
    ] {
        assert_eq!(t.run(SYSTEM_PATH, args).status.code(), Some(2), "{args:?}");
    }
}

/// The real doveconf (Dovecot 2.3 in CI) on a dovecot.conf this test
/// writes. Skipped when there is no doveconf, except under CI=true.
#[test]
fn check_with_the_real_doveconf() {
    let Some(real) = ["/usr/bin/doveconf", "/usr/sbin/doveconf"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but doveconf is missing (bash scripts/install-deps installs it)"
        );
        eprintln!("SKIPPED check_with_the_real_doveconf: no doveconf");
        return;
    };
    let t = Tree::new();
    let bin = t.path("bin");
    fs::create_dir(&bin).expect("mkdir bin");
    std::os::unix::fs::symlink(real, bin.join("doveconf")).expect("symlink doveconf");
    let location = location_of(&t, "a.conf");
    let dovecot_conf = t.write(
        "dovecot.conf",
        &format!(
            "protocols = imap\nmail_location = {location}\nmailbox_list_index = yes\n\
             mailbox_list_index_very_dirty_syncs = yes\n\
             service imap {{\n  executable = imap imap-postlogin\n}}\n\
             service imap-postlogin {{\n  executable = {WITH_D}\n  unix_listener imap-postlogin {{\n  }}\n}}\n"
        ),
    );
    let run = |conf: &Path| {
        let out = t.run(
            &bin.display().to_string(),
            &[
                "check",
                "--config",
                conf.to_str().expect("utf-8"),
                "--dovecot-config",
                dovecot_conf.to_str().expect("utf-8"),
            ],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&t.path("a.conf"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Dovecot 2.3") || out.contains("Dovecot 2.4"),
        "{out}"
    );
    assert!(out.contains("ok       mail_location is the same"), "{out}");
    let drifted = t.write(
        "drift.conf",
        &format!(
            "mail_location = maildir:~/Other:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index\n",
            t.path("shmA").display()
        ),
    );
    let (code, out) = run(&drifted);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mail_location differs"), "{out}");
}

// ---------------------------------------------------------------------------
// Help and the man page

#[test]
fn every_subcommand_has_help_with_examples() {
    let t = Tree::new();
    for sub in ["postlogin", "show", "check"] {
        let out = t.run(SYSTEM_PATH, &[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(
            text.starts_with(&format!("usage: nfs-hostchange {sub}")),
            "{text}"
        );
        assert!(text.contains("\nexamples:\n"), "{sub}: {text}");
        assert!(text.contains("\nexit status:\n"), "{sub}: {text}");
    }
    for sub in ["postlogin", "usercache", "show", "check"] {
        let out = t.run(SYSTEM_PATH, &["help", sub]);
        assert_eq!(out.status.code(), Some(0), "help {sub}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("\nexamples:\n"));
    }
    assert_eq!(
        t.run(SYSTEM_PATH, &["help", "nope"]).status.code(),
        Some(64)
    );
    let overview = t.run(SYSTEM_PATH, &["--help"]);
    let text = String::from_utf8_lossy(&overview.stdout);
    for sub in ["show USER", "check [--config FILE]", "help [SUBCOMMAND"] {
        assert!(text.contains(sub), "{sub} in {text}");
    }
}

/// man/nfs-hostchange.1 is what `help --man` writes: regenerate it with
/// `cargo run -- help --man > man/nfs-hostchange.1` after changing a help text.
#[test]
fn man_page_is_generated_from_the_help_text() {
    let t = Tree::new();
    let out = t.run(SYSTEM_PATH, &["help", "--man"]);
    assert_eq!(out.status.code(), Some(0));
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let committed = fs::read_to_string(MAN_PAGE).expect("read man/nfs-hostchange.1");
    assert!(
        generated == committed,
        "man/nfs-hostchange.1 is out of date: run `cargo run -- help --man > man/nfs-hostchange.1`"
    );
    // Every subcommand's help text is in it.
    for sub in ["postlogin", "usercache", "show", "check"] {
        assert!(committed.contains(&format!(".SS {sub}\n")), "{sub}");
    }
}

// ---------------------------------------------------------------------------
// Dovecot 2.4 templates

/// The TSV file's user column.
fn tsv_users() -> Vec<Vec<u8>> {
    let data = fs::read(TSV).expect("read dovecot-var-expand.tsv");
    let users: Vec<Vec<u8>> = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .skip(1)
        .map(|l| l.split(|&b| b == b'\t').next().unwrap_or_default().to_vec())
        .collect();
    assert_eq!(users.len(), 15, "users in the TSV file");
    users
}

/// A layout in both syntaxes: (LISTINDEX directory below /l, INDEX below
/// /idx), in 2.3 and in 2.4 form.
const LAYOUTS: [(&str, &str, &str, &str); 4] = [
    (
        "%2.256Nu/%u",
        "%2.256Nu/%u",
        "%{user | md5 | substr(0, 8) % 256 | hex(2)}/%{user}",
        "%{user | md5 | substr(0, 8) % 256 | hex(2)}/%{user}",
    ),
    (
        "%1Mu/%2.1Mu/%u",
        "%1Mu/%2.1Mu/%u",
        "%{user | md5 | hexlify(1)}/%{user | md5 | hexlify | substr(2,1)}/%{user}",
        "%{user | md5 | hexlify(1)}/%{user | md5 | hexlify | substr(2,1)}/%{user}",
    ),
    (
        "%Ln/%d",
        "%d/%n",
        "%{user | username | lower}/%{user | domain}",
        "%{user | domain}/%{user | username}",
    ),
    (
        "%256Nu/%3.1024Nu/%Lu",
        "%Mu",
        "%{user | md5 | substr(0, 8) % 256 | hex}/%{user | md5 | substr(0, 8) % 1024 | hex(3)}/%{user | lower}",
        "%{user | md5}",
    ),
];

/// The 2.3 and 2.4 forms of the same layout give the same INDEX, LISTINDEX
/// and prefix for every user Dovecot expanded in the TSV file (or refuse
/// the same users).
#[test]
fn dovecot_23_and_24_forms_give_the_same_paths() {
    let mut compared = 0;
    for (list23, index23, list24, index24) in LAYOUTS {
        let location = format!(
            "maildir:~/Maildir:INDEX=/idx/{index23}:LISTINDEX=/l/{list23}/dovecot.list.index"
        );
        let mail_index_path = format!("/idx/{index24}");
        let prefix = format!("/l/{list24}/dovecot.list.index");
        let set = Settings24 {
            mail_path: Some(b"~/Maildir"),
            mail_index_path: Some(mail_index_path.as_bytes()),
            mailbox_list_index_prefix: Some(prefix.as_bytes()),
        };
        assert_eq!(
            mail_location::layout(location.as_bytes()),
            mail_location::layout_24(&set),
            "{list23}"
        );
        for user in tsv_users() {
            let vars = Vars {
                user: &user,
                home: Some(b"/home/u"),
                uid: None,
                gid: None,
                local_ip: None,
                remote_ip: None,
            };
            let old = mail_location::resolve(location.as_bytes(), &vars);
            let new = mail_location::resolve_24(&set, &vars);
            let shown = String::from_utf8_lossy(&user);
            match (&old, &new) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{list23} for {shown}"),
                (Err(PathError::Refused(_)), Err(PathError::Refused(_))) => {}
                _ => panic!("{list23} for {shown}: 2.3 {old:?}, 2.4 {new:?}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 4 * 15);
}

/// A login with Dovecot 2.4 settings puts bob's record where the 2.3
/// settings do, and `show` reads it back as current.
#[test]
fn login_and_show_with_dovecot_24_settings() {
    let t = Tree::new();
    t.write(
        "c24.conf",
        &format!(
            "mail_path = ~/Maildir\n\
             mailbox_list_index_prefix = {}/%{{user | md5 | substr(0, 8) % 256 | hex(2)}}/%{{user}}/dovecot.list.index\n\
             nfs_hostchange_hostname = backend-a\nnfs_hostchange_log = stderr\n",
            t.path("shmA").display()
        ),
    );
    t.login("c24.conf", "bob");
    assert!(t.bob_listindex("shmA").join(".lasthost").is_file());
    let (code, out) = t.show("c24.conf", "bob", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(mail_path, Dovecot 2.4 syntax)"), "{out}");
    assert!(verdict_line(&out).contains("current"), "{out}");
    let (_, out23) = t.show("a.conf", "bob", &[]);
    assert!(verdict_line(&out23).contains("current"), "{out23}");
}

/// A small JSON syntax checker, enough to show that `show --json` writes
/// one well-formed object.
mod json {
    pub fn check(text: &str) -> Result<(), String> {
        let bytes = text.trim_end().as_bytes();
        let mut p = Parser { s: bytes, i: 0 };
        p.ws();
        if p.peek() != Some(b'{') {
            return Err("not an object".into());
        }
        p.value()?;
        p.ws();
        if p.i != bytes.len() {
            return Err(format!("trailing data at {}", p.i));
        }
        Ok(())
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
                self.i += 1;
            }
        }

        fn eat(&mut self, b: u8) -> Result<(), String> {
            self.ws();
            if self.peek() == Some(b) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", b as char, self.i))
            }
        }

        fn value(&mut self) -> Result<(), String> {
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.ws();
                        self.string()?;
                        self.eat(b':')?;
                        self.value()?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(());
                            }
                            _ => return Err(format!("bad object at {}", self.i)),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.value()?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(());
                            }
                            _ => return Err(format!("bad array at {}", self.i)),
                        }
                    }
                }
                Some(b'"') => self.string(),
                Some(b'-' | b'0'..=b'9') => {
                    self.i += 1;
                    while matches!(self.peek(), Some(b'0'..=b'9')) {
                        self.i += 1;
                    }
                    Ok(())
                }
                _ => {
                    for word in [&b"true"[..], b"false", b"null"] {
                        if self.s[self.i..].starts_with(word) {
                            self.i += word.len();
                            return Ok(());
                        }
                    }
                    Err(format!("bad value at {}", self.i))
                }
            }
        }

        fn string(&mut self) -> Result<(), String> {
            if self.peek() != Some(b'"') {
                return Err(format!("expected a string at {}", self.i));
            }
            self.i += 1;
            while let Some(b) = self.peek() {
                self.i += 1;
                match b {
                    b'"' => return Ok(()),
                    b'\\' => match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.s.get(self.i + 1..self.i + 5).ok_or("short \\u")?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(format!("bad \\u at {}", self.i));
                            }
                            self.i += 5;
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    },
                    0..=0x1f => return Err(format!("raw control character at {}", self.i)),
                    _ => {}
                }
            }
            Err("unterminated string".into())
        }
    }
}
