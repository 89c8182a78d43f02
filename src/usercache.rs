//! The cache cleaner: `usercache clean` removes one user's LISTINDEX
//! directory, `usercache sweep` walks the LISTINDEX root and removes every
//! user directory no login has touched for a while.
//!
//! A user is cleaned under the user's lock (the flock on the local record,
//! LISTINDEX/.lasthost), taken without waiting: a held lock means a login
//! is running, and the user is skipped. The order of removal lets a login
//! that waited for the lock notice and start over from the root (see
//! `lock.rs` and `login.rs`): every entry but the record, then the record,
//! then the user's directory, then the hash directories above it that are
//! now empty, and only then the lock is released.
//!
//! The sweep usually runs as root over a tree its users can write to, so
//! everything below the root is reached with directory-relative calls that
//! never follow a symlink and never enter another file system. A user that
//! is not cleaned keeps every timestamp: the record is only stat()ed, and
//! directories are listed with `O_NOATIME`. The walk is depth-first and
//! handles each user as it meets it, so memory does not grow with the number
//! of users.
//!
//! Known limitations. A directory without a record (one that Dovecot filled
//! from an LMTP delivery or a doveadm command, which run no post-login
//! script) is aged by its entries' and its own mtime, and cleaned only when
//! every entry is a list index file; when it turns out to be young once the
//! cleaner has created a record to lock it, removing that record again
//! leaves the directory's mtime and ctime changed. A Dovecot process that
//! still has a session open for a user whose last login is older than AGE
//! may write list index files while the cleaner removes them; the cleaner
//! then finds the directory not empty, leaves it, and counts the user busy.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{getegid, geteuid, setfsgid, setfsuid, unlinkat, Gid, Uid, UnlinkatFlags, User};

use crate::interval::parse_interval;
use crate::lock::{LockError, UserLock, Wait};
use crate::log::{LogTarget, Logger};
use crate::mail_location::{Layout, LASTHOST};
use crate::settings::{self, Settings};
use crate::sys::{retry_eintr, Context, SysError};

/// Exit status when everything went well (busy and young users included).
pub const EXIT_OK: i32 = 0;
/// Exit status when some user (or directory) could not be handled.
pub const EXIT_FAILED: i32 = 1;
/// Exit status for bad usage: an unknown option, a bad AGE, a missing DIR,
/// bad settings, or a refused ROOT or DIR. Nothing was touched.
pub const EXIT_USAGE: i32 = 2;

/// How long a user must have gone without a login before `sweep` removes
/// the user's cache, when `--min-age` is not given.
pub const SWEEP_DEFAULT_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How deeply directories may nest inside one user's directory. Dovecot
/// makes none; the bound keeps a planted tree from exhausting descriptors.
const NESTING_MAX: usize = 16;

/// How often a user's record may appear or vanish between looking at it
/// and locking it before the user is counted busy.
const USER_RETRIES: u32 = 5;

/// A sweep shows progress on a terminal only once it has run this long...
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// ...and then redraws the line at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

const USAGE: &str = "\
usage: nfs-hostchange usercache clean [--min-age AGE] [--config FILE] DIR
       nfs-hostchange usercache clean AGE DIR
       nfs-hostchange usercache sweep [--min-age AGE] [--dry-run] [--config FILE] [ROOT]
";

// ---------------------------------------------------------------------------
// Arguments

/// A parsed `usercache` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `clean`: one user's directory.
    Clean(CleanArgs),
    /// `sweep`: every user below the LISTINDEX root.
    Sweep(SweepArgs),
    /// `--help`.
    Help,
}

/// The arguments of `clean`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanArgs {
    /// Clean only when the last login is at least this old; `None` cleans
    /// whatever the age.
    pub min_age: Option<Duration>,
    /// `--config`.
    pub config: Option<OsString>,
    /// The user's LISTINDEX directory.
    pub dir: PathBuf,
}

/// The arguments of `sweep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepArgs {
    /// Clean users whose last login is at least this old.
    pub min_age: Duration,
    /// List what would go and change nothing.
    pub dry_run: bool,
    /// `--config`.
    pub config: Option<OsString>,
    /// The LISTINDEX root; `None` means the configured one.
    pub root: Option<PathBuf>,
}

/// Parses the words after `usercache`.
pub fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("missing subcommand (clean or sweep)".to_string());
    };
    let sweep = match sub.as_bytes() {
        b"clean" => false,
        b"sweep" => true,
        b"--help" | b"-h" | b"help" => return Ok(Command::Help),
        other => {
            return Err(format!(
                "unknown subcommand {:?} (clean or sweep)",
                String::from_utf8_lossy(other)
            ))
        }
    };

    let mut min_age: Option<Duration> = None;
    let mut dry_run = false;
    let mut config: Option<OsString> = None;
    let mut positional: Vec<&OsString> = Vec::new();
    let mut words = rest.iter();
    let mut options_done = false;
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if options_done || !bytes.starts_with(b"-") || bytes == b"-" {
            positional.push(word);
            continue;
        }
        // An option's value follows `=` or is the next word.
        let (name, inline) = match bytes.iter().position(|&b| b == b'=') {
            Some(eq) if bytes.starts_with(b"--") => (&bytes[..eq], Some(&bytes[eq + 1..])),
            _ => (bytes, None),
        };
        let mut value = |name: &str| -> Result<OsString, String> {
            match inline {
                Some(v) => Ok(OsStr::from_bytes(v).to_os_string()),
                None => words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name {
            b"--" => options_done = true,
            b"--help" | b"-h" => return Ok(Command::Help),
            b"--min-age" => {
                if min_age.is_some() {
                    return Err("--min-age given twice".to_string());
                }
                min_age = Some(parse_age(&value("--min-age")?)?);
            }
            b"--config" => {
                if config.is_some() {
                    return Err("--config given twice".to_string());
                }
                config = Some(value("--config")?);
            }
            b"--dry-run" if sweep && inline.is_none() => dry_run = true,
            _ => {
                return Err(format!(
                    "unknown option {:?}",
                    String::from_utf8_lossy(bytes)
                ))
            }
        }
    }

    if sweep {
        if positional.len() > 1 {
            return Err("sweep takes at most one ROOT".to_string());
        }
        return Ok(Command::Sweep(SweepArgs {
            min_age: min_age.unwrap_or(SWEEP_DEFAULT_AGE),
            dry_run,
            config,
            root: positional.first().map(PathBuf::from),
        }));
    }
    let dir = match positional.as_slice() {
        [] => return Err("clean needs DIR, the user's LISTINDEX directory".to_string()),
        [dir] => dir,
        [age, dir] => {
            if min_age.is_some() {
                return Err("AGE given both with --min-age and before DIR".to_string());
            }
            min_age = Some(parse_age(age)?);
            dir
        }
        _ => return Err("clean takes AGE and DIR at most".to_string()),
    };
    if dir.is_empty() {
        return Err("DIR is empty".to_string());
    }
    Ok(Command::Clean(CleanArgs {
        min_age,
        config,
        dir: PathBuf::from(dir),
    }))
}

