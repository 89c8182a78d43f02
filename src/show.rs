//! `nfs-hostchange show USER`: what the login check sees for one user on
//! this backend, and what the next login would do with it.
//!
//! Strictly read-only. Nothing is created (a missing LISTINDEX stays
//! missing), no lock is taken, and no timestamp changes: directories are
//! opened one at a time without following symlinks (opening changes no
//! time), files are read through `O_NOATIME` descriptors and otherwise only
//! stat()ed. The kernel allows `O_NOATIME` to root and to a file's owner;
//! for anyone else a file is stat()ed, not read, and the output says what
//! could not be read. On NFS the server keeps INDEX/.lasthost's atime, and
//! may update it when serving the few bytes read here; that is the one
//! timestamp outside this program's reach.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::cli;
use crate::help;
use crate::log::printable;
use crate::mail_location::{Syntax, UserPaths, LASTHOST};
use crate::record::{Stamp, STAMP_MAX};
use crate::settings;
use crate::sys::{retry_eintr, retry_nfs, SysError};
use crate::varexpand::Vars;

/// Exit status when the user was shown, whatever the verdict.
pub const EXIT_OK: i32 = 0;
/// Exit status when the settings or the user's paths could not be worked out.
pub const EXIT_FAILED: i32 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: i32 = 2;

/// The most bytes of a local record that are read; a real one is under 200.
const RECORD_READ_MAX: u64 = 4096;

/// Dovecot's list index files, stat()ed by name when the directory may not
/// be listed without changing its atime.
const KNOWN_SUFFIXES: [&str; 3] = ["", ".log", ".log.2"];

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    user: OsString,
    home: Option<OsString>,
    config: Option<OsString>,
    json: bool,
}

/// Runs `show` with the words after it; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let args = match parse_args(args) {
        Ok(Some(args)) => args,
        Ok(None) => return write_stdout(&help::text(&help::SHOW)),
        Err(message) => {
            eprintln!(
                "nfs-hostchange show: {message}\nusage: nfs-hostchange {}",
                help::SHOW.synopsis[0]
            );
            return EXIT_USAGE;
        }
    };
    match gather(&args) {
        Ok(report) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let out = if args.json {
                report.json(now)
            } else {
                report.text(now)
            };
            write_stdout(&out)
        }
        Err(message) => {
            eprintln!("nfs-hostchange show: {message}");
            EXIT_FAILED
        }
    }
}

fn write_stdout(text: &str) -> i32 {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("nfs-hostchange show: writing to stdout: {e}");
            EXIT_FAILED
        }
    }
}

/// Parses the words after `show`; `None` asks for the help text.
fn parse_args(args: &[OsString]) -> Result<Option<Args>, String> {
    let mut user = None;
    let mut home = None;
    let mut config = None;
    let mut json = false;
    let mut words = args.iter();
    let mut options_done = false;
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if options_done || !bytes.starts_with(b"-") || bytes == b"-" {
            if user.is_some() {
                return Err(format!(
                    "one USER only (also got {:?})",
                    word.to_string_lossy()
                ));
            }
            user = Some(word.clone());
        } else if bytes == b"--" {
            options_done = true;
        } else if bytes == b"--help" || bytes == b"-h" {
            return Ok(None);
        } else if bytes == b"--json" {
            json = true;
        } else if let Some(value) = cli::option_value(bytes, "home", &mut words) {
            home = Some(value?);
        } else if let Some(value) = cli::option_value(bytes, "config", &mut words) {
            config = Some(value?);
        } else {
            return Err(format!("unknown option {:?}", word.to_string_lossy()));
        }
    }
    let user = user.ok_or("missing USER")?;
    if user.is_empty() {
        return Err("USER is empty".into());
    }
    Ok(Some(Args {
        user,
        home,
        config,
        json,
    }))
}

// ---------------------------------------------------------------------------
// Looking

