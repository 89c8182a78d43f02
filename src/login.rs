//! The login check (`postlogin`): drop the user's local list index when
//! another backend served the user since this one last did.
//!
//! The steps follow the design's login algorithm. Every failure leads to
//! the same place: the login goes on, and a list index that may be stale is
//! dropped rather than kept (Dovecot rebuilds a missing one by itself).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::{geteuid, setfsgid, setfsuid, Gid, Uid};

use crate::listindex;
use crate::lock::{LockError, UserLock, Wait};
use crate::log::{Logger, Shown};
use crate::mail_location::{self, PathError, UserPaths};
use crate::migrate;
use crate::nfs::{self, WriteError};
use crate::record::Stamp;
use crate::settings::{self, Settings, UserOverrides};
use crate::varexpand::Vars;

/// The effective uid, as the kernel passed it at exec (AT_EUID in the
/// auxiliary vector): glibc's geteuid() is a system call every time, this
/// is none. Nothing in this program changes the effective uid before the
/// login check, so the two agree. Should the vector lack the entry
/// (getauxval then fails with ENOENT), it asks the kernel.
fn effective_uid() -> Uid {
    nix::errno::Errno::clear();
    // SAFETY: getauxval only reads the auxiliary vector the C library
    // saved at start-up; it takes no pointer.
    let euid = unsafe { libc::getauxval(libc::AT_EUID) };
    if euid == 0 && nix::errno::Errno::last() == nix::errno::Errno::ENOENT {
        return geteuid();
    }
    Uid::from_raw(euid as u32)
}

/// How often the user's directory may vanish under us (removed by the
/// cleaner between our opening it and locking the record) before we give up.
const DIR_GONE_RETRIES: u32 = 5;

/// What the check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The local list index is current and was kept.
    Current,
    /// The local list index was dropped (the user changed backend, this is
    /// the first login here, or something failed and the cache was not
    /// trusted).
    Dropped,
    /// Nothing was checked or touched (bad settings, a refused user name,
    /// no identity to act as): the login goes on as if without this program.
    Skipped,
}

/// What the check leaves open: the user's lock and the descriptors it
/// opened (settings file, LISTINDEX directories, INDEX/.lasthost). All are
/// close-on-exec, so the login's exec releases the lock and closes them:
/// the program calls `std::mem::forget` on this right before its exec,
/// saving an unlock and a close() each. Dropped (when the exec fails, or in
/// tests), it unlocks and closes as usual.
#[derive(Debug, Default)]
#[must_use = "dropping it releases the lock and closes the descriptors now"]
pub struct Held {
    /// The user's lock, when it was taken.
    pub lock: Option<UserLock>,
    /// Descriptors left open.
    pub fds: Vec<OwnedFd>,
}

/// What [`check`] gives back.
#[derive(Debug)]
pub struct Checked {
    /// What the check did.
    pub outcome: Outcome,
    /// What it left open for the exec to close.
    pub held: Held,
}

/// The variables Dovecot passes to a post-login script (or a checkpassword
/// program passes on): `USER` and the userdb fields.
#[derive(Debug, Clone, Default)]
pub struct LoginEnv {
    /// `USER`.
    pub user: Option<Vec<u8>>,
    /// `HOME`.
    pub home: Option<Vec<u8>>,
    /// `UID`.
    pub uid: Option<Vec<u8>>,
    /// `GID`.
    pub gid: Option<Vec<u8>>,
    /// `LOCAL_IP`.
    pub local_ip: Option<Vec<u8>>,
    /// `IP`.
    pub remote_ip: Option<Vec<u8>>,
}

impl LoginEnv {
    /// Reads the variables from the environment; empty ones count as unset.
    pub fn from_env() -> LoginEnv {
        let get = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().to_vec())
        };
        LoginEnv {
            user: get("USER"),
            home: get("HOME"),
            uid: get("UID"),
            gid: get("GID"),
            local_ip: get("LOCAL_IP"),
            remote_ip: get("IP"),
        }
    }
}