/// Parses AGE with Dovecot's interval syntax.
fn parse_age(text: &OsStr) -> Result<Duration, String> {
    let text = text
        .to_str()
        .ok_or_else(|| format!("invalid interval {text:?}: not UTF-8"))?;
    parse_interval(text).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Entry point

/// Runs `usercache` with the words after it; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let command = match parse_args(args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("nfs-hostchange usercache: {message}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let result = match command {
        Command::Help => {
            print!("{}", crate::help::text(&crate::help::USERCACHE));
            return EXIT_OK;
        }
        Command::Clean(args) => run_clean(&args),
        Command::Sweep(args) => run_sweep(&args),
    };
    match result {
        Ok(status) => status,
        Err(Refused(message)) => {
            eprintln!("nfs-hostchange usercache: {message}");
            EXIT_USAGE
        }
    }
}

/// Why the cleaner would not start: bad settings, or a ROOT or DIR that is
/// not safe to work on. Nothing was touched.
struct Refused(String);

impl From<String> for Refused {
    fn from(message: String) -> Self {
        Refused(message)
    }
}

impl From<&str> for Refused {
    fn from(message: &str) -> Self {
        Refused(message.to_string())
    }
}

/// What both subcommands need: settings, layout, log, trusted owners.
struct Setup {
    layout: Layout,
    log: Logger,
    /// Whether errors also go to stderr (they do unless the log already
    /// writes there).
    echo_stderr: bool,
    /// Who may own the LISTINDEX root: root, us, and `mail_uid`.
    owners: Vec<Uid>,
}

fn setup(config: Option<&OsStr>) -> Result<Setup, Refused> {
    let (path, explicit) = settings::config_path(config);
    let loaded = settings::load(&path, explicit).map_err(|e| e.to_string())?;
    if !loaded.errors.is_empty() {
        let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        return Err(errors.join("; ").into());
    }
    let settings: Settings = loaded.settings;
    // The `dovecot` target is Dovecot's log pipe, which only a process that
    // Dovecot started has; from a timer or a shell, syslog stands in.
    let target = match settings.log {
        LogTarget::Dovecot => LogTarget::Syslog,
        other => other,
    };
    let log = Logger::new(target);
    for warning in &loaded.warnings {
        eprintln!("nfs-hostchange usercache: {warning}");
    }
    // The same settings the login reads: mail_location, or Dovecot 2.4's.
    let Some(location) = settings.location() else {
        return Err(format!("mail_location is not set in {}", path.display()).into());
    };
    let layout = location.layout().map_err(|e| {
        format!(
            "{}: {}: {e}",
            settings.location_origin(),
            location.setting()
        )
    })?;

    let mut owners = vec![Uid::from_raw(0), geteuid()];
    if let Some(mail_uid) = &settings.mail_uid {
        owners.push(resolve_uid(mail_uid)?);
    }
    Ok(Setup {
        layout,
        log,
        echo_stderr: target != LogTarget::Stderr,
        owners,
    })
}

/// A user name or number, as Dovecot's `mail_uid` takes it.
fn resolve_uid(name: &str) -> Result<Uid, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse::<u32>()
            .map(Uid::from_raw)
            .map_err(|_| format!("mail_uid {name:?} is out of range"));
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid),
        Ok(None) => Err(format!("mail_uid {name:?}: no such user")),
        Err(errno) => Err(format!("mail_uid {name:?}: {}", errno.desc())),
    }
}

// ---------------------------------------------------------------------------
// The two subcommands