/// Everything `show` found.
#[derive(Debug)]
struct Report {
    user: Vec<u8>,
    config: PathBuf,
    setting: &'static str,
    syntax: Syntax,
    paths: UserPaths,
    migration: Option<Result<bool, String>>,
    record: Record,
    /// The record's mtime: the last login.
    record_mtime: Option<(i64, i64)>,
    nfs: Nfs,
    files: Result<Vec<(OsString, u64)>, String>,
    verdict: Verdict,
    reason: String,
    notes: Vec<String>,
}

/// The local record, LISTINDEX/.lasthost.
#[derive(Debug)]
enum Record {
    /// LISTINDEX itself does not exist.
    NoDirectory,
    /// No record file.
    Missing,
    /// An empty record: the last login stored none.
    Empty,
    Valid(Stamp),
    Corrupt(String),
    /// Not read: O_NOATIME was not permitted.
    NotRead,
    Error(String),
}

/// INDEX/.lasthost on NFS.
#[derive(Debug)]
enum Nfs {
    Valid(Stamp),
    /// Only stat()ed: O_NOATIME was not permitted.
    NotRead {
        ino: u64,
        mtime: (i64, i64),
    },
    Missing,
    IndexMissing,
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Current,
    WouldDrop,
    MigrationPending,
    Unknown,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Current => "current",
            Verdict::WouldDrop => "would drop",
            Verdict::MigrationPending => "migration pending",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Reads the settings, works out the paths, and looks.
fn gather(args: &Args) -> Result<Report, String> {
    let (config, explicit) = settings::config_path(args.config.as_deref());
    let (loaded, kept_atime) = settings::load_keeping_atime(&config, explicit);
    let loaded = loaded.map_err(|e| e.to_string())?;
    if !loaded.errors.is_empty() {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(errors.join("\n"));
    }
    let mut notes: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    if !kept_atime {
        notes.push(format!(
            "{} was read without O_NOATIME (allowed to root and its owner only): its atime may have changed",
            config.display()
        ));
    }
    let settings = loaded.settings;
    let location = settings.location().ok_or_else(|| {
        format!(
            "mail_location (or, for Dovecot 2.4, mail_path) is not set in {}",
            config.display()
        )
    })?;
    let user = args.user.as_bytes();
    let vars = Vars {
        user,
        home: args.home.as_ref().map(|h| h.as_bytes()),
        uid: None,
        gid: None,
        local_ip: None,
        remote_ip: None,
    };
    let paths = location.resolve(&vars).map_err(|e| {
        let hint = if args.home.is_none() && e.to_string().contains("HOME") {
            " (give the home directory with --home DIR)"
        } else {
            ""
        };
        format!(
            "{}: {}: {e}{hint}",
            settings.location_origin(),
            location.setting()
        )
    })?;

    // The local side: LISTINDEX, the record, the list index files.
    let (record, record_mtime, files) = match open_listindex(&paths) {
        Ok(Some(dir)) => {
            let (record, mtime) = read_record(dir.as_fd(), &paths.listindex);
            let files = list_files(dir.as_fd(), &paths, &mut notes);
            (record, mtime, files)
        }
        Ok(None) => (Record::NoDirectory, None, Ok(Vec::new())),
        Err(e) => (Record::Error(e.clone()), None, Err(e)),
    };

    // The NFS side: INDEX/.lasthost, and PREFIX.log when migrating.
    let nfs = read_nfs(&paths.index);
    let migration = settings.migration.then(|| nfs_log_exists(&paths));

    let (verdict, reason) = verdict(&record, &nfs, &migration, &paths);
    if matches!(record, Record::NotRead) || matches!(nfs, Nfs::NotRead { .. }) {
        notes.push(
            "a file was only stat()ed, not read: O_NOATIME, which keeps its atime, \
             is allowed to root and to the file's owner only"
                .into(),
        );
    }
    Ok(Report {
        user: user.to_vec(),
        config,
        setting: location.setting(),
        syntax: location.syntax(),
        paths,
        migration,
        record,
        record_mtime,
        nfs,
        files,
        verdict,
        reason,
        notes,
    })
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Flags for reading a file without changing its atime.
fn read_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOATIME
}

/// Opens the user's LISTINDEX directory one name at a time, following no
/// symlink below the root; `None` when some part does not exist.
fn open_listindex(paths: &UserPaths) -> Result<Option<OwnedFd>, String> {
    let mut path = paths.listindex_root.clone();
    let describe = |path: &Path, errno: Errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => {
            format!("{} is a symlink or not a directory", path.display())
        }
        errno => SysError::new("open", path, errno).to_string(),
    };
    let mut dir = match retry_eintr(|| open(&path, dir_flags(), Mode::empty())) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(describe(&path, errno)),
    };
    for part in &paths.listindex_parts {
        path.push(part);
        dir =
            match retry_eintr(|| openat(dir.as_fd(), part.as_os_str(), dir_flags(), Mode::empty()))
            {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(describe(&path, errno)),
            };
    }
    Ok(Some(dir))
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// Reads and decodes the local record, without its lock; returns it and
/// its mtime.
fn read_record(dir: BorrowedFd<'_>, dir_path: &Path) -> (Record, Option<(i64, i64)>) {
    let path = dir_path.join(LASTHOST);
    let fd = match retry_eintr(|| openat(dir, LASTHOST, read_flags(), Mode::empty())) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return (Record::Missing, None),
        Err(Errno::ELOOP) => {
            return (
                Record::Error(format!("{} is a symlink", path.display())),
                None,
            )
        }
        Err(Errno::EPERM) => {
            let mtime = fstatat(dir, LASTHOST, AtFlags::AT_SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| (st.st_mtime, st.st_mtime_nsec));
            return (Record::NotRead, mtime);
        }
        Err(errno) => {
            return (
                Record::Error(SysError::new("open", &path, errno).to_string()),
                None,
            )
        }
    };
    let st = match fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(errno) => {
            return (
                Record::Error(SysError::new("fstat", &path, errno).to_string()),
                None,
            )
        }
    };
    let mtime = Some((st.st_mtime, st.st_mtime_nsec));
    if !is_regular(&st) {
        let message = format!("{} is not a regular file", path.display());
        return (Record::Error(message), mtime);
    }
    let mut data = Vec::new();
    if let Err(e) = File::from(fd).take(RECORD_READ_MAX).read_to_end(&mut data) {
        return (
            Record::Error(format!("read({}): {e}", path.display())),
            mtime,
        );
    }
    let record = match Stamp::decode(&data) {
        Ok(Some(stamp)) => Record::Valid(stamp),
        Ok(None) => Record::Empty,
        Err(e) => Record::Corrupt(e.to_string()),
    };
    (record, mtime)
}

