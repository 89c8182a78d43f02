//! Migration (`nfs_hostchange_migration = yes`): move a list index that a
//! backend without this program left on NFS into the local LISTINDEX, once,
//! instead of letting Dovecot rebuild it from the mail store.
//!
//! INDEX/PREFIX.log on NFS means a backend without this program has used
//! the NFS list index since: the local copy cannot be trusted, and the NFS
//! one is the freshest there is. It is copied in (every file to a temporary
//! name, then renamed), and only when every copy is in place are the NFS
//! files deleted. When a copy fails, what was written is removed and the
//! NFS files are deleted all the same: from then on this backend serves the
//! user from a list index of its own, and an NFS copy left behind would
//! fall behind it and be served stale by the next backend to read it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fstat, stat, Mode, SFlag};
use nix::unistd::{unlink, unlinkat, UnlinkatFlags};

use crate::lock::io_error;
use crate::mail_location::UserPaths;
use crate::sys::{retry_eintr, retry_nfs, Context, SysError};

/// The suffix of a copy in progress. The name still starts with the list
/// index prefix, so a copy left behind by a crash is dropped with the list
/// index at the next change.
const COPY_SUFFIX: &str = ".nfs-hostchange-copy";

/// Whether INDEX/PREFIX.log exists: the one NFS operation migration adds
/// to a login in steady state.
pub fn nfs_list_index_in_use(paths: &UserPaths) -> Result<bool, SysError> {
    let log = nfs_log_path(paths);
    match retry_nfs(|| stat(&log)) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(errno) => Err(SysError::new("stat", &log, errno)),
    }
}

fn nfs_log_path(paths: &UserPaths) -> PathBuf {
    let mut name = paths.prefix.clone();
    name.push(".log");
    paths.index.join(name)
}

/// Why the list index could not be moved.
#[derive(Debug)]
pub struct MoveError {
    /// What failed: listing INDEX, copying a file, or deleting one on NFS.
    pub cause: SysError,
    /// Whether the NFS list index is gone all the same. After a failed copy
    /// it is deleted: this backend now serves the user from a list index of
    /// its own, so the NFS copy would fall behind, and a backend without
    /// this program (or the next migration elsewhere) would serve it stale.
    pub nfs_removed: bool,
}

/// Copies INDEX/PREFIX* into the LISTINDEX directory `dir`, then deletes
/// them from INDEX. Returns the files and bytes moved. Locked: the caller
/// holds the user's lock and has made sure the local record is empty and
/// the local list index is gone.
///
/// When a copy fails, every file written here is removed again and the NFS
/// list index is deleted as well (see [`MoveError::nfs_removed`]): Dovecot
/// rebuilds both from the mail store.
pub fn move_into_locked(dir: BorrowedFd<'_>, paths: &UserPaths) -> Result<(usize, u64), MoveError> {
    let names = nfs_list_index_files(paths).map_err(|cause| MoveError {
        cause,
        nfs_removed: false,
    })?;
    if names.is_empty() {
        return Ok((0, 0));
    }
    let mut placed: Vec<&OsString> = Vec::new();
    let mut bytes = 0;
    for name in &names {
        match copy_one(dir, paths, name) {
            Ok(size) => {
                bytes += size;
                placed.push(name);
            }
            Err(cause) => {
                for done in placed {
                    let _ = unlinkat(dir, done.as_os_str(), UnlinkatFlags::NoRemoveDir);
                }
                let nfs_removed = delete_nfs(paths, &names).is_ok();
                return Err(MoveError { cause, nfs_removed });
            }
        }
    }

    // Every copy is in place: the NFS list index may go.
    delete_nfs(paths, &names).map_err(|cause| MoveError {
        cause,
        nfs_removed: false,
    })?;
    Ok((names.len(), bytes))
}

/// Deletes INDEX/name for every name; one that is gone already is fine.
fn delete_nfs(paths: &UserPaths, names: &[OsString]) -> Result<(), SysError> {
    for name in names {
        let path = paths.index.join(name);
        match retry_nfs(|| unlink(&path)) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(SysError::new("unlink", &path, errno)),
        }
    }
    Ok(())
}

/// The names of the list index files in INDEX: entries whose name starts
/// with the prefix and that are regular files (or of unknown type; the copy
/// checks), without Dovecot's temporary and lock files. A missing INDEX has
/// none.
fn nfs_list_index_files(paths: &UserPaths) -> Result<Vec<OsString>, SysError> {
    let index = &paths.index;
    let mut dir = match retry_nfs(|| {
        nix::dir::Dir::open(
            index,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(errno) => return Err(SysError::new("open", index, errno)),
    };
    let prefix = paths.prefix.as_bytes();
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.ctx("readdir", index)?;
        let name = entry.file_name().to_bytes();
        let regular = matches!(entry.file_type(), None | Some(nix::dir::Type::File));
        if regular
            && name.starts_with(prefix)
            && !name.ends_with(b".tmp")
            && !name.ends_with(b".lock")
        {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Copies INDEX/name to LISTINDEX/name through a temporary name. Returns
/// the bytes copied. Leaves nothing behind on failure.
fn copy_one(dir: BorrowedFd<'_>, paths: &UserPaths, name: &OsStr) -> Result<u64, SysError> {
    let from = paths.index.join(name);
    let mut tmp_name = name.to_os_string();
    tmp_name.push(COPY_SUFFIX);
    let tmp_path = paths.listindex.join(&tmp_name);

    // The source: a regular file on NFS, never a symlink.
    let src = retry_nfs(|| {
        open(
            &from,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
    })
    .ctx("open", &from)?;
    let st = fstat(src.as_fd()).ctx("fstat", &from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SysError::new("open", &from, Errno::EINVAL));
    }

    // The copy, under a temporary name (a leftover from a crash is replaced).
    let create = || {
        openat(
            dir,
            tmp_name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
    };
    let dst = match retry_eintr(create) {
        Err(Errno::EEXIST) => {
            let _ = unlinkat(dir, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            retry_eintr(create)
        }
        other => other,
    }
    .ctx("open", &tmp_path)?;
    let mut src = File::from(src);
    let mut dst = File::from(dst);
    let copied = std::io::copy(&mut src, &mut dst)
        .map_err(|e| io_error("copy", &from, e))
        .and_then(|n| {
            dst.sync_all()
                .map(|()| n)
                .map_err(|e| io_error("fsync", &tmp_path, e))
        })
        .and_then(|n| {
            retry_eintr(|| renameat(dir, tmp_name.as_os_str(), dir, name))
                .map(|()| n)
                .ctx("rename", &tmp_path)
        });
    if copied.is_err() {
        let _ = unlinkat(dir, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_suffix_keeps_the_prefix() {
        // A leftover copy must match the list index prefix so that it is
        // dropped together with the list index.
        let name = format!("dovecot.list.index.log{COPY_SUFFIX}");
        assert!(name.starts_with("dovecot.list.index"));
    }
}