fn run_clean(args: &CleanArgs) -> Result<i32, Refused> {
    let setup = setup(args.config.as_deref())?;
    let layout = &setup.layout;

    // DIR must be `depth` plain names below the configured root, judged on
    // canonical paths, with DIR itself (and the root) not resolved.
    let root = canonical_nofollow(&layout.root)
        .map_err(|e| format!("LISTINDEX root {}: {e}", layout.root.display()))?;
    let dir = canonical_nofollow(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let below = dir
        .strip_prefix(&root)
        .ok()
        .filter(|rel| {
            rel.components().count() == layout.depth
                && rel.components().all(|c| matches!(c, Component::Normal(_)))
        })
        .ok_or_else(|| {
            format!(
                "refusing {}: not a user directory, which is {} level{} below the LISTINDEX root {}",
                args.dir.display(),
                layout.depth,
                if layout.depth == 1 { "" } else { "s" },
                root.display()
            )
        })?;
    let mut names: Vec<&OsStr> = below.iter().collect();
    let Some(user) = names.pop() else {
        return Err(format!("refusing {}: it is the LISTINDEX root", args.dir.display()).into());
    };

    let mut cleaner = Cleaner::new(&setup, root.clone(), args.min_age, false, false);
    let nothing = |cleaner: &Cleaner<'_>| {
        cleaner.summary("clean", &dir);
        Ok(EXIT_OK)
    };

    // The root, then each directory down to the user's, never following a
    // symlink and never leaving the root's file system.
    let Some((root_fd, root_st)) = open_root(&root, &setup.owners)? else {
        return nothing(&cleaner);
    };
    cleaner.root_dev = root_st.st_dev;
    let mut walk = Walk::new(root_fd);
    let mut path = root.clone();
    for name in names {
        path.push(name);
        let parent = walk.top();
        let fd = match open_dir(parent, name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return nothing(&cleaner),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(format!(
                    "refusing {}: {} is a symlink or not a directory",
                    args.dir.display(),
                    path.display()
                )
                .into())
            }
            Err(errno) => {
                cleaner.error(&SysError::new("open", &path, errno));
                cleaner.summary("clean", &dir);
                return Ok(EXIT_FAILED);
            }
        };
        match fstat(fd.as_fd()) {
            Ok(st) if st.st_dev == cleaner.root_dev => {}
            Ok(_) => {
                return Err(format!(
                    "refusing {}: {} is on another file system than the LISTINDEX root",
                    args.dir.display(),
                    path.display()
                )
                .into())
            }
            Err(errno) => {
                cleaner.error(&SysError::new("fstat", &path, errno));
                cleaner.summary("clean", &dir);
                return Ok(EXIT_FAILED);
            }
        }
        walk.below.push((fd, name.to_os_string()));
    }
    path.push(user);
    match fstatat(walk.top(), user, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) == SFlag::S_IFDIR => {}
        Ok(st) if file_type(&st) == SFlag::S_IFLNK => {
            return Err(format!("refusing {}: it is a symlink", args.dir.display()).into())
        }
        Ok(_) => return Err(format!("refusing {}: not a directory", args.dir.display()).into()),
        Err(Errno::ENOENT) => return nothing(&cleaner),
        Err(errno) => {
            cleaner.error(&SysError::new("stat", &path, errno));
            cleaner.summary("clean", &dir);
            return Ok(EXIT_FAILED);
        }
    }

    cleaner.user(&walk, user, &path);
    cleaner.summary("clean", &dir);
    Ok(cleaner.exit_status())
}

fn run_sweep(args: &SweepArgs) -> Result<i32, Refused> {
    let setup = setup(args.config.as_deref())?;
    let root = args
        .root
        .clone()
        .unwrap_or_else(|| setup.layout.root.clone());
    let progress = std::io::stdout().is_terminal();
    let mut cleaner = Cleaner::new(
        &setup,
        root.clone(),
        Some(args.min_age),
        args.dry_run,
        progress,
    );

    if canonical_nofollow(&root).is_ok_and(|p| p == Path::new("/")) {
        return Err("refusing to sweep /".into());
    }
    let Some((root_fd, root_st)) = open_root(&root, &setup.owners)? else {
        if args.root.is_some() {
            return Err(format!("{}: no such directory", root.display()).into());
        }
        // No login since boot has created the configured root yet.
        cleaner.summary("sweep", &root);
        return Ok(EXIT_OK);
    };
    cleaner.root_dev = root_st.st_dev;
    let mut walk = Walk::new(root_fd);
    let mut path = root.clone();
    cleaner.walk(&mut walk, &mut path);
    cleaner.progress_clear();
    cleaner.summary("sweep", &root);
    Ok(cleaner.exit_status())
}

/// `path` made absolute and canonical, except that its last component is
/// not resolved (a symlink there stays a symlink). Directories that do not
/// exist are taken as written; `.` or `..` after one is refused.
fn canonical_nofollow(path: &Path) -> Result<PathBuf, String> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        Some(Component::RootDir) => return Ok(PathBuf::from("/")),
        _ => return Err("must not end in . or ..".to_string()),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::canonicalize(parent) {
        Ok(parent) => Ok(parent.join(name)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(canonical_nofollow(parent)?.join(name))
        }
        Err(e) => Err(format!("{}: {e}", parent.display())),
    }
}

/// Opens the LISTINDEX root and checks that it is safe to work below:
/// not a symlink, a directory, owned by one of `owners`, and not group- or
/// world-writable unless it is root's with the sticky bit. `None` when it
/// does not exist.
fn open_root(root: &Path, owners: &[Uid]) -> Result<Option<(OwnedFd, FileStat)>, Refused> {
    let refuse =
        |why: String| Refused(format!("refusing LISTINDEX root {}: {why}", root.display()));
    let fd = match open_noatime(|flags| open(root, flags, Mode::empty())) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(refuse("it is a symlink".to_string())),
        Err(Errno::ENOTDIR) => {
            let why = match std::fs::symlink_metadata(root) {
                Ok(meta) if meta.file_type().is_symlink() => "it is a symlink",
                _ => "not a directory",
            };
            return Err(refuse(why.to_string()));
        }
        Err(errno) => return Err(refuse(SysError::new("open", root, errno).to_string())),
    };
    let st = fstat(fd.as_fd())
        .map_err(|errno| refuse(SysError::new("fstat", root, errno).to_string()))?;
    // A root-owned sticky directory (1777) is what set-ups with one uid per
    // user need; others cannot remove or replace what is not theirs there,
    // and the walk never follows a symlink anyone planted.
    let sticky_root_owned = st.st_mode & 0o1000 != 0 && st.st_uid == 0;
    if st.st_mode & 0o022 != 0 && !sticky_root_owned {
        return Err(refuse(format!(
            "it is group- or world-writable without being root's with the sticky bit (mode {:04o})",
            st.st_mode & 0o7777
        )));
    }
    if !owners.contains(&Uid::from_raw(st.st_uid)) {
        return Err(refuse(format!(
            "it is owned by uid {}, not by root, the sweep's own user or mail_uid",
            st.st_uid
        )));
    }
    Ok(Some((fd, st)))
}

// ---------------------------------------------------------------------------
// The walk

/// Counters for the summary line.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    scanned: u64,
    cleaned: u64,
    busy: u64,
    skipped: u64,
    errors: u64,
    bytes: u64,
}

/// The open directories from the root down to the one being listed: the
/// root, then each directory below it with its name in the one above. Its
/// length is bounded by the layout's depth.
struct Walk {
    root: OwnedFd,
    below: Vec<(OwnedFd, OsString)>,
}

impl Walk {
    fn new(root: OwnedFd) -> Walk {
        Walk {
            root,
            below: Vec::new(),
        }
    }