/// Reads INDEX/.lasthost as the login does (open, then fstat), but with
/// O_NOATIME; only stat()s it when that is not permitted.
fn read_nfs(index: &Path) -> Nfs {
    let path = index.join(LASTHOST);
    let mut not_regular = false;
    let result = retry_nfs(|| {
        let fd = open(&path, read_flags(), Mode::empty())?;
        let st = fstat(fd.as_fd())?;
        if !is_regular(&st) {
            not_regular = true;
            return Ok(None);
        }
        let mut content = Vec::with_capacity(64);
        File::from(fd)
            .take(STAMP_MAX as u64)
            .read_to_end(&mut content)
            .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        Ok(Some(Stamp {
            ino: st.st_ino,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            content,
        }))
    });
    match result {
        Ok(_) if not_regular => Nfs::Error(format!("{} is not a regular file", path.display())),
        Ok(Some(stamp)) => Nfs::Valid(stamp),
        Ok(None) => Nfs::Error(format!("{} could not be read", path.display())),
        Err(Errno::ELOOP) => Nfs::Error(format!("{} is a symlink", path.display())),
        Err(Errno::ENOENT) => match retry_nfs(|| nix::sys::stat::stat(index)) {
            Ok(_) => Nfs::Missing,
            Err(Errno::ENOENT) => Nfs::IndexMissing,
            Err(errno) => Nfs::Error(SysError::new("stat", index, errno).to_string()),
        },
        Err(Errno::EPERM) => {
            match retry_nfs(|| fstatat(AT_FDCWD, &path, AtFlags::AT_SYMLINK_NOFOLLOW)) {
                Ok(st) => Nfs::NotRead {
                    ino: st.st_ino,
                    mtime: (st.st_mtime, st.st_mtime_nsec),
                },
                Err(errno) => Nfs::Error(SysError::new("stat", &path, errno).to_string()),
            }
        }
        Err(errno) => Nfs::Error(SysError::new("open", &path, errno).to_string()),
    }
}

