//! Harness for the `postlogin` integration tests (`tests/postlogin.rs`).
//!
//! Each test gets a [`Harness`]: a temporary tree that plays two backends
//! sharing one NFS home directory.
//!
//! ```text
//! <tmp>/nfs/bob/           the user's HOME on "NFS"; INDEX is nfs/bob/Maildir
//! <tmp>/shmA/, shmB/       the LISTINDEX roots ("tmpfs") of backends A and B
//! <tmp>/a.conf, b.conf     their settings (log to stderr, host backend-a|-b)
//! <tmp>/out/               what the tests collect (probe reports, traces)
//! <tmp>/run/               the current directory (Dovecot's base_dir)
//! ```
//!
//! The wrapper runs as script-login runs it: a cleared environment with
//! `USER`, `HOME`, `UID`, `GID`, `IP`, `LOCAL_IP` and `USERDB_KEYS`, no
//! `PATH`. Run as root (as in CI), the harness hands it the uid and gid of
//! `nobody` and gives the user's directories to that user, so that what
//! the wrapper creates can be checked for ownership.
//!
//! The command the wrapper execs is, by default, a probe: this test binary
//! itself, started with [`PROBE_MARKER`] as its first argument. A hook in
//! `.init_array` catches that before the test harness starts, records its
//! argv, environment, open descriptors, identity and (on request) stdin in
//! a report file, and exits. Being started from the C runtime's
//! constructors, before Rust's `main`, it sees its descriptors exactly as
//! exec left them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use nfs_hostchange::record::Stamp;

/// The wrapper under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nfs-hostchange");

/// The first argument that turns this test binary into the probe.
pub const PROBE_MARKER: &str = "--nfs-hostchange-test-probe";

/// What the probe writes to descriptor 3 when asked to.
pub const FD3_GREETING: &str = "probe wrote this to descriptor 3\n";

/// The user of most tests.
pub const USER: &str = "bob";

/// One of the two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `backend-a`: `shmA/`, `a.conf`.
    A,
    /// `backend-b`: `shmB/`, `b.conf`.
    B,
}

impl Backend {
    /// Its `nfs_hostchange_hostname`.
    pub fn host(self) -> &'static str {
        match self {
            Backend::A => "backend-a",
            Backend::B => "backend-b",
        }
    }

    fn shm(self) -> &'static str {
        match self {
            Backend::A => "shmA",
            Backend::B => "shmB",
        }
    }

    fn conf(self) -> &'static str {
        match self {
            Backend::A => "a.conf",
            Backend::B => "b.conf",
        }
    }
}

/// The mail_location of a backend whose LISTINDEX root is `shm`.
pub fn mail_location(shm: &Path) -> String {
    format!(
        "maildir:~/Maildir:LISTINDEX={}/%2.256Nu/%u/dovecot.list.index",
        shm.display()
    )
}

/// A settings file for `host` with the given mail_location line (or none).
pub fn config_text(host: &str, location: Option<&str>) -> String {
    let mut text = format!(
        "# written by tests/support\nnfs_hostchange_hostname = {host}\nnfs_hostchange_log = stderr\n"
    );
    if let Some(location) = location {
        let _ = writeln!(text, "mail_location = {location}");
    }
    text
}

/// Dovecot's `%2.256Nu`: the first 8 bytes of MD5(user) as a big-endian
/// number, modulo 256, as two hex digits. Computed here independently of
/// the program's own expansion code.
pub fn hash_dir(user: &[u8]) -> String {
    let digest = Md5::digest(user);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("{:02x}", u64::from_be_bytes(first) % 256)
}

