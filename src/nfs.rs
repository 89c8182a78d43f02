//! Everything this program does on NFS: read and replace INDEX/.lasthost.
//!
//! Reading is open() then fstat() on the descriptor: close-to-open
//! consistency makes the NFS client fetch fresh attributes at open, where a
//! plain stat() may answer from its attribute cache. Every operation is
//! retried on ESTALE.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use crate::lock::io_error;
use crate::log::Shown;
use crate::mail_location::LASTHOST;
use crate::record::{new_stamp_content, Stamp, STAMP_MAX};
use crate::sys::{read_at_most, retry_nfs, Context, SysError};

/// Why INDEX/.lasthost could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// It exists but is not a regular file (a directory, a FIFO...).
    NotRegular(PathBuf),
    /// A system call failed.
    Sys(SysError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotRegular(path) => {
                write!(f, "{} is not a regular file", path.shown())
            }
            ReadError::Sys(e) => e.fmt(f),
        }
    }
}

/// Why INDEX/.lasthost could not be replaced.
#[derive(Debug)]
pub enum WriteError {
    /// INDEX itself does not exist (a new user, or NFS is not mounted).
    /// It is never created here.
    IndexMissing(PathBuf),
    /// A system call failed.
    Sys(SysError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::IndexMissing(path) => write!(
                f,
                "INDEX {} does not exist (a new user, or NFS is not mounted)",
                path.shown()
            ),
            WriteError::Sys(e) => e.fmt(f),
        }
    }
}

/// Reads INDEX/.lasthost: its inode, mtime and content. `None` when it
/// does not exist (or INDEX does not).
pub fn read_stamp(index: &Path) -> Result<Option<Stamp>, ReadError> {
    read_stamp_keeping(index, &mut Vec::new())
}

/// [`read_stamp`], leaving the descriptor(s) it opened in `keep` instead
/// of closing them: the login leaves them to its exec (they are
/// close-on-exec), which saves a close().
pub fn read_stamp_keeping(
    index: &Path,
    keep: &mut Vec<OwnedFd>,
) -> Result<Option<Stamp>, ReadError> {
    let path = index.join(LASTHOST);
    let mut not_regular = false;
    let result = retry_nfs(|| {
        // O_NONBLOCK: opening a FIFO planted there must not hang the login.
        let fd = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )?;
        let st = fstat(fd.as_fd())?;
        if !is_regular(&st) {
            not_regular = true;
            return Ok(None);
        }
        // At most STAMP_MAX bytes, and no more than the size fstat() gave:
        // the file is only ever replaced by a rename, never written in
        // place, so that is all there is, and no read() is spent on seeing
        // the end. A file shorter than that after all ends the read early.
        let want = usize::try_from(st.st_size).unwrap_or(0).min(STAMP_MAX);
        let content = read_at_most(fd.as_fd(), want)?;
        keep.push(fd);
        Ok(Some(stamp_of(&st, content)))
    });
    match result {
        Ok(_) if not_regular => Err(ReadError::NotRegular(path)),
        Ok(stamp) => Ok(stamp),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Err(ReadError::NotRegular(path)),
        Err(errno) => Err(ReadError::Sys(SysError::new("open", &path, errno))),
    }
}

/// Writes a new INDEX/.lasthost naming `host` with a fresh random token:
/// to a unique temporary name in INDEX, then renamed over the old one, so
/// every write is a new inode. Returns what was written, as fstat() of the
/// written file sees it.
pub fn write_stamp(index: &Path, host: &str) -> Result<Stamp, WriteError> {
    let token = random_token();
    let content = new_stamp_content(host, &token);
    let tmp = index.join(format!(
        "{LASTHOST}.tmp.{}.{}",
        std::process::id(),
        crate::record::hex(&token[..6])
    ));
    let target = index.join(LASTHOST);

    // Create the temporary file; ENOENT here means INDEX is missing.
    let fd = match retry_nfs(|| {
        open(
            &tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
    }) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(WriteError::IndexMissing(index.to_path_buf())),
        Err(errno) => return Err(WriteError::Sys(SysError::new("open", &tmp, errno))),
    };
    let mut file = File::from(fd);

    // Write, flush to the server, rename into place, then see what we wrote.
    let written = file
        .write_all(&content)
        .map_err(|e| io_error("write", &tmp, e))
        .and_then(|()| file.sync_all().map_err(|e| io_error("fsync", &tmp, e)))
        .and_then(|()| {
            retry_nfs(|| {
                nix::fcntl::renameat(nix::fcntl::AT_FDCWD, &tmp, nix::fcntl::AT_FDCWD, &target)
            })
            .ctx(
                "rename",
                Path::new(&format!("{} -> {}", tmp.shown(), target.shown())),
            )
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::Sys(e));
    }
    let st = fstat(file.as_fd())
        .ctx("fstat", &target)
        .map_err(WriteError::Sys)?;
    Ok(stamp_of(&st, content))
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn stamp_of(st: &FileStat, content: Vec<u8>) -> Stamp {
    Stamp {
        ino: st.st_ino,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        content,
    }
}

/// 16 random bytes from the kernel. Should getrandom fail (it does not on
/// any supported kernel), the time and pid still make the stamp's content
/// differ from the last one, which is all the token is for.
fn random_token() -> [u8; 16] {
    let mut token = [0u8; 16];
    // SAFETY: the pointer and length describe `token`, a live, writable
    // buffer of exactly that size; getrandom writes at most that many bytes.
    let n = unsafe { libc::getrandom(token.as_mut_ptr().cast(), token.len(), libc::GRND_NONBLOCK) };
    if n != token.len() as isize {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        token[..8].copy_from_slice(&now.as_nanos().to_le_bytes()[..8]);
        token[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    token
}
