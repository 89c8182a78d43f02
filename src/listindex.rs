//! The user's LISTINDEX directory in tmpfs: opening (and creating) it one
//! directory at a time without following symlinks, and dropping the list
//! index files in it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::mail_location::UserPaths;
use crate::sys::{retry_eintr, Context, SysError};

/// Mode of every directory this program creates.
pub const DIR_MODE: u32 = 0o700;

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the directory `name` in `parent`, refusing symlinks.
pub fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd, SysError> {
    retry_eintr(|| openat(parent, name, dir_flags(), Mode::empty())).ctx("open", path)
}

/// Opens `name` in `parent`, creating it (mode 0700) when missing.
fn open_or_make_at(parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd, SysError> {
    match retry_eintr(|| openat(parent, name, dir_flags(), Mode::empty())) {
        Err(Errno::ENOENT) => {
            match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(SysError::new("mkdir", path, errno)),
            }
            open_dir_at(parent, name, path)
        }
        other => other.ctx("open", path),
    }
}

/// Opens the user's LISTINDEX directory, creating the root (mode 0700,
/// but never its parent) and every directory below it that is missing.
/// No symlink is followed at the root or below it.
///
/// The root usually sits in a world-writable directory such as /dev/shm,
/// where anyone could have made it first. So an existing root must belong
/// to `uid` (the identity files are created with) or to root, and must not
/// be writable by others unless it has the sticky bit.
pub fn open_or_create(
    paths: &UserPaths,
    uid: u32,
    keep: &mut Vec<OwnedFd>,
) -> Result<OwnedFd, SysError> {
    let root = &paths.listindex_root;
    let mut dir = match retry_eintr(|| openat(AT_FDCWD, root, dir_flags(), Mode::empty())) {
        Ok(dir) => dir,
        // Missing (to be created), or wrong: the step-by-step way creates
        // it or reports what is wrong, as it always did.
        Err(_) => open_or_create_root(root, keep)?,
    };
    check_root(&dir, root, uid)?;
    if paths.listindex_parts.is_empty() {
        return Ok(dir);
    }
    if let Some(below) = openat2_beneath(dir.as_fd(), &paths.listindex_parts) {
        keep.push(dir);
        return Ok(below);
    }
    let mut path = root.clone();
    for part in &paths.listindex_parts {
        path.push(part);
        let next = open_or_make_at(dir.as_fd(), part, &path)?;
        keep.push(std::mem::replace(&mut dir, next));
    }
    Ok(dir)
}

/// Opens the LISTINDEX root one step at a time: its parent (following
/// symlinks: the path up to there is the administrator's and may hold some,
/// /var/run -> /run), then the root in it without following one, creating
/// it when missing.
fn open_or_create_root(root: &Path, keep: &mut Vec<OwnedFd>) -> Result<OwnedFd, SysError> {
    match root.parent() {
        Some(parent) => {
            let name = root.file_name().unwrap_or(OsStr::new("/"));
            let parent_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let parent_fd = retry_eintr(|| openat(AT_FDCWD, parent, parent_flags, Mode::empty()))
                .ctx("open", parent)?;
            let dir = open_or_make_at(parent_fd.as_fd(), name, root)?;
            keep.push(parent_fd);
            Ok(dir)
        }
        None => {
            retry_eintr(|| openat(AT_FDCWD, root, dir_flags(), Mode::empty())).ctx("open", root)
        }
    }
}

/// `struct open_how` of linux/openat2.h (libc's is `non_exhaustive`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens the directory `parts` (joined by slashes) below `root` in one
/// openat2() that follows no symlink (nor /proc magic link) and does not
/// leave `root`. `None` when that fails for any reason: the caller then
/// goes step by step.
fn openat2_beneath(root: BorrowedFd<'_>, parts: &[std::ffi::OsString]) -> Option<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut below = Vec::with_capacity(64);
    for part in parts {
        if !below.is_empty() {
            below.push(b'/');
        }
        below.extend_from_slice(part.as_bytes());
    }
    let below = std::ffi::CString::new(below).ok()?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `below` is a NUL-terminated string and `how` has the
        // layout of struct open_how; both live across the call, and the
        // size passed is that of `how`. The kernel only reads them.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                below.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            let fd = i32::try_from(fd).ok()?;
            // SAFETY: openat2() just returned this descriptor, open and
            // owned by nothing else.
            return Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if Errno::last() != Errno::EINTR {
            return None;
        }
    }
}

/// The ownership and mode rules for the LISTINDEX root (see
/// [`open_or_create`]). A violation is reported as EPERM on `stat`.
fn check_root(dir: &OwnedFd, root: &Path, uid: u32) -> Result<(), SysError> {
    let st = fstat(dir.as_fd()).ctx("fstat", root)?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid != uid && st.st_uid != 0 {
        return Err(SysError::with_reason(
            "check",
            root,
            format!(
                "LISTINDEX root is owned by uid {}, not by uid {uid} or root",
                st.st_uid
            ),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(SysError::with_reason(
            "check",
            root,
            format!(
                "LISTINDEX root has mode {mode:04o}: writable by others without the sticky bit"
            ),
        ));
    }
    Ok(())
}

/// Deletes every entry of `dir` whose name starts with `prefix`: the list
/// index, its transaction logs and any temporary files Dovecot left. An
/// entry that vanishes meanwhile is fine. Returns how many were deleted.
/// Gives up at the first failure: the caller must then not trust the cache.
pub fn drop_files(dir: BorrowedFd<'_>, dir_path: &Path, prefix: &OsStr) -> Result<usize, SysError> {
    let mut listing =
        nix::dir::Dir::openat(dir, ".", dir_flags(), Mode::empty()).ctx("open", dir_path)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.ctx("readdir", dir_path)?;
        let name = entry.file_name().to_bytes();
        if name.starts_with(prefix.as_bytes()) {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    let mut dropped = 0;
    for name in names {
        match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => dropped += 1,
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(SysError::new("unlink", dir_path.join(&name), errno)),
        }
    }
    Ok(dropped)
}