/// Whether INDEX/PREFIX.log exists: a backend without this program used
/// the NFS list index, and the next login (with migration on) moves it in.
fn nfs_log_exists(paths: &UserPaths) -> Result<bool, String> {
    let mut name = paths.prefix.clone();
    name.push(".log");
    let log = paths.index.join(name);
    match retry_nfs(|| fstatat(AT_FDCWD, &log, AtFlags::AT_SYMLINK_NOFOLLOW)) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(errno) => Err(SysError::new("stat", &log, errno).to_string()),
    }
}

/// The list index files in LISTINDEX and their sizes, listed through an
/// O_NOATIME descriptor; when that is not permitted, Dovecot's usual file
/// names are stat()ed instead (and a note says so).
fn list_files(
    dir: BorrowedFd<'_>,
    paths: &UserPaths,
    notes: &mut Vec<String>,
) -> Result<Vec<(OsString, u64)>, String> {
    let prefix = paths.prefix.as_bytes();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOATIME;
    let names: Vec<OsString> = match Dir::openat(dir, ".", flags, Mode::empty()) {
        Ok(mut listing) => {
            let mut names = Vec::new();
            for entry in listing.iter() {
                let entry = entry.map_err(|errno| {
                    SysError::new("readdir", &paths.listindex, errno).to_string()
                })?;
                let name = entry.file_name().to_bytes();
                if name.starts_with(prefix) {
                    names.push(OsStr::from_bytes(name).to_os_string());
                }
            }
            names
        }
        Err(Errno::EPERM) => {
            notes.push(format!(
                "{} was not listed (O_NOATIME not permitted): only Dovecot's usual \
                 list index file names were looked for",
                paths.listindex.display()
            ));
            KNOWN_SUFFIXES
                .iter()
                .map(|suffix| {
                    let mut name = paths.prefix.clone();
                    name.push(suffix);
                    name
                })
                .collect()
        }
        Err(errno) => return Err(SysError::new("open", &paths.listindex, errno).to_string()),
    };
    let mut files = Vec::new();
    for name in names {
        match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => files.push((name, u64::try_from(st.st_size).unwrap_or(0))),
            Err(Errno::ENOENT) => {}
            Err(errno) => {
                return Err(SysError::new("stat", paths.listindex.join(&name), errno).to_string())
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What the next login would do, and why.
fn verdict(
    record: &Record,
    nfs: &Nfs,
    migration: &Option<Result<bool, String>>,
    paths: &UserPaths,
) -> (Verdict, String) {
    let mut log_name = paths.prefix.clone();
    log_name.push(".log");
    let log_name = log_name.to_string_lossy().into_owned();
    match migration {
        Some(Ok(true)) => {
            return (
                Verdict::MigrationPending,
                format!(
                    "INDEX/{log_name} exists: a backend without nfs-hostchange used the \
                     list index on NFS, and the next login moves it here"
                ),
            )
        }
        Some(Err(e)) => {
            return (
                Verdict::WouldDrop,
                format!("whether INDEX/{log_name} exists is unknown ({e})"),
            )
        }
        Some(Ok(false)) | None => {}
    }
    let drop = |reason: String| (Verdict::WouldDrop, reason);
    match (record, nfs) {
        (Record::NotRead, _) => (
            Verdict::Unknown,
            "the record could not be read without changing its atime".into(),
        ),
        (
            Record::Valid(_) | Record::Missing | Record::Empty | Record::NoDirectory,
            Nfs::Error(e),
        ) => drop(format!("INDEX/.lasthost cannot be read: {e}")),
        (Record::Valid(mine), Nfs::Valid(theirs)) if mine == theirs => (
            Verdict::Current,
            "the record matches INDEX/.lasthost".into(),
        ),
        (Record::Valid(mine), Nfs::NotRead { ino, mtime })
            if mine.ino == *ino && (mine.mtime_sec, mine.mtime_nsec) == *mtime =>
        {
            (
                Verdict::Current,
                "the record matches INDEX/.lasthost's inode and mtime (its content was not read)"
                    .into(),
            )
        }
        (Record::Valid(_), Nfs::Valid(theirs)) => drop(format!(
            "INDEX/.lasthost changed since this backend's last login: last written by {}",
            theirs.host()
        )),
        (Record::Valid(_), Nfs::NotRead { .. }) => {
            drop("INDEX/.lasthost changed since this backend's last login".into())
        }
        (Record::Valid(_), Nfs::Missing | Nfs::IndexMissing) => {
            drop("INDEX/.lasthost is gone".into())
        }
        (Record::NoDirectory | Record::Missing, _) => {
            drop("no record: no login on this backend yet, or the cache was cleaned".into())
        }
        (Record::Empty, _) => drop("the record is empty: the last login stored none".into()),
        (Record::Corrupt(e), _) => drop(format!("the record is not valid: {e}")),
        (Record::Error(e), _) => drop(format!("the record cannot be read: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Output

impl Report {
    /// Aligned `label  value` lines.
    fn text(&self, now: i64) -> String {
        let p = |b: &[u8]| printable(b, usize::MAX);
        let mut lines: Vec<(&str, String)> = vec![
            ("user", p(&self.user)),
            (
                "settings",
                format!(
                    "{} ({}, {})",
                    self.config.display(),
                    self.setting,
                    syntax_name(self.syntax)
                ),
            ),
            ("INDEX", p(self.paths.index.as_os_str().as_bytes())),
            ("LISTINDEX", p(self.paths.listindex.as_os_str().as_bytes())),
            ("prefix", p(self.paths.prefix.as_bytes())),
        ];
        if let Some(migration) = &self.migration {
            let state = match migration {
                Ok(true) => "on; INDEX/PREFIX.log exists".to_string(),
                Ok(false) => "on; INDEX/PREFIX.log does not exist".to_string(),
                Err(e) => format!("on; {e}"),
            };
            lines.push(("migration", state));
        }
        lines.push(("record", record_text(&self.record)));
        lines.push(("NFS stamp", nfs_text(&self.nfs)));
        lines.push((
            "verdict",
            format!("{}: {}", self.verdict.word(), self.reason),
        ));
        lines.push(("list index", files_text(&self.files)));
        lines.push(("last login", last_login_text(self.record_mtime, now)));
        for note in &self.notes {
            lines.push(("note", note.clone()));
        }
        let width = lines
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0)
            + 2;
        let mut out = String::new();
        for (label, value) in lines {
            let _ = writeln!(out, "{label:<width$}{value}");
        }
        out
    }

    /// One JSON object on one line.
    fn json(&self, now: i64) -> String {
        let p = |b: &[u8]| printable(b, usize::MAX);
        let mut o = JsonObject::new();
        o.string("user", &p(&self.user));
        o.string("config", &p(self.config.as_os_str().as_bytes()));
        o.string("setting", self.setting);
        o.string(
            "syntax",
            match self.syntax {
                Syntax::V23 => "2.3",
                Syntax::V24 => "2.4",
            },
        );
        o.string("index", &p(self.paths.index.as_os_str().as_bytes()));
        o.string("listindex", &p(self.paths.listindex.as_os_str().as_bytes()));
        o.string("prefix", &p(self.paths.prefix.as_bytes()));
        match &self.migration {
            None => o.raw("migration", "null"),
            Some(Ok(exists)) => {
                let mut m = JsonObject::new();
                m.raw("nfs_log_exists", if *exists { "true" } else { "false" });
                o.raw("migration", &m.finish());
            }
            Some(Err(e)) => {
                let mut m = JsonObject::new();
                m.string("error", e);
                o.raw("migration", &m.finish());
            }
        }
        o.raw("record", &record_json(&self.record));
        o.raw("nfs_stamp", &nfs_json(&self.nfs));
        o.string("verdict", self.verdict.word());
        o.string("reason", &self.reason);
        match &self.files {
            Ok(files) => {
                let items: Vec<String> = files
                    .iter()
                    .map(|(name, size)| {
                        let mut f = JsonObject::new();
                        f.string("name", &p(name.as_bytes()));
                        f.number("size", *size);
                        f.finish()
                    })
                    .collect();
                o.raw("list_index_files", &format!("[{}]", items.join(",")));
            }
            Err(e) => {
                let mut f = JsonObject::new();
                f.string("error", e);
                o.raw("list_index_files", &f.finish());
            }
        }
        match self.record_mtime {
            Some((sec, nsec)) => {
                let mut l = JsonObject::new();
                l.string("mtime", &utc(sec, nsec));
                l.number("seconds_ago", now.saturating_sub(sec));
                o.raw("last_login", &l.finish());
            }
            None => o.raw("last_login", "null"),
        }
        let notes: Vec<String> = self.notes.iter().map(|n| quote(n)).collect();
        o.raw("notes", &format!("[{}]", notes.join(",")));
        o.finish() + "\n"
    }
}

fn syntax_name(syntax: Syntax) -> &'static str {
    match syntax {
        Syntax::V23 => "Dovecot 2.3 syntax",
        Syntax::V24 => "Dovecot 2.4 syntax",
    }
}

fn stamp_text(stamp: &Stamp) -> String {
    format!(
        "{}, inode {}, mtime {}",
        stamp.host(),
        stamp.ino,
        utc(stamp.mtime_sec, stamp.mtime_nsec)
    )
}

fn record_text(record: &Record) -> String {
    match record {
        Record::NoDirectory => {
            "none: LISTINDEX does not exist (no login on this backend yet, or cleaned)".into()
        }
        Record::Missing => "none: LISTINDEX/.lasthost does not exist".into(),
        Record::Empty => "empty: the last login stored none".into(),
        Record::Valid(stamp) => stamp_text(stamp),
        Record::Corrupt(e) => format!("not valid: {e}"),
        Record::NotRead => "not read (O_NOATIME not permitted)".into(),
        Record::Error(e) => format!("error: {e}"),
    }
}

fn nfs_text(nfs: &Nfs) -> String {
    match nfs {
        Nfs::Valid(stamp) => stamp_text(stamp),
        Nfs::NotRead { ino, mtime } => format!(
            "inode {ino}, mtime {} (content not read: O_NOATIME not permitted)",
            utc(mtime.0, mtime.1)
        ),
        Nfs::Missing => "none: INDEX/.lasthost does not exist".into(),
        Nfs::IndexMissing => {
            "none: INDEX does not exist (a new user, or NFS is not mounted)".into()
        }
        Nfs::Error(e) => format!("error: {e}"),
    }
}

fn files_text(files: &Result<Vec<(OsString, u64)>, String>) -> String {
    match files {
        Ok(files) if files.is_empty() => "none".into(),
        Ok(files) => {
            let total: u64 = files.iter().map(|(_, size)| size).sum();
            let each: Vec<String> = files
                .iter()
                .map(|(name, size)| format!("{} {size}", printable(name.as_bytes(), usize::MAX)))
                .collect();
            format!(
                "{} file{}, {total} bytes: {}",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                each.join(", ")
            )
        }
        Err(e) => format!("error: {e}"),
    }
}

fn last_login_text(mtime: Option<(i64, i64)>, now: i64) -> String {
    match mtime {
        Some((sec, nsec)) => format!("{} ({})", ago(now.saturating_sub(sec)), utc(sec, nsec)),
        None => "none on this backend (no record)".into(),
    }
}

fn stamp_json(state: &str, stamp: &Stamp) -> String {
    let mut o = JsonObject::new();
    o.string("state", state);
    o.string("host", &stamp.host());
    o.number("inode", stamp.ino);
    o.string("mtime", &utc(stamp.mtime_sec, stamp.mtime_nsec));
    o.number("mtime_sec", stamp.mtime_sec);
    o.number("mtime_nsec", stamp.mtime_nsec);
    o.finish()
}

fn state_json(state: &str, detail: Option<(&str, &str)>) -> String {
    let mut o = JsonObject::new();
    o.string("state", state);
    if let Some((key, value)) = detail {
        o.string(key, value);
    }
    o.finish()
}

fn record_json(record: &Record) -> String {
    match record {
        Record::Valid(stamp) => stamp_json("valid", stamp),
        Record::NoDirectory => state_json("none", Some(("why", "LISTINDEX does not exist"))),
        Record::Missing => state_json("none", Some(("why", "no record file"))),
        Record::Empty => state_json("empty", None),
        Record::Corrupt(e) => state_json("corrupt", Some(("error", e))),
        Record::NotRead => state_json("not_read", Some(("why", "O_NOATIME not permitted"))),
        Record::Error(e) => state_json("error", Some(("error", e))),
    }
}

fn nfs_json(nfs: &Nfs) -> String {
    match nfs {
        Nfs::Valid(stamp) => stamp_json("valid", stamp),
        Nfs::NotRead { ino, mtime } => {
            let mut o = JsonObject::new();
            o.string("state", "not_read");
            o.number("inode", *ino);
            o.string("mtime", &utc(mtime.0, mtime.1));
            o.number("mtime_sec", mtime.0);
            o.number("mtime_nsec", mtime.1);
            o.finish()
        }
        Nfs::Missing => state_json("none", Some(("why", "INDEX/.lasthost does not exist"))),
        Nfs::IndexMissing => state_json("none", Some(("why", "INDEX does not exist"))),
        Nfs::Error(e) => state_json("error", Some(("error", e))),
    }
}

/// A JSON object written field by field.
struct JsonObject(String);

impl JsonObject {
    fn new() -> Self {
        JsonObject(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&quote(key));
        self.0.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        self.0.push_str(&quote(value));
    }

    fn number(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.0, "{value}");
    }

    /// A value that is already JSON.
    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.0.push_str(json);
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A time as `2024-06-01 12:00:00.000000005 UTC`.
fn utc(sec: i64, nsec: i64) -> String {
    let (year, month, day) = civil_from_days(sec.div_euclid(86_400));
    let of_day = sec.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{nsec:09} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// by Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2 d 3 h ago`, `5 min 2 s ago`...
fn ago(seconds: i64) -> String {
    if seconds < 0 {
        return format!("{} s in the future (clock skew?)", -seconds);
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    let text = if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    };
    text + " ago"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args(&os(&["bob", "--home", "/h/bob", "--json"]))
            .expect("ok")
            .expect("args");
        assert_eq!(a.user, "bob");
        assert_eq!(a.home.as_deref(), Some(OsStr::new("/h/bob")));
        assert!(a.json);
        let a = parse_args(&os(&["--config=/c", "--", "-odd-user"]))
            .expect("ok")
            .expect("args");
        assert_eq!(a.user, "-odd-user");
        assert_eq!(a.config.as_deref(), Some(OsStr::new("/c")));
        assert_eq!(parse_args(&os(&["--help"])), Ok(None));
        for bad in [&[][..], &["a", "b"], &["--home"], &["--what", "a"], &[""]] {
            assert!(parse_args(&os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0, 0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(utc(1_700_000_000, 5), "2023-11-14 22:13:20.000000005 UTC");
        assert_eq!(utc(951_782_400, 0), "2000-02-29 00:00:00.000000000 UTC");
        assert_eq!(utc(-1, 0), "1969-12-31 23:59:59.000000000 UTC");
    }

    #[test]
    fn durations() {
        assert_eq!(ago(5), "5 s ago");
        assert_eq!(ago(125), "2 min 5 s ago");
        assert_eq!(ago(7_500), "2 h 5 min ago");
        assert_eq!(ago(3 * 86_400 + 3600), "3 d 1 h ago");
        assert!(ago(-3).contains("future"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let mut o = JsonObject::new();
        o.string("k", "v");
        o.number("n", 3);
        o.raw("z", "null");
        assert_eq!(o.finish(), "{\"k\":\"v\",\"n\":3,\"z\":null}");
    }
}