/// A temporary two-backend tree; removed when dropped.
pub struct Harness {
    _dir: tempfile::TempDir,
    /// The tree's root, canonical.
    pub root: PathBuf,
    /// The uid the wrapper is told to act as (`UID`).
    pub uid: u32,
    /// The gid the wrapper is told to act as (`GID`).
    pub gid: u32,
    counter: AtomicUsize,
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Harness {
    /// Builds the tree: `nfs/bob` (HOME, without Maildir), `shmA`, `shmB`,
    /// `a.conf`, `b.conf`, `out`, `run`.
    pub fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("nfs-hostchange-postlogin.")
            .tempdir()
            .expect("create a temporary directory");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let (uid, gid) = if running_as_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        // The user must be able to reach the tree (tempdir makes it 0700).
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let h = Harness {
            _dir: dir,
            root,
            uid,
            gid,
            counter: AtomicUsize::new(0),
        };
        fs::create_dir(h.path("out")).expect("mkdir out");
        fs::create_dir(h.path("run")).expect("mkdir run");
        h.mkdir_owned(&h.home());
        for backend in [Backend::A, Backend::B] {
            h.mkdir_owned(&h.shm(backend));
            h.write_config(
                backend.conf(),
                &config_text(backend.host(), Some(&mail_location(&h.shm(backend)))),
            );
        }
        h
    }

    /// `root/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// The user's HOME: `nfs/bob`.
    pub fn home(&self) -> PathBuf {
        self.path("nfs").join(USER)
    }

    /// INDEX: `nfs/bob/Maildir`.
    pub fn index(&self) -> PathBuf {
        self.home().join("Maildir")
    }

    /// INDEX/.lasthost.
    pub fn stamp_path(&self) -> PathBuf {
        self.index().join(".lasthost")
    }

    /// Creates INDEX (an existing mailbox on NFS).
    pub fn create_index(&self) {
        self.mkdir_owned(&self.index());
    }

    /// A backend's LISTINDEX root.
    pub fn shm(&self, backend: Backend) -> PathBuf {
        self.path(backend.shm())
    }

    /// A backend's settings file.
    pub fn config(&self, backend: Backend) -> PathBuf {
        self.path(backend.conf())
    }

