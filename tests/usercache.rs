//! `nfs-hostchange usercache clean|sweep` against fixture trees in a
//! temporary directory (on /dev/shm when there is one, as in production).
//!
//! Run as root or as an ordinary user. As root, the login race runs the
//! post-login wrapper for uid and gid 65534, as Dovecot would.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nfs_hostchange::mail_location::{self, UserPaths};
use nfs_hostchange::nfs;
use nfs_hostchange::record::Stamp;
use nfs_hostchange::varexpand::Vars;
use nix::dir::Dir;
use nix::fcntl::{Flock, FlockArg, OFlag, AT_FDCWD};
use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{chown, geteuid, Gid, Uid};

const BIN: &str = env!("CARGO_BIN_EXE_nfs-hostchange");
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The uid and gid the wrapper acts as when the tests run as root.
const MAIL_ID: u32 = 65534;

/// A LISTINDEX root in a temporary directory, with a settings file whose
/// mail_location puts users at `ROOT/%2.256Nu/%u`.
struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    conf: PathBuf,
    location: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_settings("")
    }

    fn with_settings(extra: &str) -> Fixture {
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("nfshc-usercache-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new()
                .prefix("nfshc-usercache-")
                .tempdir()
        }
        .expect("temporary directory");
        let base = tmp.path().to_path_buf();
        let root = base.join("listindex");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(base.join("store")).unwrap();
        let location = format!(
            "maildir:{}/store/%u:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index",
            base.display(),
            root.display()
        );
        let conf = base.join("nfs-hostchange.conf");
        fs::write(
            &conf,
            format!("mail_location = {location}\nnfs_hostchange_log = stderr\n{extra}"),
        )
        .unwrap();
        Fixture {
            _tmp: tmp,
            base,
            root,
            conf,
            location,
        }
    }

    fn paths(&self, user: &str) -> UserPaths {
        let vars = Vars {
            user: user.as_bytes(),
            home: None,
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        };
        mail_location::resolve(self.location.as_bytes(), &vars).expect("user paths")
    }

    /// The user's LISTINDEX directory.
    fn dir(&self, user: &str) -> PathBuf {
        self.paths(user).listindex
    }

    /// Creates a user directory with a list index (and a record when
    /// `record`), every timestamp `age` in the past.
    fn add_user(&self, user: &str, age: Duration, record: bool) -> PathBuf {
        let dir = self.dir(user);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dovecot.list.index"), vec![7u8; 3000]).unwrap();
        fs::write(dir.join("dovecot.list.index.log"), b"log").unwrap();
        if record {
            fs::write(dir.join(".lasthost"), b"nfs-hostchange-record 1\n").unwrap();
        }
        age_tree(&dir, age);
        dir
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("NFS_HOSTCHANGE_CONFIG");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `usercache ARGS... --config CONF`.
    fn usercache<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = self.command();
        cmd.arg("usercache");
        let mut args = args.iter().map(|a| a.as_ref().to_os_string());
        if let Some(sub) = args.next() {
            cmd.arg(sub).arg("--config").arg(&self.conf);
        }
        cmd.args(args);
        cmd.output().expect("run nfs-hostchange")
    }

    fn sweep(&self, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec!["sweep".into()];
        args.extend(extra.iter().map(OsString::from));
        self.usercache(&args)
    }

    fn clean(&self, extra: &[&str], dir: &Path) -> Output {
        let mut args: Vec<OsString> = vec!["clean".into()];
        args.extend(extra.iter().map(OsString::from));
        args.push(dir.as_os_str().to_os_string());
        self.usercache(&args)
    }

    /// Two users whose directories share one hash directory, and that hash
    /// directory.
    fn neighbours(&self) -> (String, String, PathBuf) {
        let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
        for i in 0.. {
            let user = format!("n{i}");
            let hash = self.dir(&user).parent().unwrap().to_path_buf();
            if let Some(other) = seen.insert(hash.clone(), user.clone()) {
                return (other, user, hash);
            }
        }
        unreachable!()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The numbers of the summary line, by name (`cleaned` also stands for
/// `would clean`, `freed` for `would free`).
fn summary(out: &Output) -> BTreeMap<String, u64> {
    let text = stdout(out);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary: {text:?} {}", stderr(out)));
    let (_, counts) = line.split_once(": ").expect("summary line");
    let mut map = BTreeMap::new();
    for part in counts.split(", ") {
        let words: Vec<&str> = part.split(' ').collect();
        let (name, value) = match words.as_slice() {
            ["would", "clean", n] => ("cleaned", n),
            ["would", "free", n, "bytes"] | ["freed", n, "bytes"] => ("freed", n),
            [name, n] => (*name, n),
            _ => panic!("odd summary part {part:?} in {line:?}"),
        };
        map.insert(name.to_string(), value.parse().expect("number"));
    }
    map
}

fn assert_counts(out: &Output, scanned: u64, cleaned: u64, busy: u64, skipped: u64, errors: u64) {
    let s = summary(out);
    let got = (
        s["scanned"],
        s["cleaned"],
        s["busy"],
        s["skipped"],
        s["errors"],
    );
    assert_eq!(
        got,
        (scanned, cleaned, busy, skipped, errors),
        "(scanned, cleaned, busy, skipped, errors)\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

fn timespec(t: SystemTime) -> TimeSpec {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    TimeSpec::new(d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

/// Sets atime and mtime of `path` (not following a symlink) to `age` ago.
fn set_age(path: &Path, age: Duration) {
    let t = timespec(SystemTime::now() - age);
    utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
}

/// Ages everything in `dir`, then `dir` itself.
fn age_tree(dir: &Path, age: Duration) {
    for path in list_noatime(dir) {
        set_age(&path, age);
    }
    set_age(dir, age);
}

/// Every path below `dir` (not `dir`), children before their directory,
/// listed without touching any atime and without following symlinks.
fn list_noatime(dir: &Path) -> Vec<PathBuf> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_DIRECTORY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOATIME;
    let mut out = Vec::new();
    let Ok(mut listing) = Dir::open(dir, flags, Mode::empty()) else {
        return out;
    };
    for entry in listing.iter() {
        let entry = entry.unwrap();
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = dir.join(name);
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(list_noatime(&path));
        }
        out.push(path);
    }
    out
}

/// Inode, atime, mtime and ctime (with nanoseconds) of every path below
/// and including `dir`.
fn timestamps(dir: &Path) -> BTreeMap<PathBuf, [i64; 7]> {
    let mut paths = list_noatime(dir);
    paths.push(dir.to_path_buf());
    paths
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            let stamp = [
                m.ino() as i64,
                m.atime(),
                m.atime_nsec(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ];
            (p, stamp)
        })
        .collect()
}

fn is_root() -> bool {
    geteuid().is_root()
}

// ---------------------------------------------------------------------------

#[test]
fn sweep_cleans_old_users_and_keeps_fresh_ones() {
    let fx = Fixture::new();
    let old = fx.add_user("old", 10 * DAY, true);
    let fresh = fx.add_user("fresh", HOUR, true);
    let old_bare = fx.add_user("old-bare", 10 * DAY, false);
    let fresh_bare = fx.add_user("fresh-bare", HOUR, false);
    // A recent list index file makes a directory without a record fresh,
    // whatever the directory's own age.
    let fresh_file = fx.add_user("fresh-file", 10 * DAY, false);
    set_age(&fresh_file.join("dovecot.list.index.log"), HOUR);
    let before: Vec<_> = [&fresh, &fresh_bare, &fresh_file]
        .iter()
        .map(|d| timestamps(d))
        .collect();

    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 5, 2, 0, 3, 0);
    let line = stdout(&out);
    assert!(
        line.starts_with(&format!(
            "sweep {}: scanned 5, cleaned 2,",
            fx.root.display()
        )),
        "{line}"
    );
    assert!(summary(&out)["freed"] >= 2 * 4096, "{line}");
    assert!(
        stderr(&out).contains("Info: usercache: sweep"),
        "logged: {}",
        stderr(&out)
    );

    assert!(!old.exists());
    assert!(!old_bare.exists());
    let after: Vec<_> = [&fresh, &fresh_bare, &fresh_file]
        .iter()
        .map(|d| timestamps(d))
        .collect();
    assert_eq!(before, after, "a user left alone keeps every timestamp");
    // The bare directories got no record either.
    assert!(!fresh_bare.join(".lasthost").exists());
    assert!(!fresh_file.join(".lasthost").exists());
}

#[test]
fn min_age_decides() {
    let fx = Fixture::new();
    fx.add_user("a", 3 * HOUR, true);
    fx.add_user("b", 30 * DAY, true);
    let out = fx.sweep(&["--min-age", "2 hours"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 2, 2, 0, 0, 0);

    let fx = Fixture::new();
    fx.add_user("a", 3 * HOUR, true);
    fx.add_user("b", 30 * DAY, true);
    let out = fx.sweep(&["--min-age=2w"]);
    assert_counts(&out, 2, 1, 0, 1, 0);
    assert!(fx.dir("a").exists());
}

#[test]
fn clean_one_user() {
    let fx = Fixture::new();
    let dir = fx.add_user("alice", 2 * HOUR, true);

    // Too young for the age asked for: left alone.
    let out = fx.clean(&["--min-age", "1d"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 0, 0, 1, 0);
    assert!(dir.join(".lasthost").exists());

    // Old enough with the doveadm-style positional AGE.
    let out = fx.usercache(&[OsStr::new("clean"), OsStr::new("1h"), dir.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!dir.exists());
    assert!(
        !dir.parent().unwrap().exists(),
        "the emptied hash directory goes"
    );
    assert!(fx.root.is_dir(), "the root stays");
    assert!(stdout(&out).starts_with(&format!("clean {}: scanned 1, cleaned 1", dir.display())));

    // Without AGE a fresh user is cleaned too.
    let dir = fx.add_user("bob", Duration::ZERO, true);
    let out = fx.clean(&[], &dir);
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!dir.exists());

    // A directory that is not there: nothing to do.
    let out = fx.clean(&[], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 0, 0, 0, 0, 0);
}

#[test]
fn clean_a_directory_without_record() {
    let fx = Fixture::new();
    let dir = fx.add_user("bare", 3 * DAY, false);
    let out = fx.clean(&["--min-age", "4d"], &dir);
    assert_counts(&out, 1, 0, 0, 1, 0);
    assert!(
        !dir.join(".lasthost").exists(),
        "the record made to lock it is gone again"
    );
    let out = fx.clean(&["--min-age", "2d"], &dir);
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!dir.exists());
}

#[test]
fn directory_without_record_and_with_other_files_is_left_alone() {
    let fx = Fixture::new();
    let dir = fx.add_user("odd", 10 * DAY, false);
    fs::write(dir.join("notes.txt"), b"not a list index").unwrap();
    age_tree(&dir, 10 * DAY);
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 0, 0, 1, 0);
    assert!(dir.join("notes.txt").exists());
    assert!(
        stderr(&out).contains("notes.txt") && stderr(&out).contains("left alone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hash_directories_go_only_when_empty() {
    let fx = Fixture::new();
    let (a, b, shared) = fx.neighbours();
    fx.add_user(&a, 10 * DAY, true);
    fx.add_user(&b, HOUR, true);
    let lone = fx.add_user("lone", 10 * DAY, true);
    let lone_hash = lone.parent().unwrap().to_path_buf();
    assert_ne!(lone_hash, shared, "pick another name for the lone user");

    let out = fx.sweep(&[]);
    assert_counts(&out, 3, 2, 0, 1, 0);
    assert!(shared.is_dir(), "{b} still lives there");
    assert!(!fx.dir(&a).exists());
    assert!(fx.dir(&b).is_dir());
    assert!(!lone_hash.exists(), "emptied hash directory removed");

    let out = fx.clean(&[], &fx.dir(&b));
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!shared.exists());
    assert_eq!(fs::read_dir(&fx.root).unwrap().count(), 0);
}

#[test]
fn busy_user_is_skipped() {
    let fx = Fixture::new();
    let dir = fx.add_user("busy", 10 * DAY, true);
    fx.add_user("idle", 10 * DAY, true);
    let file = File::options()
        .read(true)
        .write(true)
        .open(dir.join(".lasthost"))
        .unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();

    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 2, 1, 1, 0, 0);
    assert!(dir.join("dovecot.list.index").exists());

    let out = fx.clean(&[], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 0, 1, 0, 0);
    assert!(dir.join(".lasthost").exists());

    drop(lock);
    let out = fx.clean(&[], &dir);
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!dir.exists());
}

#[test]
fn dry_run_changes_nothing() {
    let fx = Fixture::new();
    let old = fx.add_user("old", 10 * DAY, true);
    let old_bare = fx.add_user("old-bare", 10 * DAY, false);
    let fresh = fx.add_user("fresh", HOUR, true);
    // Old atimes everywhere: under relatime any read would renew them.
    for dir in [&old, &old_bare, &fresh] {
        age_tree(dir.parent().unwrap(), 10 * DAY);
    }
    set_age(&fresh.join(".lasthost"), HOUR);
    let before = timestamps(&fx.root);

    let out = fx.sweep(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut listed: Vec<&str> = text.lines().filter(|l| !l.starts_with("sweep ")).collect();
    listed.sort_unstable();
    let mut expected = vec![old.to_str().unwrap(), old_bare.to_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert!(text.contains(", would clean 2, "), "{text}");
    assert!(text.contains(", would free "), "{text}");
    assert_counts(&out, 3, 2, 0, 1, 0);

    let after = timestamps(&fx.root);
    assert_eq!(before, after, "a dry run changes no timestamp and no inode");
    let record = fs::symlink_metadata(old.join(".lasthost")).unwrap();
    assert_eq!(
        (record.atime(), record.atime_nsec()),
        (
            before[&old.join(".lasthost")][1],
            before[&old.join(".lasthost")][2]
        ),
    );
    assert!(
        !old_bare.join(".lasthost").exists(),
        "a dry run creates no record"
    );
}

#[test]
fn symlinks_are_never_followed() {
    let fx = Fixture::new();
    let outside = fx.base.join("outside");
    fs::create_dir_all(outside.join("dir/sub")).unwrap();
    fs::write(outside.join("secret"), b"keep me").unwrap();
    fs::write(outside.join("dir/sub/file"), b"keep me too").unwrap();
    // A directory outside ROOT that looks like an old user.
    let victim = outside.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join(".lasthost"), b"").unwrap();
    fs::write(victim.join("dovecot.list.index"), b"x").unwrap();
    age_tree(&victim, 10 * DAY);
    // A hash directory outside ROOT holding an old user.
    let far_hash = outside.join("hash");
    fs::create_dir_all(far_hash.join("faruser")).unwrap();
    fs::write(far_hash.join("faruser/.lasthost"), b"").unwrap();
    age_tree(&far_hash, 10 * DAY);
    let outside_before = timestamps(&outside);

    // An old user with symlinks to a file and a directory outside ROOT.
    let user = fx.add_user("links", 10 * DAY, true);
    symlink(outside.join("secret"), user.join("dovecot.list.index.tmp")).unwrap();
    symlink(outside.join("dir"), user.join("linkdir")).unwrap();
    fs::create_dir(user.join("nested")).unwrap();
    symlink(outside.join("dir"), user.join("nested/deeper")).unwrap();
    age_tree(&user, 10 * DAY);
    // A symlinked user directory next to it, and a symlinked hash directory.
    let hash = user.parent().unwrap();
    let linked_user = hash.join("linked-user");
    symlink(&victim, &linked_user).unwrap();
    let linked_hash = fx.root.join("zz");
    symlink(&far_hash, &linked_hash).unwrap();

    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(
        !user.exists(),
        "the user with symlinks is gone, links and all"
    );
    assert_eq!(timestamps(&outside), outside_before, "targets untouched");
    assert!(victim.join(".lasthost").exists());
    assert!(far_hash.join("faruser/.lasthost").exists());
    assert!(fs::symlink_metadata(&linked_user)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(&linked_hash)
        .unwrap()
        .file_type()
        .is_symlink());

    // clean refuses a symlinked DIR and a DIR behind a symlinked hash dir.
    let out = fx.clean(&[], &linked_user);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let out = fx.clean(&[], &linked_hash.join("faruser"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(timestamps(&outside), outside_before, "targets untouched");
    // Reading renews atimes, so only now.
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"keep me");
    assert_eq!(
        fs::read(outside.join("dir/sub/file")).unwrap(),
        b"keep me too"
    );
}

#[test]
fn nested_directories_and_special_files_are_removed() {
    let fx = Fixture::new();
    let user = fx.add_user("nested", 10 * DAY, true);
    fs::create_dir_all(user.join("a/b/c")).unwrap();
    fs::write(user.join("a/b/c/f"), b"x").unwrap();
    nix::unistd::mkfifo(&user.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    age_tree(&user, 10 * DAY);
    set_age(&user.join(".lasthost"), 10 * DAY);
    let out = fx.sweep(&[]);
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!user.exists());
}

#[test]
fn a_failing_user_gives_exit_status_1() {
    let fx = Fixture::new();
    let bad = fx.add_user("bad", 10 * DAY, false);
    fs::create_dir(bad.join(".lasthost")).unwrap();
    fx.add_user("good", 10 * DAY, true);
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_counts(&out, 2, 1, 0, 0, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}", bad.join(".lasthost").display())) && err.contains("Error"),
        "{err}"
    );
    assert!(bad.join(".lasthost").is_dir());
}

#[test]
fn unsafe_roots_are_refused() {
    // A sticky 1777 root is accepted only when root owns it (what set-ups
    // with one uid per user need); anyone else's is refused.
    {
        let fx = Fixture::new();
        let user = fx.add_user("u", 10 * DAY, true);
        fs::set_permissions(&fx.root, fs::Permissions::from_mode(0o1777)).unwrap();
        let root_owned = fs::metadata(&fx.root).unwrap().uid() == 0;
        let out = fx.sweep(&["--dry-run"]);
        if root_owned {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        } else {
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        }
        assert!(user.exists());
    }

    // World- and group-writable.
    for mode in [0o777, 0o770] {
        let fx = Fixture::new();
        let user = fx.add_user("u", 10 * DAY, true);
        fs::set_permissions(&fx.root, fs::Permissions::from_mode(mode)).unwrap();
        for out in [fx.sweep(&[]), fx.clean(&[], &user)] {
            assert_eq!(
                out.status.code(),
                Some(2),
                "mode {mode:o}: {}",
                stderr(&out)
            );
            assert!(stderr(&out).contains("writable"), "{}", stderr(&out));
            assert!(out.stdout.is_empty());
        }
        assert!(user.exists());
    }

    // A symlink as ROOT, configured or given.
    let fx = Fixture::new();
    let real = fx.base.join("real-root");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_dir(&fx.root).unwrap();
    symlink(&real, &fx.root).unwrap();
    let user = fx.add_user("u", 10 * DAY, true);
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let out = fx.sweep(&[fx.root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = fx.clean(&[], &user);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(user.join(".lasthost").exists());

    // An explicit ROOT must exist; the configured one may be missing (no
    // login since boot).
    let fx = Fixture::new();
    let out = fx.sweep(&[fx.base.join("nowhere").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    fs::remove_dir(&fx.root).unwrap();
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 0, 0, 0, 0, 0);

    // Sweeping / is refused outright.
    let fx = Fixture::new();
    let out = fx.sweep(&["--dry-run", "/"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn root_owner_must_be_root_us_or_mail_uid() {
    if !is_root() {
        eprintln!("root_owner_must_be_root_us_or_mail_uid: needs root to chown, skipped");
        return;
    }
    let fx = Fixture::new();
    fx.add_user("u", 10 * DAY, true);
    chown(&fx.root, Some(Uid::from_raw(12345)), None).unwrap();
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("owned by uid 12345"),
        "{}",
        stderr(&out)
    );

    let fx = Fixture::with_settings("mail_uid = 12345\n");
    fx.add_user("u", 10 * DAY, true);
    chown(&fx.root, Some(Uid::from_raw(12345)), None).unwrap();
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 1, 0, 0, 0);

    let fx = Fixture::with_settings("mail_uid = no-such-user-nfshc\n");
    let out = fx.sweep(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
}

#[test]
fn clean_refuses_directories_that_are_not_users() {
    let fx = Fixture::new();
    let user = fx.add_user("u", 10 * DAY, true);
    let hash = user.parent().unwrap().to_path_buf();
    fs::create_dir(user.join("sub")).unwrap();
    let elsewhere = fx.base.join("elsewhere/ab/u");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join(".lasthost"), b"").unwrap();

    for dir in [
        hash.clone(),
        user.join("sub"),
        elsewhere.clone(),
        fx.root.clone(),
        user.join(".."),
        user.join("sub/.."),
    ] {
        let out = fx.clean(&[], &dir);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            dir.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("refusing") || stderr(&out).contains(".."),
            "{}",
            stderr(&out)
        );
    }
    assert!(user.join(".lasthost").exists());
    assert!(elsewhere.join(".lasthost").exists());

    // A relative DIR, and one with a detour, name the same user.
    let rel = user.strip_prefix(&fx.root).unwrap();
    let out = fx
        .command()
        .current_dir(&fx.root)
        .args(["usercache", "clean", "--config"])
        .arg(&fx.conf)
        .arg(rel)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_counts(&out, 1, 1, 0, 0, 0);
    assert!(!user.exists());

    let user = fx.add_user("v", 10 * DAY, true);
    let detour = user
        .parent()
        .unwrap()
        .join("../")
        .join(user.strip_prefix(&fx.root).unwrap());
    let out = fx.clean(&[], &detour);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!user.exists());

    // A plain file where a user directory would be.
    let file = fx.dir("w");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"").unwrap();
    let out = fx.clean(&[], &file);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(file.exists());
}

#[test]
fn usage_errors_exit_2() {
    let fx = Fixture::new();
    let user = fx.add_user("u", 10 * DAY, true);
    let user = user.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["sweep", "--bogus"], "unknown option \"--bogus\""),
        (
            &["sweep", "--min-age", "7"],
            "invalid interval \"7\": missing unit",
        ),
        (&["sweep", "--min-age", "1 fortnight"], "unknown unit"),
        (&["sweep", "--min-age", "-1d"], "negative"),
        (&["clean", "--min-age", "1d"], "clean needs DIR"),
        (&["clean", "7x", user], "invalid interval \"7x\""),
        (&["clean", "--dry-run", user], "unknown option"),
        (&["sweep", "a", "b"], "at most one ROOT"),
    ];
    for (args, message) in cases {
        let out = fx.usercache(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    for args in [&["usercache"][..], &["usercache", "purge"]] {
        let out = fx.command().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = fx.command().args(["usercache", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("usercache sweep"));

    // Settings that cannot be used: a missing file named explicitly, and a
    // file without mail_location.
    let out = fx
        .command()
        .args(["usercache", "sweep", "--config"])
        .arg(fx.base.join("missing.conf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let empty = fx.base.join("empty.conf");
    fs::write(&empty, "nfs_hostchange_log = stderr\n").unwrap();
    let out = fx
        .command()
        .env("NFS_HOSTCHANGE_CONFIG", &empty)
        .args(["usercache", "sweep"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("mail_location"), "{}", stderr(&out));
    assert!(Path::new(user).join(".lasthost").exists());
}

/// A login and a clean of the same user, started together, many times
/// over, some users sharing a hash directory. After each round the user is
/// either logged in (directory and a record matching INDEX/.lasthost) or
/// gone completely; neither side reports an error.
#[test]
fn login_and_clean_race() {
    const ROUNDS: usize = 200;
    const WORKERS: usize = 4;
    let root_run = is_root();
    let fx = Fixture::with_settings(if root_run { "mail_uid = 65534\n" } else { "" });
    let (a, b, shared) = fx.neighbours();
    let mut hashes = vec![shared];
    let mut lone = (0..).map(|i| format!("lone-{i}")).filter(|u| {
        let hash = fx.dir(u).parent().unwrap().to_path_buf();
        let new = !hashes.contains(&hash);
        hashes.push(hash);
        new
    });
    let users = [a, b, lone.next().unwrap(), lone.next().unwrap()];
    // The wrapper must reach its files as the mail user.
    fs::set_permissions(&fx.base, fs::Permissions::from_mode(0o755)).unwrap();
    for user in &users {
        fs::create_dir(fx.paths(user).index).unwrap();
    }
    if root_run {
        for path in [fx.root.clone(), fx.base.join("store")]
            .into_iter()
            .chain(users.iter().map(|u| fx.paths(u).index))
        {
            chown(
                &path,
                Some(Uid::from_raw(MAIL_ID)),
                Some(Gid::from_raw(MAIL_ID)),
            )
            .unwrap();
        }
    }

    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(worker, user)| {
                let fx = &fx;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for round in 0..ROUNDS / WORKERS {
                        if let Err(e) = race_round(fx, user, round + worker, root_run) {
                            failures.push(format!("{user} round {round}: {e}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn race_round(fx: &Fixture, user: &str, round: usize, root_run: bool) -> Result<(), String> {
    let paths = fx.paths(user);
    let mut login = fx.command();
    login
        .env_clear()
        .env("USER", user)
        .arg("postlogin")
        .arg("--config")
        .arg(&fx.conf)
        .arg("/bin/true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if root_run {
        login
            .env("UID", MAIL_ID.to_string())
            .env("GID", MAIL_ID.to_string());
    }
    let mut clean = fx.command();
    clean
        .args(["usercache", "clean", "--config"])
        .arg(&fx.conf)
        .arg(&paths.listindex)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // Vary who starts first.
    let (first, second) = if round % 2 == 0 {
        (&mut login, &mut clean)
    } else {
        (&mut clean, &mut login)
    };
    let first = first.spawn().map_err(|e| e.to_string())?;
    let second = second.spawn().map_err(|e| e.to_string())?;
    let outs = [
        first.wait_with_output().map_err(|e| e.to_string())?,
        second.wait_with_output().map_err(|e| e.to_string())?,
    ];
    for out in &outs {
        let err = stderr(out);
        if err.lines().any(|l| {
            l.contains("Error")
                || l.contains("error:")
                || l.contains("Warning")
                || l.contains("warning:")
        }) {
            return Err(format!("complaint on stderr: {err}"));
        }
        if !out.status.success() {
            return Err(format!("exit {:?}: {err}", out.status.code()));
        }
    }

    // Logged in, or gone completely.
    let dir = &paths.listindex;
    if dir.exists() {
        let record = fs::read(dir.join(".lasthost"))
            .map_err(|e| format!("directory without record: {e}"))?;
        let record = Stamp::decode(&record)
            .map_err(|e| format!("bad record: {e}"))?
            .ok_or("empty record")?;
        let current = nfs::read_stamp(&paths.index)
            .map_err(|e| e.to_string())?
            .ok_or("no INDEX/.lasthost")?;
        if record != current {
            return Err(format!("record {record:?} does not match {current:?}"));
        }
    } else if user.starts_with("lone") && dir.parent().is_some_and(|p| p.exists()) {
        return Err("the user is gone but the hash directory stayed".to_string());
    }
    Ok(())
}