    /// The directory whose entries are being looked at.
    fn top(&self) -> BorrowedFd<'_> {
        self.below
            .last()
            .map_or(self.root.as_fd(), |(fd, _)| fd.as_fd())
    }

    /// How many directories below the root `top()` is.
    fn level(&self) -> usize {
        self.below.len()
    }
}

/// What happened to one user.
#[derive(Debug)]
enum UserOutcome {
    /// Removed; `leftover` when an emptied hash directory could not be.
    Cleaned {
        freed: u64,
        leftover: Option<SysError>,
    },
    /// Old enough, but a dry run: `size` bytes would be freed.
    WouldClean { size: u64 },
    /// A login holds the lock, or came in while the user was being removed
    /// (then `freed` bytes of list index were removed all the same).
    Busy { freed: u64 },
    /// Too recent a login.
    Young,
    /// Gone before it could be looked at.
    Gone,
    /// Not a directory (a symlink, say): not a user, and not counted.
    NotADir,
    /// Not ours to remove, for the reason given.
    LeftAlone(String),
}

/// Why a user could not be handled.
#[derive(Debug)]
enum CleanError {
    Sys(SysError),
    NotRegular(PathBuf),
    OtherFs(PathBuf),
    TooDeep(PathBuf),
}

impl fmt::Display for CleanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CleanError::Sys(e) => e.fmt(f),
            CleanError::NotRegular(p) => {
                write!(f, "{}: not a regular file: user left alone", p.display())
            }
            CleanError::OtherFs(p) => write!(
                f,
                "{}: on another file system than the LISTINDEX root: not entered",
                p.display()
            ),
            CleanError::TooDeep(p) => write!(
                f,
                "{}: directories nested more than {NESTING_MAX} deep: not entered",
                p.display()
            ),
        }
    }
}

impl From<SysError> for CleanError {
    fn from(e: SysError) -> Self {
        CleanError::Sys(e)
    }
}

/// One run of the cleaner over one user or a whole root.
struct Cleaner<'a> {
    root: PathBuf,
    root_dev: u64,
    depth: usize,
    prefix: OsString,
    min_age: Option<Duration>,
    dry_run: bool,
    log: &'a Logger,
    echo_stderr: bool,
    counts: Counts,
    progress: Option<Progress>,
}

/// The progress line on stderr.
struct Progress {
    start: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl<'a> Cleaner<'a> {
    fn new(
        setup: &'a Setup,
        root: PathBuf,
        min_age: Option<Duration>,
        dry_run: bool,
        progress: bool,
    ) -> Cleaner<'a> {
        Cleaner {
            root,
            root_dev: 0,
            depth: setup.layout.depth,
            prefix: setup.layout.prefix.clone(),
            min_age: min_age.filter(|age| !age.is_zero()),
            dry_run,
            log: &setup.log,
            echo_stderr: setup.echo_stderr,
            counts: Counts::default(),
            progress: progress.then(|| Progress {
                start: Instant::now(),
                last: None,
                shown: false,
            }),
        }
    }

    /// Lists the directory on top of `walk` (at `path`) and handles each
    /// entry: a user when the directory is just above the users' depth,
    /// else a hash directory to descend into.
    fn walk(&mut self, walk: &mut Walk, path: &mut PathBuf) {
        let users_here = walk.level() + 1 == self.depth;
        let mut listing = match list_dir(walk.top()) {
            Ok(listing) => listing,
            // Removed meanwhile (its last user was just cleaned).
            Err(Errno::ENOENT) => return,
            Err(errno) => return self.error(&SysError::new("open", &*path, errno)),
        };
        for entry in listing.iter() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(Errno::ENOENT) => break,
                Err(errno) => {
                    self.error(&SysError::new("readdir", &*path, errno));
                    break;
                }
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            // Only directories can be users or lead to them. An unknown
            // type is checked by the open below, which follows no symlink.
            if entry.file_type().is_some_and(|t| t != Type::Directory) {
                continue;
            }
            path.push(name);
            if users_here {
                self.user(walk, name, path);
                self.progress_tick();
            } else {
                self.descend(walk, name, path);
            }
            path.pop();
        }
    }

    /// Enters the hash directory `name` of the directory on top of `walk`.
    fn descend(&mut self, walk: &mut Walk, name: &OsStr, path: &mut PathBuf) {
        let fd = match open_dir(walk.top(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return,
            Err(errno) => return self.error(&SysError::new("open", &*path, errno)),
        };
        match fstat(fd.as_fd()) {
            Ok(st) if st.st_dev == self.root_dev => {}
            Ok(_) => return self.warning(&CleanError::OtherFs(path.clone())),
            Err(errno) => return self.error(&SysError::new("fstat", &*path, errno)),
        }
        walk.below.push((fd, name.to_os_string()));
        self.walk(walk, path);
        walk.below.pop();
    }

    /// Handles the user directory `name` in the directory on top of `walk`
    /// and counts what happened.
    fn user(&mut self, walk: &Walk, name: &OsStr, path: &Path) {
        let outcome = match clean_user(self, walk, name, path) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.counts.scanned += 1;
                return self.error(&e);
            }
        };
        if !matches!(outcome, UserOutcome::NotADir) {
            self.counts.scanned += 1;
        }
        match outcome {
            UserOutcome::NotADir => {}
            UserOutcome::Cleaned { freed, leftover } => {
                self.counts.cleaned += 1;
                self.counts.bytes += freed;
                if let Some(e) = leftover {
                    self.error(&e);
                }
            }
            UserOutcome::WouldClean { size } => {
                self.counts.cleaned += 1;
                self.counts.bytes += size;
                self.progress_clear();
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(path.as_os_str().as_bytes());
                let _ = out.write_all(b"\n");
            }
            UserOutcome::Busy { freed } => {
                self.counts.busy += 1;
                self.counts.bytes += freed;
            }
            UserOutcome::Young | UserOutcome::Gone => {
                self.counts.skipped += 1;
            }
            UserOutcome::LeftAlone(why) => {
                self.counts.skipped += 1;
                self.warning(&format_args!("{}: {why}: left alone", path.display()));
            }
        }
    }

    /// Whether a user last seen at `st`'s mtime is old enough to clean.
    fn is_old(&self, st: &FileStat) -> bool {
        is_old(
            st.st_mtime,
            st.st_mtime_nsec,
            self.min_age,
            SystemTime::now(),
        )
    }

    fn error(&mut self, e: &dyn fmt::Display) {
        self.counts.errors += 1;
        self.progress_clear();
        if self.echo_stderr {
            eprintln!("nfs-hostchange usercache: error: {e}");
        }
        self.log.error(format_args!("usercache: {e}"));
    }

    fn warning(&mut self, e: &dyn fmt::Display) {
        self.progress_clear();
        if self.echo_stderr {
            eprintln!("nfs-hostchange usercache: warning: {e}");
        }
        self.log.warning(format_args!("usercache: {e}"));
    }

    fn status_line(&self, verb: &str, path: &Path) -> String {
        let c = &self.counts;
        let (cleaned, freed) = if self.dry_run {
            ("would clean", "would free")
        } else {
            ("cleaned", "freed")
        };
        format!(
            "{verb} {}: scanned {}, {cleaned} {}, busy {}, skipped {}, errors {}, {freed} {} bytes",
            path.display(),
            c.scanned,
            c.cleaned,
            c.busy,
            c.skipped,
            c.errors,
            c.bytes
        )
    }

    /// The summary: on stdout, and in the log.
    fn summary(&self, verb: &str, path: &Path) {
        let line = self.status_line(verb, path);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        self.log.info(format_args!("usercache: {line}"));
    }

    fn exit_status(&self) -> i32 {
        if self.counts.errors > 0 {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    }

    /// Redraws the progress line when it is due.
    fn progress_tick(&mut self) {
        let Some(progress) = &self.progress else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(progress.start) < PROGRESS_AFTER
            || progress
                .last
                .is_some_and(|last| now.duration_since(last) < PROGRESS_EVERY)
        {
            return;
        }
        let line = self.status_line("sweep", &self.root);
        let _ = write!(std::io::stderr().lock(), "\r{line}");
        if let Some(progress) = &mut self.progress {
            progress.last = Some(now);
            progress.shown = true;
        }
    }

    /// Erases the progress line, if one is shown.
    fn progress_clear(&mut self) {
        if let Some(progress) = &mut self.progress {
            if progress.shown {
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
                progress.shown = false;
            }
        }
    }
}

