//! The per-user lock: an exclusive flock on LISTINDEX/.lasthost, the local
//! host record itself. Logins wait for it a bounded time; the cleaner only
//! tries it.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, futimens, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::ftruncate;

use crate::mail_location::LASTHOST;
use crate::sys::{read_at_most, retry_eintr, Context, SysError};

/// The longest a login waits for another holder of the user's lock (a
/// concurrent login of the same user, or the cleaner) before it gives up
/// on the cache and goes on without it.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often the lock file may turn out to have been replaced or removed
/// (by the cleaner) between opening and locking it before we give up.
const LOCK_REOPEN_MAX: u32 = 20;

/// The first and the longest pause between two tries of a held lock.
const LOCK_POLL_FIRST: Duration = Duration::from_millis(1);
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

/// The largest local record read; a real one is under 200 bytes.
const RECORD_MAX: u64 = 4096;

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else held it for the whole wait (or, when not waiting, now).
    Busy,
    /// The directory itself was removed (by the cleaner) while we waited:
    /// open it again from the root and start over.
    DirGone,
    /// A system call failed.
    Sys(SysError),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy => write!(f, "the user's lock is held by another process"),
            LockError::DirGone => write!(f, "the user's directory was removed"),
            LockError::Sys(e) => e.fmt(f),
        }
    }
}

impl From<SysError> for LockError {
    fn from(e: SysError) -> Self {
        LockError::Sys(e)
    }
}

/// The user's lock, held until this value is dropped. Through it the local
/// record is read and written; only the holder may do either.
#[derive(Debug)]
pub struct UserLock {
    file: Flock<File>,
    path: PathBuf,
    /// The record's size: as fstat() saw it right after locking, then as
    /// [`UserLock::write_record`] left it. Only the holder writes the
    /// record, so this is its size for as long as the lock is held.
    size: Cell<u64>,
}

/// Whether to wait for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait up to [`LOCK_WAIT`].
    Bounded,
    /// Fail with [`LockError::Busy`] at once.
    No,
}

impl UserLock {
    /// Opens (creating it, mode 0600) and locks `dir/.lasthost`. After
    /// locking, checks that the locked file is still the one at that path: a
    /// cleaner may have removed it while we waited, and then we start over.
    /// `dir_path` is `dir`'s path, for messages.
    pub fn acquire(
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        wait: Wait,
    ) -> Result<UserLock, LockError> {
        match open_and_lock(dir, dir_path, true, wait)? {
            Some(lock) => Ok(lock),
            None => Err(LockError::DirGone),
        }
    }

    /// Locks an existing `dir/.lasthost` without creating it; `None` when
    /// there is none. For the cleaner, which must not create records.
    pub fn acquire_existing(
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        wait: Wait,
    ) -> Result<Option<UserLock>, LockError> {
        open_and_lock(dir, dir_path, false, wait)
    }

    /// Reads the record. Locked: only the holder calls this.
    ///
    /// Reads as many bytes as the record holds (at most [`RECORD_MAX`]),
    /// known from the fstat() done when locking: one read(), and none just
    /// to see the end. Should the file be shorter after all, the read
    /// stops at its end.
    pub fn read_record(&self) -> Result<Vec<u8>, SysError> {
        let want = self.size.get().min(RECORD_MAX) as usize;
        // The file offset is 0: the descriptor is fresh and writes use pwrite.
        read_at_most(self.file.as_fd(), want).ctx("read", &self.path)
    }

    /// Replaces the record's content (empty content means "no record").
    /// A crash half-way leaves a truncated record, which never matches.
    pub fn write_record(&self, data: &[u8]) -> Result<(), SysError> {
        retry_eintr(|| ftruncate(self.file.as_fd(), 0)).ctx("ftruncate", &self.path)?;
        self.size.set(0);
        let written = self.file.write_all_at(data, 0);
        // After a failed write the size is unknown: the most it can be.
        self.size.set(match written {
            Ok(()) => data.len() as u64,
            Err(_) => RECORD_MAX,
        });
        written.map_err(|e| io_error("write", &self.path, e))
    }

    /// Sets the record's atime and mtime to now: the cleaner ages users by
    /// the mtime, which only logins set.
    pub fn touch(&self) -> Result<(), SysError> {
        futimens(
            self.file.as_fd(),
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_NOW,
        )
        .ctx("futimens", &self.path)
    }

    /// The record's status (for its mtime).
    pub fn stat(&self) -> Result<nix::sys::stat::FileStat, SysError> {
        fstat(self.file.as_fd()).ctx("fstat", &self.path)
    }

    /// The record's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `dir/.lasthost` (creating it when `create`), locks it, and checks
/// that the locked file is still the record, starting over if not. `None`
/// when it does not exist (with `create`: when the directory is gone).
fn open_and_lock(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    create: bool,
    wait: Wait,
) -> Result<Option<UserLock>, LockError> {
    let path = dir_path.join(LASTHOST);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if create {
        flags |= OFlag::O_CREAT;
    }
    for _ in 0..LOCK_REOPEN_MAX {
        let fd = match retry_eintr(|| openat(dir, LASTHOST, flags, Mode::from_bits_truncate(0o600)))
        {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(SysError::new("open", &path, errno).into()),
        };
        let file = lock_until(File::from(fd), deadline, wait, &path)?;

        // Verify that the file we locked is still the record, by its link
        // count on the locked descriptor rather than by a second look at
        // the path (fstatat, one more system call per login). This is
        // enough because a record leaves its path only by being unlinked,
        // and only under its lock: the cleaner (usercache.rs,
        // `remove_user_locked`, and the record it created to lock a user
        // without one) unlinks `.lasthost` while holding the lock, and no
        // code renames a record or renames anything over one. So a file
        // that we hold the lock on and that still has a link was not
        // removed by anyone obeying the lock, and it is the one at the
        // path; one with no link left was removed while we waited, and we
        // start over (and find the directory gone, or a new record). Only
        // the user owning the directory could break this, by hard-linking
        // the record elsewhere before removing it, and that spoils nothing
        // but the user's own cache.
        let locked = fstat(file.as_fd()).ctx("fstat", &path)?;
        if locked.st_nlink > 0 {
            let size = Cell::new(u64::try_from(locked.st_size).unwrap_or(0));
            return Ok(Some(UserLock { file, path, size }));
        }
    }
    Err(LockError::Busy)
}

/// Takes the exclusive lock, polling while another process holds it.
fn lock_until(
    mut file: File,
    deadline: Instant,
    wait: Wait,
    path: &Path,
) -> Result<Flock<File>, LockError> {
    let mut pause = LOCK_POLL_FIRST;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((back, Errno::EINTR)) => file = back,
            Err((back, Errno::EWOULDBLOCK)) => {
                let now = Instant::now();
                if wait == Wait::No || now >= deadline {
                    return Err(LockError::Busy);
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(LOCK_POLL_MAX);
                file = back;
            }
            Err((_, errno)) => return Err(SysError::new("flock", path, errno).into()),
        }
    }
}

/// Converts a std I/O error from a call on `path` into a [`SysError`].
pub fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> SysError {
    let errno = e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO);
    SysError::new(op, path, errno)
}
