//! How long `usercache sweep` takes over many users, and how much memory it
//! needs: 10,000 and then 100,000 user directories at depth 2 under 256
//! hash directories, 1% of them old, in a temporary directory on /dev/shm
//! (removed at the end). Prints a table.
//!
//! Run: `cargo build --release && cargo bench --bench sweep`. The binary is
//! `$NFS_HOSTCHANGE_BIN` when set, else the one Cargo built for this bench,
//! else `target/release/nfs-hostchange`. Needs about 1 GB of tmpfs.
//!
//! Peak memory is the child's own `ru_maxrss`, read with wait4(2): the same
//! figure as getrusage(RUSAGE_CHILDREN) when the child is the only one, but
//! per run, so a small run after a large one is not hidden.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

const HASH_DIRS: usize = 256;
/// One user in this many is old.
const OLD_EVERY: usize = 100;
const OLD_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// A realistic local record (see record.rs): magic, inode, mtime, content.
const RECORD: &[u8] = b"nfs-hostchange-record 1\nino 1234567\nmtime 1764860000.123456789\n\
content 6261636b656e642d6120396633633261376230313564346531380a\n";
/// A small list index stand-in (a real one for a handful of folders is a
/// few KiB; Dovecot cannot run here to make one).
const LIST_INDEX_BYTES: usize = 2048;

fn main() {
    let bin = binary();
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("sweep bench: /dev/shm is missing, nothing measured");
        return;
    }
    println!("binary: {}", bin.display());
    println!();
    println!(
        "{:>8} {:>6} {:>8} {:>8} {:>10} {:>12} {:>13}",
        "users", "old", "cleaned", "scanned", "wall (s)", "peak RSS KiB", "fixture (s)"
    );
    let mut one_user_bytes = 0;
    for users in [10_000, 100_000] {
        let tmp = tempfile::Builder::new()
            .prefix("nfshc-sweep-bench-")
            .tempdir_in(shm)
            .expect("temporary directory on /dev/shm");
        let made = Instant::now();
        let (root, conf) = fixture(tmp.path(), users);
        let fixture_secs = made.elapsed().as_secs_f64();
        one_user_bytes = du(&root.join("00").join(user_name(0)));

        for pass in ["first", "again"] {
            let run = sweep(&bin, &conf, &root);
            println!(
                "{:>8} {:>6} {:>8} {:>8} {:>10.3} {:>12} {:>13}",
                users,
                if pass == "first" {
                    users / OLD_EVERY
                } else {
                    0
                },
                run.cleaned,
                run.scanned,
                run.wall.as_secs_f64(),
                run.max_rss_kib,
                if pass == "first" {
                    format!("{fixture_secs:.1}")
                } else {
                    "-".to_string()
                },
            );
        }
        let removing = Instant::now();
        drop(tmp);
        eprintln!(
            "  ({users} users: fixture removed in {:.1} s)",
            removing.elapsed().as_secs_f64()
        );
    }
    println!();
    println!(
        "tmpfs per user in this fixture (du of one user directory: record + \
         {LIST_INDEX_BYTES}-byte list index stand-in): {one_user_bytes} bytes"
    );
    println!(
        "(tmpfs allocates whole pages, so each small file takes 4 KiB; a real \
         Dovecot list index must be measured with Dovecot)"
    );
}

/// The binary under test.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NFS_HOSTCHANGE_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(bin) = option_env!("CARGO_BIN_EXE_nfs-hostchange") {
        return PathBuf::from(bin);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/nfs-hostchange")
}

fn user_name(i: usize) -> String {
    format!("user{i:06}@example.org")
}

/// Creates `users` user directories under `base/root`, and a settings file.
fn fixture(base: &Path, users: usize) -> (PathBuf, PathBuf) {
    let root = base.join("root");
    fs::create_dir(&root).expect("root");
    for h in 0..HASH_DIRS {
        fs::create_dir(root.join(format!("{h:02x}"))).expect("hash directory");
    }
    let list_index = vec![0x5au8; LIST_INDEX_BYTES];
    let old = {
        let t = SystemTime::now() - OLD_AGE;
        let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
        TimeSpec::new(d.as_secs() as i64, 0)
    };
    for i in 0..users {
        let dir = root
            .join(format!("{:02x}", i % HASH_DIRS))
            .join(user_name(i));
        fs::create_dir(&dir).expect("user directory");
        fs::write(dir.join("dovecot.list.index"), &list_index).expect("list index");
        let record = dir.join(".lasthost");
        fs::write(&record, RECORD).expect("record");
        if i % OLD_EVERY == 0 {
            utimensat(
                AT_FDCWD,
                &record,
                &old,
                &old,
                UtimensatFlags::NoFollowSymlink,
            )
            .expect("age the record");
        }
    }
    let conf = base.join("nfs-hostchange.conf");
    fs::write(
        &conf,
        format!(
            "mail_location = maildir:/nonexistent/%u:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index\n\
             nfs_hostchange_log = stderr\n",
            root.display()
        ),
    )
    .expect("settings");
    (root, conf)
}

/// The bytes a directory and everything in it take (as du counts them).
fn du(dir: &Path) -> u64 {
    let mut total = fs::symlink_metadata(dir).map_or(0, |m| m.blocks() * 512);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            total += fs::symlink_metadata(entry.path()).map_or(0, |m| m.blocks() * 512);
        }
    }
    total
}

struct Run {
    wall: Duration,
    max_rss_kib: i64,
    scanned: u64,
    cleaned: u64,
}

/// Runs one sweep and waits for it with wait4(2) to get its peak RSS.
// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn sweep(bin: &Path, conf: &Path, root: &Path) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["usercache", "sweep", "--config"])
        .arg(conf)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e} (cargo build --release first?)", bin.display()));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, writable and live for the
    // call; `pid` is our own unwaited child, so wait4 reaps only it.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "sweep failed: status {status}"
    );
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        stdout.read_to_string(&mut out).expect("sweep output");
    }
    let count = |name: &str| -> u64 {
        out.split(", ")
            .find_map(|part| {
                let (label, n) = part.rsplit_once(' ')?;
                label
                    .rsplit(": ")
                    .next()?
                    .eq(name)
                    .then(|| n.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in {out:?}"))
    };
    Run {
        wall,
        max_rss_kib: usage.ru_maxrss,
        scanned: count("scanned"),
        cleaned: count("cleaned"),
    }
}