/// Whether an mtime of `sec`.`nsec` is at least `min_age` before `now`.
/// `None` means no minimum: always old. A future mtime is young.
fn is_old(sec: i64, nsec: i64, min_age: Option<Duration>, now: SystemTime) -> bool {
    let Some(min_age) = min_age else {
        return true;
    };
    let (Ok(sec), Ok(nsec)) = (u64::try_from(sec), u32::try_from(nsec)) else {
        // Before 1970 (or a nonsense nanosecond count): old.
        return true;
    };
    let Some(mtime) = UNIX_EPOCH.checked_add(Duration::new(sec, nsec.min(999_999_999))) else {
        return false;
    };
    now.duration_since(mtime).is_ok_and(|age| age >= min_age)
}

// ---------------------------------------------------------------------------
// One user

/// The next step after one look at a user.
enum Step {
    Done(UserOutcome),
    /// The record appeared or vanished meanwhile: look again.
    Again,
}

/// Looks at the user directory `name` in the directory on top of `walk`,
/// and removes it when it is old enough and its lock is free.
fn clean_user(
    c: &Cleaner<'_>,
    walk: &Walk,
    name: &OsStr,
    path: &Path,
) -> Result<UserOutcome, CleanError> {
    let dir = match open_dir(walk.top(), name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(UserOutcome::Gone),
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(UserOutcome::NotADir),
        Err(errno) => return Err(SysError::new("open", path, errno).into()),
    };
    let dir_st = fstat(dir.as_fd()).ctx("fstat", path)?;
    if dir_st.st_dev != c.root_dev {
        return Ok(UserOutcome::LeftAlone(
            "on another file system than the LISTINDEX root".to_string(),
        ));
    }

    for _ in 0..USER_RETRIES {
        let step = match fstatat(dir.as_fd(), LASTHOST, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(record) if file_type(&record) == SFlag::S_IFREG => {
                with_record(c, walk, dir.as_fd(), &record, name, path)?
            }
            Ok(_) => return Err(CleanError::NotRegular(path.join(LASTHOST))),
            Err(Errno::ENOENT) => without_record(c, walk, dir.as_fd(), &dir_st, name, path)?,
            Err(errno) => return Err(SysError::new("stat", path.join(LASTHOST), errno).into()),
        };
        if let Step::Done(outcome) = step {
            return Ok(outcome);
        }
    }
    Ok(UserOutcome::Busy { freed: 0 })
}

/// A user with a record, aged by the record's mtime.
fn with_record(
    c: &Cleaner<'_>,
    walk: &Walk,
    dir: BorrowedFd<'_>,
    record: &FileStat,
    name: &OsStr,
    path: &Path,
) -> Result<Step, CleanError> {
    if !c.is_old(record) {
        return Ok(Step::Done(UserOutcome::Young));
    }
    if c.dry_run {
        let size = tree_size(dir, path, c.root_dev, NESTING_MAX)?;
        return Ok(Step::Done(UserOutcome::WouldClean { size }));
    }
    let lock = match UserLock::acquire_existing(dir, path, Wait::No) {
        Ok(Some(lock)) => lock,
        // The record went meanwhile: look again.
        Ok(None) | Err(LockError::DirGone) => return Ok(Step::Again),
        Err(LockError::Busy) => return Ok(Step::Done(UserOutcome::Busy { freed: 0 })),
        Err(LockError::Sys(e)) => return Err(e.into()),
    };
    // A login may have finished between the look and the lock.
    if !c.is_old(&lock.stat()?) {
        return Ok(Step::Done(UserOutcome::Young));
    }
    remove_user_locked(c, walk, &lock, dir, name, path).map(Step::Done)
}