    /// Writes a settings file `name` in the tree.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).expect("write settings");
        path
    }

    /// The user's LISTINDEX directory on a backend.
    pub fn listindex(&self, backend: Backend, user: &str) -> PathBuf {
        self.shm(backend).join(hash_dir(user.as_bytes())).join(user)
    }

    /// LISTINDEX/.lasthost: the local record (and lock).
    pub fn record_path(&self, backend: Backend, user: &str) -> PathBuf {
        self.listindex(backend, user).join(".lasthost")
    }

    /// The local record, decoded; panics on a corrupt one.
    pub fn record(&self, backend: Backend) -> Option<Stamp> {
        let path = self.record_path(backend, USER);
        let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Stamp::decode(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What INDEX/.lasthost is now, by stat (inode, mtime, content).
    pub fn stamp(&self) -> Stamp {
        stamp_of(&self.stamp_path())
    }

    /// Creates `path` and its missing parents, giving each one it created
    /// to the user (mode 0755).
    pub fn mkdir_owned(&self, path: &Path) {
        let mut missing = Vec::new();
        let mut p = path;
        while !p.exists() {
            missing.push(p.to_path_buf());
            p = p.parent().expect("a parent");
        }
        for dir in missing.iter().rev() {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
            self.chown(dir);
        }
    }

    /// Writes a file (creating its directory) owned by the user.
    pub fn plant(&self, path: &Path, content: &[u8]) {
        self.mkdir_owned(path.parent().expect("a parent"));
        fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.chown(path);
    }

    /// Gives `path` to the user.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// A fresh file name under `out/`.
    pub fn out_file(&self, stem: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.path("out").join(format!("{stem}.{n}"))
    }

    /// A login of the user on `backend`, as script-login would run it.
    pub fn login(&self, backend: Backend) -> Login<'_> {
        self.login_with(&self.config(backend))
    }

    /// A login with the settings file `config`.
    pub fn login_with(&self, config: &Path) -> Login<'_> {
        let uid = self.uid.to_string();
        let gid = self.gid.to_string();
        let env = [
            ("USER", USER.to_string()),
            ("HOME", self.home().display().to_string()),
            ("UID", uid),
            ("GID", gid),
            ("IP", "127.0.0.2".to_string()),
            ("LOCAL_IP", "127.0.0.1".to_string()),
            ("USERDB_KEYS", "HOME UID GID ".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        Login {
            h: self,
            options: vec!["--config".into(), config.into()],
            env,
            command: None,
            probe_modes: Vec::new(),
            probe_args: Vec::new(),
            stdin: None,
            inherit: Vec::new(),
            prefix: Vec::new(),
            run_as: None,
        }
    }

    /// Everything in the tree except `out/` and `run/`: what a login may
    /// have touched.
    pub fn snapshot(&self) -> Snapshot {
        let mut entries = BTreeMap::new();
        walk(&self.root, &self.root, &mut entries);
        Snapshot(entries)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// INDEX/.lasthost (or any file) as a [`Stamp`], by stat and read.
pub fn stamp_of(path: &Path) -> Stamp {
    let meta =
        fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    Stamp {
        ino: meta.ino(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        content: fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    }
}

/// The sorted names in a directory.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One file system entry of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
}

/// The state of a tree, for "nothing was touched" checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, Entry>);

impl Snapshot {
    /// The same snapshot without the entries at `paths` (relative to the
    /// harness root): for checks where exactly those may change.
    pub fn without(&self, paths: &[&Path]) -> Snapshot {
        let mut kept = self.0.clone();
        for path in paths {
            kept.remove(*path);
        }
        Snapshot(kept)
    }

    /// Panics, listing the differences, when `after` differs from `self`.
    pub fn assert_same(&self, after: &Snapshot, what: &str) {
        let mut diff = String::new();
        for (path, before) in &self.0 {
            match after.0.get(path) {
                None => {
                    let _ = writeln!(diff, "  removed: {}", path.display());
                }
                Some(now) if now != before => {
                    let _ = writeln!(diff, "  changed: {}: {before:?} -> {now:?}", path.display());
                }
                Some(_) => {}
            }
        }
        for path in after.0.keys().filter(|p| !self.0.contains_key(*p)) {
            let _ = writeln!(diff, "  created: {}", path.display());
        }
        assert!(diff.is_empty(), "{what}: the tree changed:\n{diff}");
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        if dir == root && (rel == Path::new("out") || rel == Path::new("run")) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let content = if meta.file_type().is_file() {
            Some(fs::read(&path).expect("read"))
        } else if meta.file_type().is_symlink() {
            Some(
                fs::read_link(&path)
                    .expect("readlink")
                    .into_os_string()
                    .into_vec(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Entry {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
            },
        );
        if meta.file_type().is_dir() {
            walk(root, &path, out);
        }
    }
}

/// A pipe whose ends are close-on-exec in this process (the tests run in
/// parallel threads: a descriptor without it would leak into other tests'
/// children).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by no one else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A wrapper invocation being set up. Defaults: `--config <backend>.conf`,
/// the script-login environment, the probe as command, stdin /dev/null,
/// stdout and stderr captured, no descriptor 3.
pub struct Login<'h> {
    h: &'h Harness,
    options: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    command: Option<Vec<OsString>>,
    probe_modes: Vec<&'static str>,
    probe_args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    inherit: Vec<OwnedFd>,
    prefix: Vec<OsString>,
    run_as: Option<(u32, u32)>,
}

impl Login<'_> {
    /// Sets `USER`.
    pub fn user(self, user: impl AsRef<OsStr>) -> Self {
        self.env("USER", user)
    }

    /// Sets (or replaces) an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.as_ref().to_os_string()));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Replaces the wrapper's options (default `--config <file>`).
    pub fn options(mut self, options: &[&OsStr]) -> Self {
        self.options = options.iter().map(|o| o.to_os_string()).collect();
        self
    }

    /// Execs `argv` instead of the probe.
    pub fn command(mut self, argv: &[&OsStr]) -> Self {
        self.command = Some(argv.iter().map(|o| o.to_os_string()).collect());
        self
    }

    /// Extra arguments for the probe, after its own.
    pub fn probe_args(mut self, args: &[&OsStr]) -> Self {
        self.probe_args = args.iter().map(|o| o.to_os_string()).collect();
        self
    }

    /// Makes the probe read its stdin to the end and report it.
    pub fn probe_reads_stdin(mut self) -> Self {
        self.probe_modes.push("read-stdin");
        self
    }

    /// Makes the probe write [`FD3_GREETING`] to descriptor 3.
    pub fn probe_writes_fd3(mut self) -> Self {
        self.probe_modes.push("write-fd3");
        self
    }

    /// Gives the wrapper a stdin pipe that already holds `data` (and is
    /// closed for writing), so a wrapper that read stdin would take it.
    pub fn stdin(mut self, data: &[u8]) -> Self {
        assert!(data.len() < 16 * 1024, "must fit in a pipe buffer");
        self.stdin = Some(data.to_vec());
        self
    }

    /// Gives the wrapper `fd` as its next inherited descriptor: the first
    /// call makes descriptor 3, the second 4 (as a checkpassword program
    /// gets them), and so on.
    pub fn inherit(mut self, fd: OwnedFd) -> Self {
        // Kept at 10 or above, close-on-exec, so that no source number is
        // one of the targets (3, 4...) in the child.
        let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .expect("dup the descriptor to inherit");
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        self.inherit.push(unsafe { OwnedFd::from_raw_fd(high) });
        self
    }

    /// Runs the wrapper under `prefix` (e.g. strace and its options).
    pub fn under(mut self, prefix: &[&OsStr]) -> Self {
        self.prefix = prefix.iter().map(|o| o.to_os_string()).collect();
        self
    }

    /// Runs the wrapper itself as `uid`/`gid` (no supplementary groups),
    /// for tests that need it to be unprivileged while this process is
    /// root (a chmod 000 file, for instance). Only root can do this.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// Starts the wrapper.
    pub fn spawn(self) -> Pending {
        let probe_out = self.h.out_file("probe");
        let command = match self.command {
            Some(command) => command,
            None => {
                let mut argv: Vec<OsString> = vec![
                    std::env::current_exe().expect("test binary").into(),
                    PROBE_MARKER.into(),
                    probe_out.clone().into(),
                    self.probe_modes.join(",").into(),
                ];
                argv.extend(self.probe_args);
                argv
            }
        };
        let mut cmd = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("postlogin")
            .args(&self.options)
            .args(&command)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.h.path("run"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            // std drops root's supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        match &self.stdin {
            Some(data) => {
                let (read, write) = pipe();
                let mut write = fs::File::from(write);
                write.write_all(data).expect("fill the stdin pipe");
                drop(write);
                cmd.stdin(Stdio::from(read));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        // The command sees 0, 1, 2, the inherited descriptors as 3, 4...
        // and nothing else, whatever this process inherited itself (a test
        // runner's jobserver pipe, for instance): what the command sees
        // beyond that came from the wrapper. The rest is marked
        // close-on-exec rather than closed, so that std's own pipe (which
        // reports a failed exec to the parent) keeps working.
        let sources: Vec<i32> = self.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
        // SAFETY: the closure runs in the forked child before exec. It calls
        // only dup2, close_range and fcntl, which are async-signal-safe,
        // and allocates nothing (`sources` was built before the fork). The
        // sources are open in the child (self.inherit lives until spawn
        // returns) and numbered 10 or above, so no dup2 overwrites one that
        // is still to be copied.
        unsafe {
            cmd.pre_exec(move || {
                let mut target = 3;
                for &source in &sources {
                    // dup2 gives a descriptor without close-on-exec.
                    if libc::dup2(source, target) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    target += 1;
                }
                let first = target as libc::c_uint;
                let flags = libc::CLOSE_RANGE_CLOEXEC;
                if libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) == -1 {
                    // Kernels before 5.11: one by one.
                    for fd in target..4096 {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("start the wrapper");
        drop(self.inherit);
        Pending {
            child,
            probe_out,
            env: self.env,
            command,
            started,
        }
    }

    /// Runs the wrapper to the end.
    pub fn run(self) -> Run {
        self.spawn().wait()
    }
}

/// A started wrapper.
pub struct Pending {
    child: Child,
    probe_out: PathBuf,
    env: Vec<(OsString, OsString)>,
    command: Vec<OsString>,
    started: Instant,
}

impl Pending {
    /// Waits at most `limit` for it to end; kills it (the process this
    /// harness started, by its pid) when it takes longer. The flag says
    /// whether it had to be killed.
    pub fn wait_timeout(mut self, limit: Duration) -> (Run, bool) {
        let deadline = Instant::now() + limit;
        let mut killed = false;
        loop {
            match self.child.try_wait().expect("poll the wrapper") {
                Some(_) => break,
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    killed = true;
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        (self.wait(), killed)
    }

    /// Waits for it (and the command it exec()ed) to end.
    pub fn wait(self) -> Run {
        let pid = self.child.id();
        let output = self.child.wait_with_output().expect("wait for the wrapper");
        Run {
            status: output.status,
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            pid,
            probe_out: self.probe_out,
            env: self.env,
            command: self.command,
            elapsed: self.started.elapsed(),
        }
    }
}

/// A finished wrapper run.
#[derive(Debug)]
pub struct Run {
    /// Its exit status (the command's, when exec worked).
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr (the log, with `nfs_hostchange_log = stderr`).
    pub stderr: String,
    /// The wrapper's pid (kept by the command it exec()ed).
    pub pid: u32,
    /// The command's argv as passed to the wrapper.
    pub command: Vec<OsString>,
    /// The environment the wrapper was started with.
    pub env: Vec<(OsString, OsString)>,
    /// How long it took.
    pub elapsed: Duration,
    probe_out: PathBuf,
}

impl Run {
    /// The log lines at `level` (`Info`, `Warning`, `Error`).
    pub fn lines(&self, level: &str) -> Vec<&str> {
        let needle = format!(": {level}: ");
        self.stderr
            .lines()
            .filter(|l| l.contains(&needle))
            .collect()
    }

    /// Whether the probe ran (and wrote its report).
    pub fn probe_ran(&self) -> bool {
        self.probe_out.exists()
    }

    /// The probe's report; panics, with the log, when it did not run.
    pub fn report(&self) -> Report {
        let data = fs::read(&self.probe_out).unwrap_or_else(|e| {
            panic!(
                "the command did not run ({e}); status {:?}, stderr:\n{}",
                self.status, self.stderr
            )
        });
        Report::parse(&data)
    }

    /// Exit status 0, the probe ran, nothing on stdout.
    pub fn assert_ok(&self) {
        assert!(
            self.status.success(),
            "exit status {:?} (signal {:?}), stderr:\n{}",
            self.status.code(),
            self.status.signal(),
            self.stderr
        );
        assert!(
            self.probe_ran(),
            "the command did not run; stderr:\n{}",
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "stdout must stay empty, got {:?}",
            String::from_utf8_lossy(&self.stdout)
        );
    }

    /// [`Run::assert_ok`], and no Error or Warning line.
    pub fn assert_quiet(&self) {
        self.assert_ok();
        let bad: Vec<&str> = self
            .lines("Error")
            .into_iter()
            .chain(self.lines("Warning"))
            .collect();
        assert!(
            bad.is_empty(),
            "unexpected problems logged:\n{}",
            self.stderr
        );
    }

    /// The environment as `KEY=VALUE` byte strings, sorted.
    pub fn env_sent(&self) -> Vec<Vec<u8>> {
        let mut env: Vec<Vec<u8>> = self
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv
            })
            .collect();
        env.sort();
        env
    }
}

/// What the probe saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its argv, argv\[0] included.
    pub argv: Vec<Vec<u8>>,
    /// Its environment, in the order it got it.
    pub env: Vec<Vec<u8>>,
    /// Its open descriptors at start and where they point (`/proc/self/fd`).
    pub fds: Vec<(i32, String)>,
    /// Its stdin, read to the end (when asked).
    pub stdin: Option<Vec<u8>>,
    /// The `Uid:` and `Gid:` lines of `/proc/self/status`
    /// (real, effective, saved, file system).
    pub ids: Vec<String>,
}

impl Report {
    fn parse(data: &[u8]) -> Report {
        let text = std::str::from_utf8(data).expect("report is ASCII");
        let mut report = Report::default();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "arg" => report.argv.push(unhex(value)),
                "env" => report.env.push(unhex(value)),
                "fd" => {
                    let (n, link) = value.split_once(' ').expect("fd line");
                    report.fds.push((
                        n.parse().expect("fd number"),
                        String::from_utf8_lossy(&unhex(link)).into_owned(),
                    ));
                }
                "stdin" => report.stdin = Some(unhex(value)),
                "id" => report
                    .ids
                    .push(String::from_utf8_lossy(&unhex(value)).into_owned()),
                other => panic!("unknown report line {other:?}"),
            }
        }
        report
    }

    /// The environment, sorted.
    pub fn env_sorted(&self) -> Vec<Vec<u8>> {
        let mut env = self.env.clone();
        env.sort();
        env
    }

    /// The open descriptor numbers.
    pub fn fd_numbers(&self) -> Vec<i32> {
        self.fds.iter().map(|(n, _)| *n).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------
// The probe.

/// Runs before the test harness in every start of this binary (glibc calls
/// `.init_array` entries with main's argc, argv and envp). Returns at once
/// unless argv\[1] is [`PROBE_MARKER`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array"]
static PROBE_HOOK: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = probe_hook;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn probe_hook(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    if argc < 4 || argv.is_null() {
        return;
    }
    // SAFETY: glibc passes main's argv: `argc` valid NUL-terminated strings.
    let args = unsafe { c_strings(argv, usize::try_from(argc).unwrap_or(0)) };
    if args[1] != PROBE_MARKER.as_bytes() {
        return;
    }
    // Before anything opens a descriptor.
    let fds = open_descriptors();
    // SAFETY: envp is main's environment: NULL-terminated, valid strings.
    let env = unsafe { c_strings(envp, usize::MAX) };
    let code = match probe(&args, &env, &fds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probe: {e}");
            99
        }
    };
    // SAFETY: _exit ends the process at once; nothing is left to clean up.
    unsafe { libc::_exit(code) }
}

/// Reads a NULL-terminated (or `max`-long) array of C strings.
///
/// # Safety
/// `list` must point to at least `max` valid string pointers, or to fewer
/// followed by a null pointer.
unsafe fn c_strings(list: *const *const libc::c_char, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    for i in 0..max {
        // SAFETY: within the array the caller vouches for.
        let p = unsafe { *list.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: a valid NUL-terminated string, per the caller.
        out.push(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec());
    }
    out
}

/// The open descriptors, from `/proc/self/fd`, without the one used to
/// read it.
fn open_descriptors() -> Vec<(i32, Vec<u8>)> {
    // SAFETY: the path is a NUL-terminated literal.
    let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
    if dir.is_null() {
        return vec![(-1, b"opendir /proc/self/fd failed".to_vec())];
    }
    // SAFETY: `dir` is a valid DIR* until closedir below.
    let own = unsafe { libc::dirfd(dir) };
    let mut numbers = Vec::new();
    loop {
        // SAFETY: `dir` is valid; readdir returns null at the end.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name of a returned entry is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(n) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok()) {
            if n != own {
                numbers.push(n);
            }
        }
    }
    // SAFETY: `dir` is valid and closed once.
    unsafe { libc::closedir(dir) };
    numbers.sort_unstable();
    numbers
        .into_iter()
        .map(|n| {
            let link = fs::read_link(format!("/proc/self/fd/{n}"))
                .map(|p| p.into_os_string().into_vec())
                .unwrap_or_else(|e| format!("readlink: {e}").into_bytes());
            (n, link)
        })
        .collect()
}

/// argv: the probe, the marker, the report file, modes (comma-separated:
/// `read-stdin`, `write-fd3`), then anything.
fn probe(args: &[Vec<u8>], env: &[Vec<u8>], fds: &[(i32, Vec<u8>)]) -> std::io::Result<()> {
    let out = Path::new(OsStr::from_bytes(&args[2]));
    let modes = String::from_utf8_lossy(&args[3]).into_owned();
    let mut report = String::new();
    for arg in args {
        let _ = writeln!(report, "arg {}", hex(arg));
    }
    for var in env {
        let _ = writeln!(report, "env {}", hex(var));
    }
    for (n, link) in fds {
        let _ = writeln!(report, "fd {n} {}", hex(link));
    }
    let status = fs::read_to_string("/proc/self/status")?;
    for line in status.lines() {
        if line.starts_with("Uid:") || line.starts_with("Gid:") {
            let _ = writeln!(report, "id {}", hex(line.as_bytes()));
        }
    }
    for mode in modes.split(',').filter(|m| !m.is_empty()) {
        match mode {
            "read-stdin" => {
                // SAFETY: descriptor 0 is borrowed; ManuallyDrop keeps it open.
                let mut stdin = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(0) });
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut *stdin, &mut data)?;
                let _ = writeln!(report, "stdin {}", hex(&data));
            }
            "write-fd3" => {
                // SAFETY: descriptor 3 is borrowed; ManuallyDrop keeps it open.
                let mut fd3 = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(3) });
                fd3.write_all(FD3_GREETING.as_bytes())?;
            }
            other => {
                return Err(std::io::Error::other(format!("unknown probe mode {other}")));
            }
        }
    }
    fs::write(out, report)
}

// ---------------------------------------------------------------------------
// strace.

/// The strace program, if installed.
pub fn find_strace() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("strace"))
        .find(|p| p.is_file())
}