/// Runs the check for the user in the environment. `config` is the
/// `--config` option. Never fails: what went wrong is logged, and the
/// caller execs the next program whatever the outcome. The lock and the
/// descriptors come back in [`Checked::held`], still held: see [`Held`].
pub fn check(config: Option<&OsStr>, log: &mut Logger) -> Checked {
    let mut held = Held::default();
    let outcome = check_holding(config, log, &mut held);
    Checked { outcome, held }
}

/// [`check`], leaving what stays open in `held`.
fn check_holding(config: Option<&OsStr>, log: &mut Logger, held: &mut Held) -> Outcome {
    let env = LoginEnv::from_env();
    if let Some(user) = env.user.as_deref() {
        log.set_user(user);
    }

    // Settings first, so that every later line goes where they say; until
    // then lines go to syslog and stderr both.
    let (path, explicit) = settings::config_path(config);
    let loaded = match settings::load_keeping(&path, explicit, &mut held.fds) {
        Ok(loaded) => loaded,
        Err(e) => {
            log.error(format_args!("{e}: list index not checked"));
            return Outcome::Skipped;
        }
    };
    let mut settings = loaded.settings;
    log.set_target(settings.log);
    for warning in &loaded.warnings {
        log.warning(format_args!("{warning}"));
    }
    if !loaded.errors.is_empty() {
        for error in &loaded.errors {
            log.error(format_args!("{error}: list index not checked"));
        }
        return Outcome::Skipped;
    }
    let Some(user) = env.user.as_deref() else {
        log.error(format_args!(
            "USER is not set or empty: list index not checked"
        ));
        return Outcome::Skipped;
    };
    if let Some(message) = UserOverrides::from_env().apply(&mut settings) {
        log.warning(format_args!("{message}"));
    }
    let Some(location) = settings.location() else {
        log.error(format_args!(
            "mail_location is not set in {} and the userdb gave no MAIL: list index not checked",
            path.shown()
        ));
        return Outcome::Skipped;
    };

    // Paths: INDEX on NFS, LISTINDEX in tmpfs.
    let vars = Vars {
        user,
        home: env.home.as_deref(),
        uid: env.uid.as_deref(),
        gid: env.gid.as_deref(),
        local_ip: env.local_ip.as_deref(),
        remote_ip: env.remote_ip.as_deref(),
    };
    let (paths, index_error) = match location.resolve(&vars) {
        Ok(paths) => (paths, None),
        // INDEX is unusable for this user, LISTINDEX is known: drop there.
        Err(PathError::Index { paths, error }) => (*paths, Some(error)),
        Err(e @ PathError::Refused(_)) => {
            log.error(format_args!("{e}: nothing touched"));
            return Outcome::Skipped;
        }
        Err(e) => {
            log.error(format_args!(
                "{}: {}: {e}: list index not checked",
                settings.location_origin(),
                location.setting()
            ));
            return Outcome::Skipped;
        }
    };

    // Identity: files we create must belong to the user.
    // The identity is given back when `_identity` goes at the end of the
    // check: an exec with a file-system identity other than the effective
    // one runs the next program in secure-execution mode, and glibc then
    // strips TMPDIR, LD_LIBRARY_PATH and more from its environment.
    let (uid, _identity) = match act_as_user(&env) {
        Ok(acting) => acting,
        Err(message) => {
            log.error(format_args!("{message}: nothing touched"));
            return Outcome::Skipped;
        }
    };

    // The user's LISTINDEX directory and lock. When the cleaner removed
    // the directory while we waited for the lock, open it again.
    let mut attempts = 0;
    let (dir, lock) = loop {
        let dir = match listindex::open_or_create(&paths, uid, &mut held.fds) {
            Ok(dir) => dir,
            // The cleaner removed a directory on the way down between our
            // opening it and creating the next one in it: start over.
            Err(e) if e.errno == nix::errno::Errno::ENOENT && attempts < DIR_GONE_RETRIES => {
                attempts += 1;
                continue;
            }
            Err(e) => {
                log.error(format_args!("{e}: list index not checked"));
                stamp_anyway(&paths, index_error.is_none(), &settings, log);
                return Outcome::Dropped;
            }
        };
        match UserLock::acquire(dir.as_fd(), &paths.listindex, Wait::Bounded) {
            Ok(lock) => break (dir, lock),
            Err(LockError::DirGone) if attempts < DIR_GONE_RETRIES => attempts += 1,
            Err(e) => {
                if let LockError::Busy = e {
                    log.error(format_args!(
                        "{}: lock still held after {} s: dropping the list index without it",
                        paths.listindex.join(mail_location::LASTHOST).shown(),
                        crate::lock::LOCK_WAIT.as_secs()
                    ));
                } else {
                    log.error(format_args!("{e}: dropping the list index"));
                }
                drop_unlocked(dir.as_fd(), &paths, log);
                stamp_anyway(&paths, index_error.is_none(), &settings, log);
                return Outcome::Dropped;
            }
        }
    };
    let outcome = match index_error {
        None => check_locked(&lock, dir.as_fd(), &paths, &settings, log, &mut held.fds),
        Some(error) => {
            if drop_locked(&lock, dir.as_fd(), &paths, log).is_some() {
                log.error(format_args!(
                    "INDEX for this user: {error}: list index dropped, no record stored"
                ));
            }
            Outcome::Dropped
        }
    };

    // Every login marks the record: the cleaner ages users by its mtime.
    if let Err(e) = lock.touch() {
        log.warning(format_args!("{e}"));
    }
    held.lock = Some(lock);
    held.fds.push(dir);
    outcome
}