/// A user directory without a record, aged by its newest entry and its own
/// mtime. To lock it, a record is created (as the directory's owner); when
/// the user turns out young after all, that record is removed again.
fn without_record(
    c: &Cleaner<'_>,
    walk: &Walk,
    dir: BorrowedFd<'_>,
    dir_st: &FileStat,
    name: &OsStr,
    path: &Path,
) -> Result<Step, CleanError> {
    let newest = match list_index_files(dir, path, &c.prefix, false)? {
        Listing::Files(newest) => newest,
        Listing::Record => return Ok(Step::Again),
        Listing::Gone => return Ok(Step::Done(UserOutcome::Gone)),
        Listing::Foreign(why) => return Ok(Step::Done(UserOutcome::LeftAlone(why))),
    };
    let dir_mtime = (dir_st.st_mtime, dir_st.st_mtime_nsec);
    let young = |newest: Option<(i64, i64)>| {
        let (sec, nsec) = newest.map_or(dir_mtime, |n| n.max(dir_mtime));
        !is_old(sec, nsec, c.min_age, SystemTime::now())
    };
    if young(newest) {
        return Ok(Step::Done(UserOutcome::Young));
    }
    if c.dry_run {
        let size = tree_size(dir, path, c.root_dev, NESTING_MAX)?;
        return Ok(Step::Done(UserOutcome::WouldClean { size }));
    }

    // Create the record to lock, owned by the directory's owner so that the
    // user's logins can open it if it stays.
    let record_path = path.join(LASTHOST);
    let created = {
        let _identity = ActAsOwner::of(dir_st).map_err(|e| SysError::new("setfsuid", path, e))?;
        match retry_eintr(|| {
            openat(
                dir,
                LASTHOST,
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        }) {
            Ok(fd) => fstat(fd.as_fd()).ctx("fstat", &record_path)?,
            Err(Errno::EEXIST) => return Ok(Step::Again),
            Err(Errno::ENOENT) => return Ok(Step::Done(UserOutcome::Gone)),
            Err(errno) => return Err(SysError::new("open", &record_path, errno).into()),
        }
    };
    let lock = match UserLock::acquire_existing(dir, path, Wait::No) {
        Ok(Some(lock)) => lock,
        // Another cleaner removed the new record meanwhile: look again.
        Ok(None) | Err(LockError::DirGone) => return Ok(Step::Again),
        // A login opened the new record first and keeps it.
        Err(LockError::Busy) => return Ok(Step::Done(UserOutcome::Busy { freed: 0 })),
        Err(LockError::Sys(e)) => return Err(e.into()),
    };

    // Look again under the lock, ignoring the record we made. A login that
    // got in between left its mark on the record's mtime.
    let locked = lock.stat()?;
    if locked.st_ino != created.st_ino {
        return Ok(Step::Again);
    }
    let touched =
        (locked.st_mtime, locked.st_mtime_nsec) != (created.st_mtime, created.st_mtime_nsec);
    let again = list_index_files(dir, path, &c.prefix, true)?;
    let leave = match again {
        Listing::Files(newest) if !touched && !young(newest) => None,
        Listing::Foreign(why) => Some(UserOutcome::LeftAlone(why)),
        Listing::Gone => Some(UserOutcome::Gone),
        _ => Some(UserOutcome::Young),
    };
    match leave {
        None => remove_user_locked(c, walk, &lock, dir, name, path).map(Step::Done),
        Some(outcome) => {
            match unlinkat(dir, LASTHOST, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(errno) => return Err(SysError::new("unlink", &record_path, errno).into()),
            }
            Ok(Step::Done(outcome))
        }
    }
}

/// What a user directory without a record holds.
enum Listing {
    /// Only list index files; the newest mtime among them, if any.
    Files(Option<(i64, i64)>),
    /// A record appeared.
    Record,
    /// The directory was removed.
    Gone,
    /// Something else, described.
    Foreign(String),
}

/// Lists a directory that has no record, checking that it holds only list
/// index files (regular files named `prefix...`).
/// With `ours`, the record is the one the cleaner created, and is skipped.
fn list_index_files(
    dir: BorrowedFd<'_>,
    path: &Path,
    prefix: &OsStr,
    ours: bool,
) -> Result<Listing, CleanError> {
    let mut listing = match list_dir(dir) {
        Ok(listing) => listing,
        Err(Errno::ENOENT) => return Ok(Listing::Gone),
        Err(errno) => return Err(SysError::new("open", path, errno).into()),
    };
    let mut newest: Option<(i64, i64)> = None;
    for entry in listing.iter() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(Errno::ENOENT) => return Ok(Listing::Gone),
            Err(errno) => return Err(SysError::new("readdir", path, errno).into()),
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if name == LASTHOST {
            if ours {
                continue;
            }
            return Ok(Listing::Record);
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(errno) => return Err(SysError::new("stat", path.join(name), errno).into()),
        };
        if file_type(&st) != SFlag::S_IFREG || !name.as_bytes().starts_with(prefix.as_bytes()) {
            return Ok(Listing::Foreign(format!(
                "no {LASTHOST}, and {:?} is not a list index file",
                name
            )));
        }
        let mtime = (st.st_mtime, st.st_mtime_nsec);
        newest = Some(newest.map_or(mtime, |n| n.max(mtime)));
    }
    Ok(Listing::Files(newest))
}

