//! System-call errors that carry the operation and the path, and the one
//! bounded retry loop used for every NFS access.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::log::Shown;

/// How often an NFS operation is retried after ESTALE, as Dovecot does
/// (`NFS_ESTALE_RETRY_COUNT` in its `nfs-workarounds.h`).
pub const ESTALE_RETRY_COUNT: u32 = 10;

/// A failed system call: which call, on which path, and the errno.
///
/// Displays as `open(/srv/idx/u/.lasthost): No such file or directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysError {
    /// The system call, e.g. `open` or `rename`.
    pub op: &'static str,
    /// The path as the operator would recognise it (a full path, or a
    /// description such as `a -> b` for a rename).
    pub path: PathBuf,
    /// The error number the call returned.
    pub errno: Errno,
    /// Set when the call succeeded but what it showed is refused: then
    /// this reason is shown instead of the errno's text.
    pub reason: Option<String>,
}

impl SysError {
    /// Builds an error for `op` on `path`.
    pub fn new(op: &'static str, path: impl AsRef<Path>, errno: Errno) -> Self {
        SysError {
            op,
            path: path.as_ref().to_path_buf(),
            errno,
            reason: None,
        }
    }

    /// A refusal after a successful check of `path` (errno EPERM).
    pub fn with_reason(op: &'static str, path: impl AsRef<Path>, reason: String) -> Self {
        SysError {
            reason: Some(reason),
            ..SysError::new(op, path, Errno::EPERM)
        }
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{}({}): {reason}", self.op, self.path.shown()),
            None => write!(
                f,
                "{}({}): {}",
                self.op,
                self.path.shown(),
                self.errno.desc()
            ),
        }
    }
}

impl std::error::Error for SysError {}

/// Attaches an operation and a path to a failed call.
pub trait Context<T> {
    /// Turns the errno of a failed call into a [`SysError`].
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, SysError>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, SysError> {
        self.map_err(|errno| SysError::new(op, path, errno))
    }
}

/// Runs an operation on NFS again while it fails with ESTALE (a file handle
/// the server no longer knows, typically after another client replaced the
/// file), at most [`ESTALE_RETRY_COUNT`] extra times, and while it is
/// interrupted by a signal.
pub fn retry_nfs<T>(mut op: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    let mut stale = 0;
    loop {
        match op() {
            Err(Errno::EINTR) => continue,
            Err(Errno::ESTALE) if stale < ESTALE_RETRY_COUNT => stale += 1,
            other => return other,
        }
    }
}

/// Reads at most `want` bytes from the current offset of `fd`, stopping
/// early at the end of the file. For files whose size a fstat() already
/// told: one read() for the content, none spent on seeing the end.
pub fn read_at_most(fd: std::os::fd::BorrowedFd<'_>, want: usize) -> nix::Result<Vec<u8>> {
    let mut data = vec![0u8; want];
    let mut len = 0;
    while len < want {
        match nix::unistd::read(fd, &mut data[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    data.truncate(len);
    Ok(data)
}

/// Runs a local operation again while it is interrupted by a signal.
pub fn retry_eintr<T>(mut op: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match op() {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_call_path_and_errno() {
        let e = SysError::new("open", "/srv/idx/u/.lasthost", Errno::ENOENT);
        assert_eq!(
            e.to_string(),
            "open(/srv/idx/u/.lasthost): No such file or directory"
        );
    }

    #[test]
    fn estale_retry_is_bounded() {
        let mut calls = 0;
        let r: nix::Result<()> = retry_nfs(|| {
            calls += 1;
            Err(Errno::ESTALE)
        });
        assert_eq!(r, Err(Errno::ESTALE));
        assert_eq!(calls, ESTALE_RETRY_COUNT + 1);
    }

    #[test]
    fn estale_then_success() {
        let mut calls = 0;
        let r = retry_nfs(|| {
            calls += 1;
            if calls < 3 {
                Err(Errno::ESTALE)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let r: nix::Result<()> = retry_nfs(|| {
            calls += 1;
            Err(Errno::EACCES)
        });
        assert_eq!(r, Err(Errno::EACCES));
        assert_eq!(calls, 1);
    }
}