/// Steps 3 to 6 of the login algorithm. Locked: the caller holds the
/// user's lock for the whole of it. Descriptors left open go to `keep`.
fn check_locked(
    lock: &UserLock,
    dir: BorrowedFd<'_>,
    paths: &UserPaths,
    settings: &Settings,
    log: &Logger,
    keep: &mut Vec<OwnedFd>,
) -> Outcome {
    // The local record of what INDEX/.lasthost was.
    let mut record = match lock.read_record() {
        Ok(data) => match Stamp::decode(&data) {
            Ok(record) => record,
            Err(e) => {
                log.warning(format_args!("{}: {e}", lock.path().shown()));
                None
            }
        },
        Err(e) => {
            log.warning(format_args!("{e}"));
            None
        }
    };

    // Step 3: migration, when enabled.
    let migration = if settings.migration {
        migrate_locked(lock, dir, paths, &mut record, log)
    } else {
        Migration::Off
    };

    // INDEX/.lasthost on NFS.
    let current = match nfs::read_stamp_keeping(&paths.index, keep) {
        Ok(current) => current,
        Err(e) => {
            log.error(format_args!("{e}: dropping the list index"));
            drop_locked(lock, dir, paths, log);
            stamp_anyway(paths, true, settings, log);
            return Outcome::Dropped;
        }
    };
    if let (Some(record), Some(current)) = (&record, &current) {
        if record == current {
            return Outcome::Current;
        }
    }

    // Another backend served the user, or there is no valid record: drop
    // the list index (unless migration just copied it in), then stamp
    // INDEX/.lasthost and remember the stamp.
    let dropped = if migration == Migration::Moved {
        0
    } else {
        match drop_locked(lock, dir, paths, log) {
            Some(dropped) => dropped,
            None => {
                stamp_anyway(paths, true, settings, log);
                return Outcome::Dropped;
            }
        }
    };
    if dropped > 0 {
        let previous = match &current {
            Some(stamp) => format!("last served by {}", stamp.host()),
            None => format!("no {} on NFS", mail_location::LASTHOST),
        };
        log.info(format_args!(
            "dropped the list index in {} ({dropped} file{}): {previous}",
            paths.listindex.shown(),
            if dropped == 1 { "" } else { "s" }
        ));
    }
    let host = host_name(settings);
    match nfs::write_stamp(&paths.index, &host) {
        Ok(_) if migration == Migration::Failed => {
            // No record: the next login tries the migration again.
        }
        Ok(stamp) => {
            if let Err(e) = lock.write_record(&stamp.encode()) {
                log.error(format_args!("{e}: no record stored"));
                let _ = lock.write_record(b"");
            }
        }
        Err(WriteError::IndexMissing(index)) => {
            // Dovecot creates INDEX (and often the home above it) at a new
            // user's first write, so this is mostly a new user. NFS not
            // being mounted looks the same from here, but Dovecot itself
            // then fails loudly.
            log.info(format_args!(
                "INDEX {} does not exist yet (a new user?): no record stored",
                index.shown()
            ));
        }
        Err(WriteError::Sys(e)) => {
            log.error(format_args!("{e}: list index dropped, no record stored"));
        }
    }
    Outcome::Dropped
}