/// Removes the user's directory: every entry but the record, then the
/// record, then the directory, then the emptied hash directories above it.
/// Locked: the caller holds `lock`, and it is released only after all this.
fn remove_user_locked(
    c: &Cleaner<'_>,
    walk: &Walk,
    lock: &UserLock,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> Result<UserOutcome, CleanError> {
    let mut freed = remove_contents(dir, path, c.root_dev, true, NESTING_MAX)?;

    let record = lock.stat()?;
    match unlinkat(dir, LASTHOST, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => freed += allocated(&record),
        Err(Errno::ENOENT) => {}
        Err(errno) => return Err(SysError::new("unlink", lock.path(), errno).into()),
    }
    match unlinkat(walk.top(), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        // A login created a new record after ours went, or Dovecot wrote
        // a file: the user is in use again.
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => return Ok(UserOutcome::Busy { freed }),
        Err(errno) => return Err(SysError::new("rmdir", path, errno).into()),
    }
    let leftover = remove_empty_parents(walk, c.root.as_path()).err();
    Ok(UserOutcome::Cleaned { freed, leftover })
}

/// Removes the directories of `walk` below the root, from the deepest up,
/// as long as they are empty.
fn remove_empty_parents(walk: &Walk, root: &Path) -> Result<(), SysError> {
    for level in (0..walk.below.len()).rev() {
        let parent = match level {
            0 => walk.root.as_fd(),
            _ => walk.below[level - 1].0.as_fd(),
        };
        let name = walk.below[level].1.as_os_str();
        match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT) => return Ok(()),
            Err(errno) => {
                let mut path = root.to_path_buf();
                path.extend(walk.below[..=level].iter().map(|(_, name)| name));
                return Err(SysError::new("rmdir", path, errno));
            }
        }
    }
    Ok(())
}

/// Removes every entry of `dir` (but the record at the top when
/// `keep_record`), descending into directories on the root's file system
/// at most `nesting` deep. Symlinks are removed, never followed. Returns
/// the bytes freed.
fn remove_contents(
    dir: BorrowedFd<'_>,
    path: &Path,
    root_dev: u64,
    keep_record: bool,
    nesting: usize,
) -> Result<u64, CleanError> {
    let mut listing = list_dir(dir).ctx("open", path)?;
    let mut freed = 0;
    for entry in listing.iter() {
        let entry = entry.ctx("readdir", path)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." || (keep_record && name == LASTHOST) {
            continue;
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(errno) => return Err(SysError::new("stat", path.join(name), errno).into()),
        };
        if file_type(&st) == SFlag::S_IFDIR {
            let sub_path = path.join(name);
            if st.st_dev != root_dev {
                return Err(CleanError::OtherFs(sub_path));
            }
            if nesting == 0 {
                return Err(CleanError::TooDeep(sub_path));
            }
            let sub = match open_dir(dir, name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(SysError::new("open", &sub_path, errno).into()),
            };
            let sub_st = fstat(sub.as_fd()).ctx("fstat", &sub_path)?;
            if sub_st.st_dev != root_dev || sub_st.st_ino != st.st_ino {
                return Err(CleanError::OtherFs(sub_path));
            }
            freed += remove_contents(sub.as_fd(), &sub_path, root_dev, false, nesting - 1)?;
            match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
                Ok(()) => freed += allocated(&st),
                Err(Errno::ENOENT) => {}
                Err(errno) => return Err(SysError::new("rmdir", &sub_path, errno).into()),
            }
        } else {
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => freed += allocated(&st),
                Err(Errno::ENOENT) => {}
                Err(errno) => return Err(SysError::new("unlink", path.join(name), errno).into()),
            }
        }
    }
    Ok(freed)
}

/// The bytes a user's directory takes (for a dry run), changing nothing and
/// not entering other file systems.
fn tree_size(
    dir: BorrowedFd<'_>,
    path: &Path,
    root_dev: u64,
    nesting: usize,
) -> Result<u64, CleanError> {
    let mut listing = list_dir(dir).ctx("open", path)?;
    let mut size = 0;
    for entry in listing.iter() {
        let entry = entry.ctx("readdir", path)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(errno) => return Err(SysError::new("stat", path.join(name), errno).into()),
        };
        size += allocated(&st);
        if file_type(&st) == SFlag::S_IFDIR && st.st_dev == root_dev && nesting > 0 {
            let sub_path = path.join(name);
            match open_dir(dir, name) {
                Ok(sub) => {
                    let sub_st = fstat(sub.as_fd()).ctx("fstat", &sub_path)?;
                    if sub_st.st_dev == st.st_dev && sub_st.st_ino == st.st_ino {
                        size += tree_size(sub.as_fd(), &sub_path, root_dev, nesting - 1)?;
                    }
                }
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
                Err(errno) => return Err(SysError::new("open", &sub_path, errno).into()),
            }
        }
    }
    Ok(size)
}

// ---------------------------------------------------------------------------
// System helpers

/// The space a file takes, as du counts it.
fn allocated(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0) * 512
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Runs an open with `O_NOATIME` added, and again without it when that is
/// not permitted (a directory we do not own, without CAP_FOWNER).
fn open_noatime(mut op: impl FnMut(OFlag) -> nix::Result<OwnedFd>) -> nix::Result<OwnedFd> {
    match retry_eintr(|| op(dir_flags() | OFlag::O_NOATIME)) {
        Err(Errno::EPERM) => retry_eintr(|| op(dir_flags())),
        other => other,
    }
}

/// Opens the directory `name` in `parent` without following a symlink and
/// without touching its atime.
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    open_noatime(|flags| openat(parent, name, flags, Mode::empty()))
}

/// A listing of `dir` through a descriptor of its own (its own offset, and
/// no atime update).
fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Dir> {
    Dir::from_fd(open_dir(dir, OsStr::new("."))?)
}

/// While alive, files are created with the owner and group of a directory
/// (when running as root and the directory is not root's). Dropping it
/// returns to our own identity.
struct ActAsOwner {
    restore: Option<(Uid, Gid)>,
}

impl ActAsOwner {
    fn of(st: &FileStat) -> Result<ActAsOwner, Errno> {
        let (euid, egid) = (geteuid(), getegid());
        if !euid.is_root() || st.st_uid == 0 {
            return Ok(ActAsOwner { restore: None });
        }
        let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
        let guard = ActAsOwner {
            restore: Some((euid, egid)),
        };
        setfsgid(gid);
        setfsuid(uid);
        // Both calls return the previous value: asking again tells whether
        // the change took effect.
        if setfsgid(gid) != gid || setfsuid(uid) != uid {
            return Err(Errno::EPERM);
        }
        Ok(guard)
    }
}

