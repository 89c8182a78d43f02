//! Migration mode (`nfs_hostchange_migration = yes`), driven through the
//! built binary exactly as Dovecot's script-login runs it: a cleared
//! environment with USER, HOME, UID and GID, then `postlogin --config FILE
//! /bin/true`. Log lines go to stderr (`nfs_hostchange_log = stderr`).
//!
//! The "NFS" side is a plain directory: INDEX is `<tmp>/store/<user>/Maildir`
//! and LISTINDEX is `<tmp>/listindex/<user>`. Run as root (as here and in
//! CI), the binary acts as the test user, so the tree belongs to that user.
//!
//! Root-only parts (the tmpfs for ENOSPC) and strace-only parts skip with a
//! notice when unavailable, unless CI=true, where they fail.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_nfs-hostchange");
const USER: &str = "carol";
const HOST_A: &str = "backend-a";
const PREFIX: &str = "dovecot.list.index";
const LASTHOST: &str = ".lasthost";
/// The suffix of a copy in progress (src/migrate.rs).
const COPY_SUFFIX: &str = ".nfs-hostchange-copy";
/// The unprivileged user the real-Dovecot tests use too.
const TEST_USER: &str = "nfshc-test";

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns false) with a notice, or fails when CI=true.
fn skip_unless_ci(test: &str, why: &str) -> bool {
    if in_ci() {
        panic!("{test}: {why}, and CI=true requires this test to run");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The uid and gid the binary acts as (and that owns the tree): the test
/// user (or nobody) as root, else the current user.
fn ids() -> (u32, u32) {
    if !is_root() {
        // SAFETY: getuid and getgid have no arguments and cannot fail.
        return unsafe { (libc::getuid(), libc::getgid()) };
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => (uid, gid),
        _ => (65534, 65534),
    }
}

/// Content with a recognisable pattern, `len` bytes long.
fn pattern(tag: &str, len: usize) -> Vec<u8> {
    tag.bytes()
        .chain(b" ".iter().copied())
        .cycle()
        .take(len)
        .collect()
}

/// One user's INDEX and LISTINDEX in a scratch directory, with a settings
/// file for backend A.
struct Fixture {
    // Kept for its Drop (removes the tree).
    _dir: tempfile::TempDir,
    root: PathBuf,
    uid: u32,
    gid: u32,
    conf: PathBuf,
    home: PathBuf,
    index: PathBuf,
    listindex_root: PathBuf,
    listindex: PathBuf,
}

impl Fixture {
    /// The tree with INDEX (an existing Maildir) and the LISTINDEX root,
    /// and a settings file with migration `migration`.
    fn new(migration: bool) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("nfshc-mig-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let (uid, gid) = ids();
        let home = root.join("store").join(USER);
        let index = home.join("Maildir");
        let listindex_root = root.join("listindex");
        let listindex = listindex_root.join(USER);
        let f = Fixture {
            _dir: dir,
            uid,
            gid,
            conf: root.join("nfs-hostchange.conf"),
            home,
            index,
            listindex_root,
            listindex,
            root,
        };
        f.mkdir(&f.root.join("store"), 0o755);
        f.mkdir(&f.home, 0o700);
        f.mkdir(&f.index, 0o700);
        for sub in ["cur", "new", "tmp"] {
            f.mkdir(&f.index.join(sub), 0o700);
        }
        f.mkdir(&f.listindex_root, 0o755);
        f.write_conf(migration);
        f
    }

    fn write_conf(&self, migration: bool) {
        let text = format!(
            "mail_location = maildir:~/Maildir:LISTINDEX={}/%u/{PREFIX}\n\
             nfs_hostchange_migration = {}\n\
             nfs_hostchange_hostname = {HOST_A}\n\
             nfs_hostchange_log = stderr\n",
            self.listindex_root.display(),
            if migration { "yes" } else { "no" }
        );
        fs::write(&self.conf, text).expect("writing the settings");
        fs::set_permissions(&self.conf, fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// Creates a directory owned by the user.
    fn mkdir(&self, path: &Path, mode: u32) {
        fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.own(path, mode);
    }

    /// Writes a file owned by the user (mode 0600).
    fn write(&self, path: &Path, content: &[u8]) {
        fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.own(path, 0o600);
    }

    fn own(&self, path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        if is_root() {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).expect("chown");
        }
    }

    /// The NFS list index an old backend leaves: the index, its log and a
    /// rotated log.
    fn old_backend_list_index(&self, tag: &str) -> BTreeMap<String, Vec<u8>> {
        let files: BTreeMap<String, Vec<u8>> = [
            (PREFIX.to_string(), pattern(&format!("{tag} index"), 3000)),
            (
                format!("{PREFIX}.log"),
                pattern(&format!("{tag} log"), 1500),
            ),
            (
                format!("{PREFIX}.log.2"),
                pattern(&format!("{tag} log2"), 700),
            ),
        ]
        .into_iter()
        .collect();
        for (name, content) in &files {
            self.write(&self.index.join(name), content);
        }
        files
    }

    /// A stale list index in LISTINDEX, with a rotated log the NFS copy
    /// does not have.
    fn stale_local_list_index(&self) {
        if !self.listindex.exists() {
            self.mkdir(&self.listindex, 0o700);
        }
        for (name, len) in [
            (PREFIX.to_string(), 100),
            (format!("{PREFIX}.log"), 200),
            (format!("{PREFIX}.log.2"), 300),
        ] {
            self.write(&self.listindex.join(name), &pattern("stale local", len));
        }
    }

    /// Runs `postlogin` as script-login would, with `extra` variables.
    fn login_with(&self, extra: &[(&str, &str)]) -> Login {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("USER", USER)
            .env("HOME", &self.home)
            .env("UID", self.uid.to_string())
            .env("GID", self.gid.to_string())
            .args(["postlogin", "--config"])
            .arg(&self.conf)
            .arg("/bin/true");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Login::from(cmd.output().expect("running nfs-hostchange"))
    }

    fn login(&self) -> Login {
        self.login_with(&[])
    }

    /// `dovecot.list.index*` in `dir`: name -> content.
    fn list_index_in(&self, dir: &Path) -> BTreeMap<String, Vec<u8>> {
        entries(dir)
            .into_iter()
            .filter(|n| n.starts_with(PREFIX))
            .map(|n| {
                let content = fs::read(dir.join(&n)).expect("reading a list index file");
                (n, content)
            })
            .collect()
    }

    fn record(&self) -> Vec<u8> {
        fs::read(self.listindex.join(LASTHOST)).expect("reading the local record")
    }

    /// Asserts that the local record is valid: it holds INDEX/.lasthost's
    /// inode, mtime and content, as src/record.rs encodes them.
    fn assert_valid_record(&self) {
        let record = String::from_utf8(self.record()).expect("record is UTF-8");
        let stamp_path = self.index.join(LASTHOST);
        let meta = fs::metadata(&stamp_path).expect("INDEX/.lasthost exists");
        let content = fs::read(&stamp_path).expect("reading INDEX/.lasthost");
        assert!(
            content.starts_with(format!("{HOST_A} ").as_bytes()),
            "INDEX/.lasthost names {HOST_A}: {:?}",
            String::from_utf8_lossy(&content)
        );
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        let expected = format!(
            "nfs-hostchange-record 1\nino {}\nmtime {}.{:09}\ncontent {hex}\n",
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        assert_eq!(record, expected, "the local record matches INDEX/.lasthost");
    }
}

/// What one run of the binary gave.
struct Login {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl From<Output> for Login {
    fn from(out: Output) -> Login {
        Login {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Login {
    /// The command ran (exit status of /bin/true) and nothing reached stdout.
    fn assert_ran(&self) {
        assert_eq!(
            self.status.code(),
            Some(0),
            "the command must run whatever happened; stderr:\n{}",
            self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {:?}", self.stdout);
    }

    fn lines(&self, level: &str) -> Vec<&str> {
        let tag = format!(": {level}: ");
        self.stderr.lines().filter(|l| l.contains(&tag)).collect()
    }

    fn assert_no_errors(&self) {
        let bad: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.contains(": Error: ") || l.contains(": Warning: "))
            .collect();
        assert!(bad.is_empty(), "unexpected lines:\n{}", self.stderr);
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("readdir")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("readdir {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Every entry below `dir` with its content (files), inode and mtime, so
/// that a comparison sees any change.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    content: Option<Vec<u8>>,
    ino: u64,
    mtime: (i64, i64),
    mode: u32,
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for name in entries(&d) {
            let path = d.join(name);
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let content = if meta.is_file() {
                Some(fs::read(&path).expect("read"))
            } else {
                None
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path,
                Entry {
                    content,
                    ino: meta.ino(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    mode: meta.mode(),
                },
            );
        }
    }
    out
}

fn total_bytes(files: &BTreeMap<String, Vec<u8>>) -> usize {
    files.values().map(Vec::len).sum()
}

/// The Info line a migration logs: how many files and bytes, from where.
fn assert_migration_line(login: &Login, f: &Fixture, files: &BTreeMap<String, Vec<u8>>) -> String {
    let info = login.lines("Info");
    let wanted = format!("({} files, {} bytes)", files.len(), total_bytes(files));
    let line = info
        .iter()
        .find(|l| l.contains("migrated"))
        .unwrap_or_else(|| panic!("no Info line about the migration:\n{}", login.stderr));
    assert!(line.contains(&wanted), "{line:?} should say {wanted}");
    assert!(
        line.contains(&f.index.display().to_string()),
        "{line:?} should name INDEX {}",
        f.index.display()
    );
    assert!(
        line.contains(&f.listindex.display().to_string()),
        "{line:?} should name LISTINDEX {}",
        f.listindex.display()
    );
    line.to_string()
}

/// An NFS list index and a stale local one, no record yet (the first login
/// on A after migration was turned on): LISTINDEX ends up holding exactly
/// the NFS files, INDEX none of them.
#[test]
fn migration_replaces_stale_local_copy_with_nfs_list_index() {
    let f = Fixture::new(true);
    let nfs = f.old_backend_list_index("nfs");
    f.stale_local_list_index();
    // A stale log the NFS copy lacks: it must not survive next to the
    // migrated files.
    f.write(
        &f.listindex.join(format!("{PREFIX}.log.3")),
        b"stale local extra",
    );

    let login = f.login();
    login.assert_ran();
    login.assert_no_errors();

    assert_eq!(
        f.list_index_in(&f.listindex),
        nfs,
        "LISTINDEX must hold exactly the NFS list index (stale local files gone)"
    );
    assert!(
        f.list_index_in(&f.index).is_empty(),
        "INDEX still holds list index files: {:?}",
        entries(&f.index)
    );
    assert!(
        !entries(&f.listindex)
            .iter()
            .any(|n| n.ends_with(COPY_SUFFIX)),
        "temporary copies left: {:?}",
        entries(&f.listindex)
    );
    let line = assert_migration_line(&login, &f, &nfs);
    eprintln!("{line}");
    f.assert_valid_record();
    // Everything the login created belongs to the user, root or not.
    for (path, _) in snapshot(&f.listindex_root) {
        let owner = fs::symlink_metadata(&path).unwrap().uid();
        assert_eq!(owner, f.uid, "{} belongs to uid {owner}", path.display());
    }
}

/// After a migration, the next login on A is a steady-state login: nothing
/// changes on either side and nothing is logged.
#[test]
fn login_after_migration_changes_nothing() {
    let f = Fixture::new(true);
    let nfs = f.old_backend_list_index("nfs");
    f.stale_local_list_index();
    let first = f.login();
    first.assert_ran();
    assert_migration_line(&first, &f, &nfs);

    let index_before = snapshot(&f.index);
    let local_before = snapshot(&f.listindex);
    let record_before = f.record();
    let second = f.login();
    second.assert_ran();
    assert!(
        second.stderr.is_empty(),
        "steady-state login logged:\n{}",
        second.stderr
    );
    assert_eq!(snapshot(&f.index), index_before, "INDEX changed");
    assert_eq!(f.record(), record_before, "the record changed");
    // Only the record's times may change (every login touches it).
    let strip = |mut s: BTreeMap<PathBuf, Entry>| {
        if let Some(e) = s.get_mut(&f.listindex.join(LASTHOST)) {
            e.mtime = (0, 0);
        }
        s
    };
    assert_eq!(
        strip(snapshot(&f.listindex)),
        strip(local_before),
        "LISTINDEX changed"
    );
    assert_eq!(f.list_index_in(&f.listindex), nfs);
    f.assert_valid_record();
}

/// A valid record, then a backend without the wrapper writes the NFS list
/// index again: the next login on A replaces the local one with it.
#[test]
fn list_index_recreated_on_nfs_replaces_local_one() {
    let f = Fixture::new(true);
    let first = f.login();
    first.assert_ran();
    first.assert_no_errors();
    f.assert_valid_record();
    let record = f.record();

    // A's Dovecot built a local list index; then an old backend used (and
    // recreated) the one on NFS, without touching INDEX/.lasthost.
    f.stale_local_list_index();
    let nfs = f.old_backend_list_index("recreated");

    // Without the .log, the valid record would keep the local list index:
    // prove the record still matches before the login.
    assert_eq!(f.record(), record);
    let login = f.login();
    login.assert_ran();
    login.assert_no_errors();
    let line = assert_migration_line(&login, &f, &nfs);
    assert!(
        line.contains("replacing the local one"),
        "the Info line should mention the replacement: {line:?}"
    );
    assert_eq!(f.list_index_in(&f.listindex), nfs);
    assert!(f.list_index_in(&f.index).is_empty());
    f.assert_valid_record();

    // Only the log marks NFS use: an index file alone (no .log) next to a
    // valid record is not migrated (and the local copy stays).
    let lone = f.index.join(PREFIX);
    f.write(&lone, b"lone index without a log");
    let login = f.login();
    login.assert_ran();
    assert!(login.stderr.is_empty(), "{}", login.stderr);
    assert_eq!(f.list_index_in(&f.listindex), nfs);
    assert!(lone.exists());
}

/// Migration off (the default): an NFS list index is left alone, and the
/// local one is handled as without migration.
#[test]
fn migration_off_leaves_nfs_list_index_alone() {
    for explicit in [true, false] {
        let f = Fixture::new(false);
        if !explicit {
            // No nfs_hostchange_migration line at all: the default.
            let text = fs::read_to_string(&f.conf).unwrap();
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("nfs_hostchange_migration"))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(&f.conf, text).unwrap();
        }
        let nfs = f.old_backend_list_index("nfs");
        let index_before = snapshot(&f.index);
        f.stale_local_list_index();

        let login = f.login();
        login.assert_ran();
        login.assert_no_errors();
        assert!(
            !login.stderr.contains("migrat"),
            "migration off, yet:\n{}",
            login.stderr
        );
        assert_eq!(f.list_index_in(&f.index), nfs, "NFS list index touched");
        // The first login drops the local copy (no record), and copies nothing.
        assert!(
            f.list_index_in(&f.listindex).is_empty(),
            "{:?}",
            entries(&f.listindex)
        );
        f.assert_valid_record();

        // Steady state: NFS is still untouched apart from .lasthost.
        let login = f.login();
        login.assert_ran();
        assert!(login.stderr.is_empty(), "{}", login.stderr);
        let mut after = snapshot(&f.index);
        after.remove(&f.index.join(LASTHOST));
        assert_eq!(after, index_before, "INDEX changed beyond .lasthost");
    }
}

/// The userdb field NFS_HOSTCHANGE_MIGRATION=yes turns migration on for
/// one user when the file says no.
#[test]
fn userdb_field_turns_migration_on() {
    let f = Fixture::new(false);
    let nfs = f.old_backend_list_index("nfs");
    let login = f.login_with(&[("NFS_HOSTCHANGE_MIGRATION", "yes")]);
    login.assert_ran();
    login.assert_no_errors();
    assert_migration_line(&login, &f, &nfs);
    assert_eq!(f.list_index_in(&f.listindex), nfs);
    assert!(f.list_index_in(&f.index).is_empty());
}

/// A new user has no INDEX yet (Dovecot creates it at the first write).
/// With migration on, that is not an error: there is nothing to migrate,
/// and the login logs only the Info line it logs without migration.
#[test]
fn new_user_without_index_logs_no_error_with_migration() {
    let f = Fixture::new(true);
    fs::remove_dir_all(&f.index).unwrap();
    assert!(f.home.is_dir());

    let login = f.login();
    login.assert_ran();
    assert!(
        !f.index.exists(),
        "INDEX must never be created by the wrapper"
    );
    login.assert_no_errors();
    assert!(
        login.lines("Info").iter().any(|l| l.contains("a new user")),
        "{}",
        login.stderr
    );
}

/// A copy that fails half-way (here: one NFS file the user cannot read,
/// which works without root) leaves nothing in LISTINDEX and deletes the
/// NFS list index too: this backend now serves the user from a list index
/// of its own, so an NFS copy kept behind would go stale (a backend without
/// the wrapper, or the next migration elsewhere, would serve it).
#[test]
fn failed_copy_removes_both_copies() {
    let f = Fixture::new(true);
    let nfs = f.old_backend_list_index("nfs");
    f.stale_local_list_index();
    // Sorted, dovecot.list.index is copied (and renamed into place) before
    // the .log fails: the rollback must remove the placed copy too.
    let unreadable = f.index.join(format!("{PREFIX}.log"));
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();

    let login = f.login();
    login.assert_ran();
    assert_failed_copy(&f, &login, &nfs, "Permission denied");

    // The next login is steady state: nothing left to migrate, no error.
    let login = f.login();
    login.assert_ran();
    login.assert_no_errors();
    assert!(login.lines("Info").is_empty(), "{}", login.stderr);
    f.assert_valid_record();
}

/// What a failed copy must leave: no list index file of any kind in
/// LISTINDEX (neither a temporary copy nor a partial or complete file under
/// a final name), no list index on NFS either (`nfs` names what was there),
/// a valid record (both sides are consistent again: Dovecot rebuilds), and
/// an Error line naming `errno` that says the NFS copy went too.
fn assert_failed_copy(f: &Fixture, login: &Login, nfs: &BTreeMap<String, Vec<u8>>, errno: &str) {
    assert!(!nfs.is_empty());
    assert!(
        f.list_index_in(&f.index).is_empty(),
        "the NFS list index must be deleted after a failed copy, or it goes stale"
    );
    // This catches a leftover *.nfs-hostchange-copy, a partial file under
    // its final name, and a complete copy of the first file that was not
    // rolled back, as well as the stale local files.
    let left: Vec<String> = entries(&f.listindex)
        .into_iter()
        .filter(|n| n.starts_with(PREFIX) || n.contains(COPY_SUFFIX))
        .collect();
    assert!(
        left.is_empty(),
        "LISTINDEX keeps {left:?} after a failed copy"
    );
    f.assert_valid_record();
    let errors = login.lines("Error");
    assert!(
        errors
            .iter()
            .any(|l| l.contains(errno) && l.contains("NFS copy was deleted too")),
        "no Error line with {errno:?}:\n{}",
        login.stderr
    );
    assert!(
        !login.lines("Info").iter().any(|l| l.contains("migrated")),
        "a failed copy was reported as migrated:\n{}",
        login.stderr
    );
}

/// A tmpfs mounted for one test, unmounted on drop (also on panic).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Result<Tmpfs, String> {
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let data = CString::new(options).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that lives
        // for the whole call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount tmpfs on {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: as above; MNT_DETACH cannot be refused for being busy.
            let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            eprintln!(
                "warning: umount {}: {err}; lazy unmount: {}",
                self.path.display(),
                if rc == 0 { "done" } else { "failed" }
            );
        }
    }
}

/// ENOSPC during the copy: LISTINDEX is a 64 KiB tmpfs and the NFS list
/// index is larger. The first file fits and is renamed into place, the log
/// does not: the rollback must leave nothing, and the NFS list index is
/// deleted too (see `failed_copy_removes_both_copies`).
#[test]
fn enospc_during_copy_removes_both_copies() {
    const TEST: &str = "enospc_during_copy_removes_both_copies";
    if !is_root() {
        skip_unless_ci(TEST, "needs root to mount a small tmpfs");
        return;
    }
    let f = Fixture::new(true);
    let mnt = Tmpfs::mount(
        &f.listindex_root,
        &format!("size=64k,mode=0755,uid={},gid={}", f.uid, f.gid),
    )
    .unwrap_or_else(|e| panic!("{TEST}: {e}"));

    // A first login (no NFS list index yet) stores a record; then A's
    // Dovecot writes a local list index and an old backend a large one on NFS.
    let first = f.login();
    first.assert_ran();
    first.assert_no_errors();
    f.assert_valid_record();
    f.stale_local_list_index();
    let nfs: BTreeMap<String, Vec<u8>> = [
        (PREFIX.to_string(), pattern("nfs index", 16 * 1024)),
        (format!("{PREFIX}.log"), pattern("nfs log", 256 * 1024)),
    ]
    .into_iter()
    .collect();
    for (name, content) in &nfs {
        f.write(&f.index.join(name), content);
    }

    let login = f.login();
    login.assert_ran();
    eprintln!("{}", login.stderr.trim_end());
    assert_failed_copy(&f, &login, &nfs, "No space left on device");

    // The next login is steady state: nothing left to migrate, no error.
    let login = f.login();
    login.assert_ran();
    login.assert_no_errors();
    assert!(login.lines("Info").is_empty(), "{}", login.stderr);
    f.assert_valid_record();
    drop(mnt);
}

/// What strace saw a process do with paths under one directory.
#[derive(Debug, Default)]
struct Trace {
    /// (syscall, path) of calls that name a path under the directory.
    by_path: Vec<(String, String)>,
    /// (syscall, line) of calls on a descriptor open under the directory.
    by_fd: Vec<(String, String)>,
}

/// Parses `strace -f -y` output for calls under `dir`.
fn parse_trace(text: &str, dir: &Path) -> Trace {
    let dir = dir.display().to_string();
    let quoted = format!("\"{dir}");
    let fd = format!("<{dir}");
    let mut trace = Trace::default();
    for line in text.lines() {
        if !line.contains(&dir) {
            continue;
        }
        // "PID name(args) = result" with -f and -o.
        let call = line
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
            .trim_start_matches("[pid ");
        let name: String = call
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(start) = line.find(&quoted) {
            let rest = &line[start + 1..];
            let path = rest.split('"').next().unwrap_or(rest).to_string();
            trace.by_path.push((name, path));
        } else if line.contains(&fd) {
            trace.by_fd.push((name, line.to_string()));
        }
    }
    trace
}

/// Steady state with migration on costs one NFS operation more than
/// without: under INDEX, exactly the open of .lasthost and one stat of
/// dovecot.list.index.log, and nothing written.
#[test]
fn steady_state_with_migration_costs_one_stat() {
    const TEST: &str = "steady_state_with_migration_costs_one_stat";
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(strace) = strace else {
        skip_unless_ci(
            TEST,
            "strace is not installed (scripts/install-deps installs it)",
        );
        return;
    };
    let f = Fixture::new(true);
    let nfs = f.old_backend_list_index("nfs");
    let first = f.login();
    first.assert_ran();
    assert_migration_line(&first, &f, &nfs);
    // One more login to be sure the state is steady.
    let second = f.login();
    assert!(second.stderr.is_empty(), "{}", second.stderr);

    let out_file = f.root.join("strace.out");
    let out = Command::new(&strace)
        .args(["-f", "-y", "-e", "trace=%file,%desc", "-o"])
        .arg(&out_file)
        .arg(BIN)
        .args(["postlogin", "--config"])
        .arg(&f.conf)
        .arg("/bin/true")
        .env_clear()
        .env("USER", USER)
        .env("HOME", &f.home)
        .env("UID", f.uid.to_string())
        .env("GID", f.gid.to_string())
        .output()
        .expect("running strace");
    let login = Login::from(out);
    login.assert_ran();
    assert!(
        login.stderr.is_empty(),
        "strace run logged:\n{}",
        login.stderr
    );
    let text = fs::read_to_string(&out_file).expect("reading strace output");
    assert!(text.contains("execve("), "strace traced nothing:\n{text}");
    let trace = parse_trace(&text, &f.index);
    let lasthost = f.index.join(LASTHOST).display().to_string();
    let log = f.index.join(format!("{PREFIX}.log")).display().to_string();
    let opens: Vec<_> = trace
        .by_path
        .iter()
        .filter(|(name, path)| (name == "open" || name == "openat") && *path == lasthost)
        .collect();
    let stats: Vec<_> = trace
        .by_path
        .iter()
        .filter(|(name, path)| {
            matches!(
                name.as_str(),
                "stat" | "lstat" | "newfstatat" | "fstatat64" | "statx" | "stat64"
            ) && *path == log
        })
        .collect();
    let report = || {
        format!(
            "calls under INDEX:\n{}",
            text.lines()
                .filter(|l| l.contains(&f.index.display().to_string()))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    assert_eq!(opens.len(), 1, "one open of .lasthost; {}", report());
    assert_eq!(stats.len(), 1, "one stat of the NFS log; {}", report());
    assert_eq!(
        trace.by_path.len(),
        2,
        "no other path lookups under INDEX; {}",
        report()
    );
    // On the open .lasthost only reading is allowed.
    let harmless = [
        "read",
        "pread64",
        "fstat",
        "newfstatat",
        "statx",
        "close",
        "fcntl",
        "lseek",
    ];
    let bad: Vec<_> = trace
        .by_fd
        .iter()
        .filter(|(name, _)| !harmless.contains(&name.as_str()))
        .collect();
    assert!(bad.is_empty(), "writes or other calls on NFS: {bad:?}");
    assert_eq!(f.list_index_in(&f.listindex), nfs);
}