/// What the migration step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Migration {
    /// Migration is not enabled.
    Off,
    /// Nothing to move.
    Idle,
    /// The NFS list index was copied in and removed from NFS.
    Moved,
    /// Migration failed and the NFS list index is still there: no record
    /// may be stored, so that the next login tries again.
    Failed,
}

/// Step 3. Locked. When INDEX/PREFIX.log exists, a backend without this
/// program used the NFS list index: the local record and list index are
/// dropped. Then, when there is no local record, the NFS list index (if
/// any) is moved in. `record` is cleared when the local one was dropped.
fn migrate_locked(
    lock: &UserLock,
    dir: BorrowedFd<'_>,
    paths: &UserPaths,
    record: &mut Option<Stamp>,
    log: &Logger,
) -> Migration {
    let replaced_local = match migrate::nfs_list_index_in_use(paths) {
        Ok(true) => record.is_some(),
        Ok(false) if record.is_some() => return Migration::Idle,
        Ok(false) => false,
        Err(e) => {
            // Whether another backend used the NFS list index is unknown:
            // trust nothing local.
            log.error(format_args!("{e}: dropping the list index"));
            *record = None;
            drop_locked(lock, dir, paths, log);
            return Migration::Failed;
        }
    };

    // No local record from here on: the local list index goes, and the NFS
    // one (if any) comes in its place.
    *record = None;
    if drop_locked(lock, dir, paths, log).is_none() {
        return Migration::Failed;
    }
    match migrate::move_into_locked(dir, paths) {
        Ok((0, _)) => Migration::Idle,
        Ok((files, bytes)) => {
            log.info(format_args!(
                "migrated the list index from {} to {} ({files} file{}, {bytes} bytes){}",
                paths.index.shown(),
                paths.listindex.shown(),
                if files == 1 { "" } else { "s" },
                if replaced_local {
                    ", replacing the local one: a backend without nfs-hostchange used it"
                } else {
                    ""
                }
            ));
            Migration::Moved
        }
        Err(e) if e.nfs_removed => {
            log.error(format_args!(
                "{}: list index not migrated; the NFS copy was deleted too, \
                 Dovecot rebuilds the list index",
                e.cause
            ));
            Migration::Idle
        }
        Err(e) => {
            log.error(format_args!(
                "{}: list index not migrated, and the NFS copy could not be deleted",
                e.cause
            ));
            Migration::Failed
        }
    }
}

/// Forgets the record, then drops the list index files. Locked. Returns
/// how many files were dropped, or `None` (logged) when that failed; the
/// record then stays empty so that the next login tries again.
fn drop_locked(
    lock: &UserLock,
    dir: BorrowedFd<'_>,
    paths: &UserPaths,
    log: &Logger,
) -> Option<usize> {
    if let Err(e) = lock.write_record(b"") {
        log.error(format_args!("{e}"));
    }
    match listindex::drop_files(dir, &paths.listindex, &paths.prefix) {
        Ok(count) => Some(count),
        Err(e) => {
            log.error(format_args!("{e}: the list index may be stale"));
            None
        }
    }
}