impl Drop for ActAsOwner {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.restore {
            setfsuid(uid);
            setfsgid(gid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(&words(args))
    }

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn clean_with_option() {
        assert_eq!(
            parse(&["clean", "--min-age", "7d", "/x/ab/u"]),
            Ok(Command::Clean(CleanArgs {
                min_age: Some(7 * DAY),
                config: None,
                dir: PathBuf::from("/x/ab/u"),
            }))
        );
        assert_eq!(
            parse(&["clean", "--min-age=12 hours", "--config=/c", "/x/ab/u"]),
            Ok(Command::Clean(CleanArgs {
                min_age: Some(Duration::from_secs(12 * 3600)),
                config: Some(OsString::from("/c")),
                dir: PathBuf::from("/x/ab/u"),
            }))
        );
    }

    #[test]
    fn clean_positional_age() {
        assert_eq!(
            parse(&["clean", "30m", "/x/ab/u"]),
            Ok(Command::Clean(CleanArgs {
                min_age: Some(Duration::from_secs(1800)),
                config: None,
                dir: PathBuf::from("/x/ab/u"),
            }))
        );
    }

    #[test]
    fn clean_without_age_cleans_whatever_the_age() {
        assert_eq!(
            parse(&["clean", "--config", "/c", "/x/ab/u"]),
            Ok(Command::Clean(CleanArgs {
                min_age: None,
                config: Some(OsString::from("/c")),
                dir: PathBuf::from("/x/ab/u"),
            }))
        );
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            parse(&["clean", "--", "-odd"]),
            Ok(Command::Clean(CleanArgs {
                min_age: None,
                config: None,
                dir: PathBuf::from("-odd"),
            }))
        );
    }

    #[test]
    fn sweep_defaults() {
        assert_eq!(
            parse(&["sweep"]),
            Ok(Command::Sweep(SweepArgs {
                min_age: SWEEP_DEFAULT_AGE,
                dry_run: false,
                config: None,
                root: None,
            }))
        );
        assert_eq!(SWEEP_DEFAULT_AGE, 7 * DAY);
    }

    #[test]
    fn sweep_everything() {
        assert_eq!(
            parse(&[
                "sweep",
                "--dry-run",
                "--min-age",
                "2w",
                "--config",
                "/c",
                "/r"
            ]),
            Ok(Command::Sweep(SweepArgs {
                min_age: 14 * DAY,
                dry_run: true,
                config: Some(OsString::from("/c")),
                root: Some(PathBuf::from("/r")),
            }))
        );
        assert_eq!(
            parse(&["sweep", "/r", "--min-age", "0"]),
            Ok(Command::Sweep(SweepArgs {
                min_age: Duration::ZERO,
                dry_run: false,
                config: None,
                root: Some(PathBuf::from("/r")),
            }))
        );
    }

    #[test]
    fn help() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["sweep", "-h"]), Ok(Command::Help));
        assert_eq!(parse(&["clean", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "missing subcommand"),
            (&["purge"], "unknown subcommand"),
            (&["clean"], "clean needs DIR"),
            (
                &["clean", "--dry-run", "/d"],
                "unknown option \"--dry-run\"",
            ),
            (&["sweep", "--dry-run=yes"], "unknown option"),
            (&["sweep", "-x"], "unknown option \"-x\""),
            (&["sweep", "--min-age"], "--min-age needs a value"),
            (&["sweep", "--config"], "--config needs a value"),
            (&["sweep", "/a", "/b"], "at most one ROOT"),
            (&["clean", "1d", "/a", "/b"], "AGE and DIR at most"),
            (
                &["clean", "--min-age", "1d", "2d", "/a"],
                "both with --min-age",
            ),
            (
                &["sweep", "--min-age", "1d", "--min-age", "2d"],
                "given twice",
            ),
            (&["clean", ""], "DIR is empty"),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn bad_age_uses_the_interval_parser_message() {
        let err = parse(&["sweep", "--min-age", "7"]).expect_err("bare number");
        assert_eq!(
            err,
            r#"invalid interval "7": missing unit (add e.g. "s" for seconds)"#
        );
        let err = parse(&["clean", "7x", "/d"]).expect_err("unknown unit");
        assert!(
            err.starts_with(r#"invalid interval "7x": unknown unit"#),
            "{err}"
        );
    }

    #[test]
    fn age_boundaries() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let week = Some(7 * DAY);
        let at = |secs_ago: u64| 1_000_000 - secs_ago as i64;
        assert!(is_old(at(7 * 86400), 0, week, now));
        assert!(!is_old(at(7 * 86400 - 1), 0, week, now));
        assert!(!is_old(at(7 * 86400), 1, week, now));
        assert!(is_old(at(0), 0, None, now));
        assert!(!is_old(2_000_000, 0, week, now));
        assert!(is_old(-5, 0, week, now));
    }

    #[test]
    fn act_as_owner_creates_files_for_the_owner() {
        if !geteuid().is_root() {
            eprintln!("act_as_owner_creates_files_for_the_owner: needs root, skipped");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("user");
        std::fs::create_dir(&dir).expect("mkdir");
        nix::unistd::chown(&dir, Some(Uid::from_raw(65534)), Some(Gid::from_raw(65534)))
            .expect("chown");
        let st = nix::sys::stat::stat(&dir).expect("stat");
        {
            let _owner = ActAsOwner::of(&st).expect("act as owner");
            std::fs::write(dir.join("as-owner"), b"").expect("create as owner");
        }
        std::fs::write(dir.join("as-root"), b"").expect("create as root");
        let owner = std::fs::metadata(dir.join("as-owner")).expect("stat");
        assert_eq!((owner.uid(), owner.gid()), (65534, 65534));
        let back = std::fs::metadata(dir.join("as-root")).expect("stat");
        assert_eq!((back.uid(), back.gid()), (0, 0));
    }

    #[test]
    fn canonical_keeps_the_last_component() {
        let dir = std::env::temp_dir();
        let canon = std::fs::canonicalize(&dir).expect("temp dir");
        assert_eq!(
            canonical_nofollow(&dir.join("no-such-dir/x")).as_deref(),
            Ok(canon.join("no-such-dir/x").as_path())
        );
        assert!(canonical_nofollow(&dir.join("x/..")).is_err());
        assert_eq!(canonical_nofollow(Path::new("/")), Ok(PathBuf::from("/")));
    }
}