/// One system call of a trace: its name and the whole line.
#[derive(Debug, Clone)]
pub struct Syscall {
    /// `openat`, `read`...
    pub name: String,
    /// The line as strace wrote it.
    pub line: String,
}

/// Parses `strace -f -o FILE` output (lines start with the pid).
pub fn parse_trace(text: &str) -> Vec<Syscall> {
    let mut calls = Vec::new();
    for line in text.lines() {
        let rest = line.trim_start();
        // "1234 openat(...)" or "[pid 1234] openat(...)".
        let rest = match rest.strip_prefix("[pid ") {
            Some(r) => r.split_once(']').map_or(r, |(_, r)| r),
            None => rest.split_once(' ').map_or(rest, |(pid, r)| {
                if pid.bytes().all(|b| b.is_ascii_digit()) {
                    r
                } else {
                    rest
                }
            }),
        }
        .trim_start();
        let name = if let Some(resumed) = rest.strip_prefix("<... ") {
            resumed.split(' ').next().unwrap_or("")
        } else {
            rest.split('(').next().unwrap_or("")
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // "+++ exited with 0 +++", signals.
        }
        calls.push(Syscall {
            name: name.to_string(),
            line: line.to_string(),
        });
    }
    calls
}

/// Whether `line` names `dir` or something below it as a path string
/// (`"dir"`, `"dir/..."`).
pub fn names_path_under(line: &str, dir: &Path) -> bool {
    let d = dir.display().to_string();
    line.contains(&format!("\"{d}\"")) || line.contains(&format!("\"{d}/"))
}

/// Whether `line` has a descriptor that `-y` shows as `dir` or below it
/// (`3</dir/...>`).
pub fn names_fd_under(line: &str, dir: &Path) -> bool {
    let d = dir.display().to_string();
    line.contains(&format!("<{d}>")) || line.contains(&format!("<{d}/"))
}
