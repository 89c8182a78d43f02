//! What the machine must provide (Dovecot, the test mail user, root), and
//! scratch directories the unprivileged mail processes can use.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The unprivileged user the test instances run mail processes as
/// (`scripts/install-deps` creates it). Dovecot refuses to run them as root.
pub const TEST_USER: &str = "nfshc-test";

/// Where Debian installs Dovecot's helper programs.
pub const LIBEXEC_DIR: &str = "/usr/lib/dovecot";

/// Programs the fixtures need below `LIBEXEC_DIR`.
const LIBEXEC_PROGRAMS: &[&str] = &["imap", "imap-login", "pop3", "pop3-login", "script-login"];

/// Checks that Dovecot, the test user and root privileges are available.
///
/// When something is missing, panics if `CI=true` (CI must run these tests,
/// `.ci/run` installs everything), otherwise prints a skip notice naming the
/// test and returns false.
pub fn prerequisites_or_skip(test: &str) -> bool {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return true;
    }
    let what = missing.join("; ");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: real-Dovecot prerequisites missing with CI=true: {what} \
             (install them with `bash scripts/install-deps`; run the tests as root)"
        );
    }
    eprintln!(
        "SKIPPED {test}: {what} (run `sudo bash scripts/install-deps`, \
         then the tests as root)"
    );
    false
}

fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if dovecot_binary().is_none() {
        missing.push("no dovecot binary in PATH or /usr/sbin".to_string());
    }
    for program in LIBEXEC_PROGRAMS {
        let path = Path::new(LIBEXEC_DIR).join(program);
        if !path.is_file() {
            missing.push(format!("{} not found", path.display()));
        }
    }
    if user_ids(TEST_USER).is_err() {
        missing.push(format!("no user {TEST_USER}"));
    }
    match current_uid() {
        Ok(0) => {}
        Ok(uid) => missing.push(format!("not root (uid {uid}); Dovecot must start as root")),
        Err(e) => missing.push(e),
    }
    missing
}

/// The `dovecot` master binary: from PATH, else `/usr/sbin/dovecot`.
pub fn dovecot_binary() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("dovecot"))
        .find(|p| p.is_file())
}

/// `dovecot --version`, for transcripts.
pub fn dovecot_version() -> Result<String, String> {
    let bin = dovecot_binary().ok_or("no dovecot binary")?;
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// uid and gid of `user`, from `id` (so NSS is honoured).
pub fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("running id {flag} {user}: {e}"))?;
        if !out.status.success() {
            return Err(format!("no such user: {user}"));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id {flag} {user}: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn current_uid() -> Result<u32, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .ok_or_else(|| "no Uid: line in /proc/self/status".to_string())
}

/// A directory under /tmp, removed on drop unless a test is panicking or
/// `NFSHC_KEEP_TMP` is set (then its path is printed, for a look at the
/// configuration and logs).
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh directory, mode 0755 so the login and mail processes
    /// (running as other users) can reach what lies below.
    pub fn new(label: &str) -> Result<ScratchDir, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Short: unix socket paths below it must stay under 108 bytes.
        let path = PathBuf::from(format!(
            "/tmp/nfshc-{label}-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let dir = ScratchDir { path };
        set_mode(&dir.path, 0o755)?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("NFSHC_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

/// Creates `path` with `mode`, owned by the test user.
pub fn mkdir_for_test_user(path: &Path, mode: u32) -> Result<(), String> {
    let (uid, gid) = user_ids(TEST_USER)?;
    fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    set_mode(path, mode)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {TEST_USER} {}: {e}", path.display()))
}

/// Writes a file readable by everyone (configuration for processes running
/// as the test user).
pub fn write_public_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    set_mode(path, 0o644)
}