/// Drops the list index files without the lock (it could not be taken).
/// The record is left alone: only the lock holder may write it, and with
/// the list index gone a matching record does no harm.
fn drop_unlocked(dir: BorrowedFd<'_>, paths: &UserPaths, log: &Logger) {
    if let Err(e) = listindex::drop_files(dir, &paths.listindex, &paths.prefix) {
        log.error(format_args!("{e}: the list index may be stale"));
    }
}

/// Renews INDEX/.lasthost when this backend could not check or record the
/// user properly but serves the user all the same: every other backend's
/// record then stops matching, and they drop their list indexes at the next
/// login instead of trusting them. Nothing is recorded locally, so this
/// backend checks again next time. `index_known` is false when INDEX could
/// not be worked out (then there is nothing to renew).
fn stamp_anyway(paths: &UserPaths, index_known: bool, settings: &Settings, log: &Logger) {
    if !index_known {
        return;
    }
    match nfs::write_stamp(&paths.index, &host_name(settings)) {
        Ok(_) | Err(WriteError::IndexMissing(_)) => {}
        // A warning: the error that led here was logged already, and this
        // one mostly shares its cause.
        Err(WriteError::Sys(e)) => log.warning(format_args!(
            "{e}: INDEX/.lasthost not renewed, other backends may keep their \
             list indexes for this user"
        )),
    }
}

/// This backend's name: `nfs_hostchange_hostname`, else the host name.
fn host_name(settings: &Settings) -> String {
    if let Some(name) = &settings.hostname {
        return name.clone();
    }
    match nix::unistd::gethostname() {
        Ok(name) if settings::check_hostname(&name.to_string_lossy()).is_ok() => {
            name.to_string_lossy().into_owned()
        }
        _ => "unknown-host".to_string(),
    }
}

/// Run as root (a post-login service without `-d`, or a checkpassword
/// chain run as root), act on files with the user's identity from `UID`
/// and `GID`, so that everything created belongs to the user. Returns the
/// uid files are created with, and a guard that gives the file-system
/// identity back (to root's) when dropped, before the exec: the next
/// program must run exactly as it would have, and an exec with a changed
/// file-system identity would put it in secure-execution mode.
fn act_as_user(env: &LoginEnv) -> Result<(u32, Option<ActingAsUser>), String> {
    let euid = effective_uid();
    if !euid.is_root() {
        return Ok((euid.as_raw(), None));
    }
    let number = |value: &Option<Vec<u8>>| {
        value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let (Some(uid), Some(gid)) = (number(&env.uid), number(&env.gid)) else {
        return Err(
            "running as root, and the userdb gave no numeric UID and GID to act as".to_string(),
        );
    };
    if uid == 0 {
        return Err("running as root for a user with UID 0".to_string());
    }
    setfsgid(Gid::from_raw(gid));
    setfsuid(Uid::from_raw(uid));
    let acting = ActingAsUser;
    // Both calls return the previous value: asking again tells whether the
    // change took effect. (When it did not, `acting` gives back root's.)
    if setfsgid(Gid::from_raw(gid)) != Gid::from_raw(gid)
        || setfsuid(Uid::from_raw(uid)) != Uid::from_raw(uid)
    {
        return Err(format!("could not act as uid {uid} gid {gid}"));
    }
    Ok((uid, Some(acting)))
}

/// While this lives, file-system calls use the user's identity; dropping
/// it gives root's back.
#[derive(Debug)]
struct ActingAsUser;

impl Drop for ActingAsUser {
    fn drop(&mut self) {
        setfsuid(Uid::from_raw(0));
        setfsgid(Gid::from_raw(0));
    }
}
