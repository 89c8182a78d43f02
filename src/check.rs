//! `nfs-hostchange check`: is this backend set up right? Reads the
//! settings as the login does, works out a sample user's paths, looks at
//! the LISTINDEX root, and, when `doveconf` is on PATH, compares with
//! Dovecot's own settings. Each finding is one line: ok, note, warning or
//! error. Nothing is changed: the root is only lstat()ed and statfs()ed,
//! and doveconf only reads.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::statfs::{self, FsType};
use nix::unistd::User;

use crate::cli;
use crate::help;
use crate::log::printable;
use crate::mail_location::{Layout, Location, PathError, Syntax};
use crate::settings::{self, Settings};
use crate::var24;
use crate::varexpand::Vars;

/// Exit status when all is well: no warning, no error.
pub const EXIT_OK: i32 = 0;
/// Exit status when a warning or an error was found.
pub const EXIT_PROBLEMS: i32 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: i32 = 2;

/// The longest one doveconf run may take before it is killed.
const DOVECONF_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running doveconf is polled.
const DOVECONF_POLL: Duration = Duration::from_millis(5);

/// The sample user whose paths are worked out.
const SAMPLE: Vars<'static> = Vars {
    user: b"check.user@example.com",
    home: Some(b"/home/check.user"),
    uid: Some(b"1000"),
    gid: Some(b"1000"),
    local_ip: Some(b"192.0.2.1"),
    remote_ip: Some(b"198.51.100.1"),
};

/// Dovecot's default `mailbox_list_index_prefix`.
const DEFAULT_PREFIX: &str = "dovecot.list.index";

/// ramfs's `f_type` (linux/magic.h), which nix does not name.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// The protocols whose post-login services are looked at.
const PROTOCOLS: [&str; 2] = ["imap", "pop3"];

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Worth knowing; not a problem.
    Note,
    /// Risky or likely wrong; works.
    Warning,
    /// Wrong: logins will not be checked, or refuse something.
    Error,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// What `check` found, in order.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<(Level, String)>);

impl Findings {
    fn add(&mut self, level: Level, message: impl Into<String>) {
        self.0.push((level, message.into()));
    }

    /// The number of findings at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.0.iter().filter(|(l, _)| *l == level).count()
    }

    /// The report: one line per finding, then a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (level, message) in &self.0 {
            let mut lines = message.lines();
            let _ = writeln!(
                out,
                "{:<8} {}",
                level.word(),
                lines.next().unwrap_or_default()
            );
            for line in lines {
                let _ = writeln!(out, "{:<8} {line}", "");
            }
        }
        let (errors, warnings) = (self.count(Level::Error), self.count(Level::Warning));
        if errors + warnings == 0 {
            out.push_str("all well\n");
        } else {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            let _ = writeln!(
                out,
                "{errors} error{}, {warnings} warning{}",
                plural(errors),
                plural(warnings)
            );
        }
        out
    }
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Args {
    config: Option<OsString>,
    dovecot_config: Option<OsString>,
}

/// Runs `check` with the words after it; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let args = match parse_args(args) {
        Ok(Some(args)) => args,
        Ok(None) => {
            return match std::io::stdout().write_all(help::text(&help::CHECK).as_bytes()) {
                Ok(()) => EXIT_OK,
                Err(_) => EXIT_PROBLEMS,
            }
        }
        Err(message) => {
            eprintln!(
                "nfs-hostchange check: {message}\nusage: nfs-hostchange {}",
                help::CHECK.synopsis[0]
            );
            return EXIT_USAGE;
        }
    };
    let findings = run(args.config.as_deref(), args.dovecot_config.as_deref());
    if std::io::stdout()
        .write_all(findings.text().as_bytes())
        .is_err()
    {
        return EXIT_PROBLEMS;
    }
    if findings.count(Level::Error) + findings.count(Level::Warning) == 0 {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    }
}

/// Parses the words after `check`; `None` asks for the help text.
fn parse_args(args: &[OsString]) -> Result<Option<Args>, String> {
    let mut parsed = Args::default();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if bytes == b"--help" || bytes == b"-h" {
            return Ok(None);
        } else if let Some(value) = cli::option_value(bytes, "config", &mut words) {
            parsed.config = Some(value?);
        } else if let Some(value) = cli::option_value(bytes, "dovecot-config", &mut words) {
            parsed.dovecot_config = Some(value?);
        } else if bytes.starts_with(b"-") {
            return Err(format!("unknown option {:?}", word.to_string_lossy()));
        } else {
            return Err(format!("unexpected argument {:?}", word.to_string_lossy()));
        }
    }
    Ok(Some(parsed))
}

/// Runs every check. `config` is `--config`; `dovecot_config` is the file
/// doveconf reads (`-c`), its default when `None`.
pub fn run(config: Option<&OsStr>, dovecot_config: Option<&OsStr>) -> Findings {
    let mut f = Findings::default();

    // The settings, as the login reads them.
    let (path, explicit) = settings::config_path(config);
    let (loaded, _) = settings::load_keeping_atime(&path, explicit);
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            f.add(Level::Error, e.to_string());
            return f;
        }
    };
    if !explicit && std::fs::symlink_metadata(&path).is_err() {
        f.add(
            Level::Warning,
            format!("{} does not exist: the defaults apply", path.display()),
        );
    }
    for error in &loaded.errors {
        f.add(Level::Error, format!("{error}: logins are not checked"));
    }
    for warning in &loaded.warnings {
        f.add(Level::Warning, warning.to_string());
    }
    if loaded.errors.is_empty() {
        f.add(Level::Ok, format!("settings {} read", path.display()));
    }
    let settings = loaded.settings;
    let hostname = match &settings.hostname {
        Some(name) => format!("{name} (nfs_hostchange_hostname)"),
        None => match nix::unistd::gethostname() {
            Ok(name) => format!("{} (the system host name)", name.to_string_lossy()),
            Err(_) => "unknown".into(),
        },
    };
    f.add(
        Level::Note,
        format!(
            "this backend writes its name as {hostname}: it must differ from every other backend's"
        ),
    );

    // The paths, for a sample user.
    let location = settings.location();
    let layout = match location {
        None => {
            f.add(
                Level::Warning,
                format!(
                    "neither mail_location nor (for Dovecot 2.4) mail_path is set in {}: \
                     every login needs MAIL (or MAIL_PATH...) from the userdb",
                    path.display()
                ),
            );
            None
        }
        Some(location) => check_location(&location, &settings, &mut f),
    };

    // The LISTINDEX root.
    if let Some(layout) = &layout {
        check_root(&layout.root, &settings, &mut f);
    }

    // Dovecot's own settings.
    match find_on_path("doveconf") {
        None => {
            let level = if dovecot_config.is_some() {
                Level::Warning
            } else {
                Level::Note
            };
            f.add(
                level,
                "doveconf is not on PATH: Dovecot's settings were not compared",
            );
        }
        Some(program) => {
            let doveconf = Doveconf {
                program,
                config: dovecot_config.map(PathBuf::from),
            };
            check_dovecot(&doveconf, &settings, location.as_ref(), &mut f);
        }
    }
    f
}

/// Resolves the sample user's paths; returns the layout when they are fine.
fn check_location(
    location: &Location<'_>,
    settings: &Settings,
    f: &mut Findings,
) -> Option<Layout> {
    let origin = settings.location_origin();
    let setting = location.setting();
    f.add(
        Level::Ok,
        match location.syntax() {
            Syntax::V23 => format!("mail_location from {origin}, read in Dovecot 2.3 syntax"),
            Syntax::V24 => format!(
                "the Dovecot 2.4 settings (mail_path...) from {origin} on, read in Dovecot 2.4 syntax"
            ),
        },
    );

    // A 2.4 template that still holds a 2.3 variable: 2.4 leaves it as it is.
    if let Location::Dovecot24(set) = location {
        for (name, value) in [
            ("mail_path", set.mail_path),
            ("mail_index_path", set.mail_index_path),
            ("mailbox_list_index_prefix", set.mailbox_list_index_prefix),
        ] {
            if let Some(old) = value.and_then(var24::old_style_variable) {
                f.add(
                    Level::Warning,
                    format!(
                        "{name} contains {old}, which Dovecot 2.4 does not expand (it stays \
                         as written): write it as %{{user}}, %{{user | username}}..."
                    ),
                );
            }
        }
    }

    let paths = match location.resolve(&SAMPLE) {
        Ok(paths) => paths,
        Err(e) => {
            let hint = match (&e, location.syntax()) {
                (PathError::Expand(_, _), Syntax::V23) if e.to_string().contains('|') => {
                    "\nthis looks like Dovecot 2.4 syntax: in the settings file use mail_path, \
                     mail_index_path and mailbox_list_index_prefix instead of mail_location"
                }
                _ => "",
            };
            f.add(
                Level::Error,
                format!("{origin}: {setting}: {e}: logins are not checked{hint}"),
            );
            return None;
        }
    };
    let sample = printable(SAMPLE.user, 100);
    f.add(
        Level::Ok,
        format!(
            "for {sample}: INDEX {}, LISTINDEX {}, list index {}",
            paths.index.display(),
            paths.listindex.display(),
            paths.prefix.to_string_lossy()
        ),
    );
    match location.layout() {
        Ok(layout) => Some(layout),
        Err(e) => {
            f.add(Level::Error, format!("{origin}: {setting}: {e}"));
            None
        }
    }
}

/// The LISTINDEX root: there, a directory, owned and moded so that logins
/// accept it and can create users' directories in it, and on tmpfs.
fn check_root(root: &Path, settings: &Settings, f: &mut Findings) {
    let shown = root.display();
    let meta = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = root.parent().filter(|p| p.is_dir());
            let what = if parent.is_some() {
                "the first login creates it, mode 0700 and owned by that login's user, so \
                 other users' logins are refused: create it as root with mode 1777, or owned \
                 by the mail user"
            } else {
                "nor does its parent, so logins cannot create it"
            };
            f.add(
                Level::Warning,
                format!("LISTINDEX root {shown} does not exist: {what}"),
            );
            return;
        }
        Err(e) => {
            f.add(Level::Error, format!("LISTINDEX root {shown}: {e}"));
            return;
        }
    };
    if meta.file_type().is_symlink() {
        f.add(
            Level::Error,
            format!("LISTINDEX root {shown} is a symlink, which logins do not follow: name the real directory"),
        );
        return;
    }
    if !meta.is_dir() {
        f.add(
            Level::Error,
            format!("LISTINDEX root {shown} is not a directory"),
        );
        return;
    }

    // Owner and mode, by the rules the login applies.
    let mode = meta.permissions().mode() & 0o7777;
    let owner = meta.uid();
    let owner_name = User::from_uid(owner.into()).ok().flatten().map_or_else(
        || format!("uid {owner}"),
        |u| format!("{} (uid {owner})", u.name),
    );
    let mail_uid = settings.mail_uid.as_deref().and_then(uid_of);
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        f.add(
            Level::Error,
            format!(
                "LISTINDEX root {shown} has mode {mode:04o}: writable by others without the \
                 sticky bit, so logins refuse it (make it 1777, or 0700 owned by the mail user)"
            ),
        );
    } else if owner == 0 && mode & 0o002 != 0 {
        f.add(
            Level::Ok,
            format!("LISTINDEX root {shown}: owned by root, mode {mode:04o}: every user can create a directory in it"),
        );
    } else if owner == 0 {
        f.add(
            Level::Warning,
            format!(
                "LISTINDEX root {shown}: owned by root, mode {mode:04o}: mail users cannot \
                 create their directories in it (make it 1777, or give it to the mail user)"
            ),
        );
    } else if Some(owner) == mail_uid {
        f.add(
            Level::Ok,
            format!("LISTINDEX root {shown}: owned by the mail user {owner_name}, mode {mode:04o}"),
        );
    } else {
        f.add(
            Level::Warning,
            format!(
                "LISTINDEX root {shown} is owned by {owner_name}: logins as any other user are \
                 refused (if every mail user is that one, say so with mail_uid)"
            ),
        );
    }

    // The file system.
    match statfs::statfs(root) {
        Ok(fs) => {
            let kind = fs.filesystem_type();
            let name = fs_name(kind);
            if kind == statfs::TMPFS_MAGIC || kind == RAMFS_MAGIC {
                f.add(Level::Ok, format!("LISTINDEX root {shown} is on {name}"));
            } else if kind == statfs::NFS_SUPER_MAGIC || kind == statfs::SMB_SUPER_MAGIC {
                f.add(
                    Level::Error,
                    format!(
                        "LISTINDEX root {shown} is on {name}: the list index must be local to \
                         each backend"
                    ),
                );
            } else {
                f.add(
                    Level::Note,
                    format!(
                        "LISTINDEX root {shown} is on {name}, not tmpfs: it works, and the \
                         list indexes survive reboots, at the cost of disk writes"
                    ),
                );
            }
        }
        Err(errno) => f.add(Level::Warning, format!("statfs({shown}): {}", errno.desc())),
    }
}

/// A user name or number, as Dovecot's `mail_uid` takes it.
fn uid_of(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(uid);
    }
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

fn fs_name(kind: FsType) -> String {
    let known = [
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::NFS_SUPER_MAGIC, "NFS"),
        (statfs::SMB_SUPER_MAGIC, "SMB"),
        (statfs::EXT4_SUPER_MAGIC, "ext2/3/4"),
        (statfs::XFS_SUPER_MAGIC, "XFS"),
        (statfs::BTRFS_SUPER_MAGIC, "Btrfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (statfs::FUSE_SUPER_MAGIC, "FUSE"),
    ];
    if kind == RAMFS_MAGIC {
        return "ramfs".into();
    }
    known.iter().find(|(magic, _)| *magic == kind).map_or_else(
        || format!("a file system of type {:#x}", kind.0),
        |(_, n)| (*n).into(),
    )
}

// ---------------------------------------------------------------------------
// doveconf

/// How to run doveconf.
struct Doveconf {
    program: PathBuf,
    /// `-c FILE`, when given.
    config: Option<PathBuf>,
}

impl Doveconf {
    /// Runs doveconf with `args` (after `-c FILE`), bounded by
    /// [`DOVECONF_TIMEOUT`]; returns its output without the final newline.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.program);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let shown = format!("doveconf {}", args.join(" "));
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{shown}: cannot run {}: {e}", self.program.display()))?;
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .map(|pipe| {
            std::thread::spawn(move || {
                let mut data = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut data);
                }
                data
            })
        })
        .collect();
        let deadline = Instant::now() + DOVECONF_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "{shown}: no answer in {} s",
                        DOVECONF_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(DOVECONF_POLL),
                Err(e) => break Err(format!("{shown}: {e}")),
            }
        };
        let mut outputs = readers
            .into_iter()
            .map(|reader| reader.join().unwrap_or_default());
        let stdout = outputs.next().unwrap_or_default();
        let stderr = outputs.next().unwrap_or_default();
        let status = status?;
        if !status.success() {
            let message = String::from_utf8_lossy(&stderr);
            let first = message.lines().next().unwrap_or("no message");
            return Err(format!("{shown} failed ({status}): {first}"));
        }
        let mut text = String::from_utf8_lossy(&stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// `doveconf -h NAME`.
    fn value(&self, name: &str) -> Result<String, String> {
        self.run(&["-h", name])
    }
}

/// Finds an executable named `name` in PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The Dovecot version in the first line of `doveconf -n`:
/// `# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf`.
fn dovecot_version(config_dump: &str) -> Option<Vec<u32>> {
    let first = config_dump.lines().next()?.strip_prefix("# ")?;
    let word = first.split_whitespace().next()?;
    let version: Vec<u32> = word
        .split('.')
        .map_while(|part| {
            let digits = part.bytes().take_while(u8::is_ascii_digit).count();
            part[..digits].parse().ok()
        })
        .collect();
    (version.len() >= 2).then_some(version)
}

/// Compares with Dovecot's settings and looks at the post-login services.
fn check_dovecot(
    doveconf: &Doveconf,
    settings: &Settings,
    location: Option<&Location<'_>>,
    f: &mut Findings,
) {
    let dump = match doveconf.run(&["-n"]) {
        Ok(dump) => dump,
        Err(e) => {
            f.add(
                Level::Error,
                format!("{e}: Dovecot's settings were not compared"),
            );
            return;
        }
    };
    let config_shown = doveconf.config.as_ref().map_or_else(
        || "its default configuration".into(),
        |c| c.display().to_string(),
    );
    let version = dovecot_version(&dump);
    let version_text = version.as_ref().map_or_else(
        || "of unknown version".to_string(),
        |v| {
            let parts: Vec<String> = v.iter().map(u32::to_string).collect();
            parts.join(".")
        },
    );
    f.add(
        Level::Ok,
        format!(
            "doveconf {} reads {config_shown}: Dovecot {version_text}",
            doveconf.program.display()
        ),
    );
    let is_24 = version.as_ref().map(|v| v.as_slice() >= [2, 4].as_slice());

    // The location: the same in both files, and of the right generation.
    match (location, is_24) {
        (Some(Location::MailLocation(_)), Some(true)) => f.add(
            Level::Error,
            format!(
                "Dovecot {version_text} has no mail_location: in the settings file use \
                 mail_driver, mail_path, mail_index_path and mailbox_list_index_prefix, as in \
                 dovecot.conf"
            ),
        ),
        (Some(Location::Dovecot24(_)), Some(false)) => f.add(
            Level::Error,
            format!(
                "Dovecot {version_text} has no mail_path: in the settings file use \
                 mail_location, as in dovecot.conf"
            ),
        ),
        (Some(Location::MailLocation(_)), _) => compare(
            doveconf,
            "mail_location",
            settings.mail_location.as_deref(),
            None,
            f,
        ),
        (Some(Location::Dovecot24(_)), _) => {
            if settings.mail_driver.is_some() {
                compare(
                    doveconf,
                    "mail_driver",
                    settings.mail_driver.as_deref(),
                    None,
                    f,
                );
            }
            compare(
                doveconf,
                "mail_path",
                settings.mail_path.as_deref(),
                None,
                f,
            );
            compare(
                doveconf,
                "mail_index_path",
                settings.mail_index_path.as_deref(),
                None,
                f,
            );
            compare(
                doveconf,
                "mailbox_list_index_prefix",
                settings.mailbox_list_index_prefix.as_deref(),
                Some(DEFAULT_PREFIX),
                f,
            );
        }
        (None, _) => {}
    }

    // List indexes at all, and whether Dovecot trusts them blindly.
    let yes = |name: &str| doveconf.value(name).map(|v| v.trim() == "yes");
    if let Ok(false) = yes("mailbox_list_index") {
        f.add(
            Level::Note,
            "mailbox_list_index = no: Dovecot keeps no list index, so there is nothing to drop",
        );
    }
    let very_dirty = yes("mailbox_list_index_very_dirty_syncs").unwrap_or(false);

    // The post-login services of imap and pop3.
    let protocols = match doveconf.value("protocols") {
        Ok(protocols) => protocols,
        Err(e) => {
            f.add(
                Level::Warning,
                format!("{e}: post-login services not looked at"),
            );
            return;
        }
    };
    let mut unwrapped = Vec::new();
    for protocol in PROTOCOLS {
        if !protocols.split_whitespace().any(|p| p == protocol) {
            continue;
        }
        let executable = match doveconf.value(&format!("service/{protocol}/executable")) {
            Ok(executable) => executable,
            Err(e) => {
                f.add(
                    Level::Warning,
                    format!("cannot tell how {protocol} logins run: {e}"),
                );
                continue;
            }
        };
        let mut found = false;
        for service in executable.split_whitespace().skip(1) {
            let command = doveconf
                .value(&format!("service/{service}/executable"))
                .unwrap_or_default();
            match postlogin_command(&command) {
                Some(Wrapper { with_d: true }) => {
                    found = true;
                    f.add(
                        Level::Ok,
                        format!("{protocol} logins run nfs-hostchange postlogin in service {service} (script-login -d)"),
                    );
                }
                Some(Wrapper { with_d: false }) => {
                    found = true;
                    f.add(
                        Level::Warning,
                        format!(
                            "service {service} runs script-login without -d: the wrapper runs \
                             as the service's user, not as the mail user, and acts as the mail \
                             user only when that is root and the userdb gives UID and GID; \
                             add -d ({command})"
                        ),
                    );
                }
                None => {}
            }
        }
        if !found {
            unwrapped.push(protocol);
        }
    }

    // A checkpassword chain is the other way to run it.
    let chain: Vec<&str> = dump
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("nfs-hostchange") && l.contains("postlogin"))
        .filter(|l| !l.starts_with("executable"))
        .collect();
    if !chain.is_empty() {
        f.add(
            Level::Note,
            format!(
                "nfs-hostchange also runs outside a post-login service: {}",
                chain.join("; ")
            ),
        );
    }
    for protocol in unwrapped {
        if !chain.is_empty() {
            f.add(
                Level::Note,
                format!("{protocol} logins run no post-login nfs-hostchange (the chain above may cover them)"),
            );
        } else if very_dirty {
            f.add(
                Level::Warning,
                format!(
                    "{protocol} logins do not run nfs-hostchange postlogin, and \
                     mailbox_list_index_very_dirty_syncs = yes: Dovecot trusts the list \
                     index, and LIST misses folders created on other backends"
                ),
            );
        } else {
            f.add(
                Level::Warning,
                format!(
                    "{protocol} logins do not run nfs-hostchange postlogin: their list index \
                     is never checked (service {protocol} {{ executable = {protocol} \
                     {protocol}-postlogin }}, see nfs-hostchange help postlogin)"
                ),
            );
        }
    }
    if !PROTOCOLS
        .iter()
        .any(|p| protocols.split_whitespace().any(|w| w == *p))
    {
        f.add(
            Level::Note,
            "neither imap nor pop3 is in protocols: no post-login service was looked at",
        );
    }
}

/// Compares one setting: ours (or `default` when unset) with doveconf's.
fn compare(
    doveconf: &Doveconf,
    name: &str,
    ours: Option<&[u8]>,
    default: Option<&str>,
    f: &mut Findings,
) {
    let theirs = match doveconf.value(name) {
        Ok(value) => value,
        Err(e) => {
            f.add(Level::Error, format!("{e}: {name} not compared"));
            return;
        }
    };
    let ours = ours.map_or_else(
        || default.unwrap_or_default().to_string(),
        |v| String::from_utf8_lossy(v).into_owned(),
    );
    if ours.trim() == theirs.trim() {
        f.add(Level::Ok, format!("{name} is the same in dovecot.conf"));
    } else {
        f.add(
            Level::Error,
            format!(
                "{name} differs from dovecot.conf:\n  dovecot.conf:  {theirs:?}\n  settings file: {ours:?}"
            ),
        );
    }
}

/// What a post-login service's executable does with nfs-hostchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wrapper {
    /// Whether script-login gets `-d`.
    with_d: bool,
}

/// Reads `script-login [-d] .../nfs-hostchange postlogin ...`; `None`
/// when the command does not run nfs-hostchange postlogin.
fn postlogin_command(command: &str) -> Option<Wrapper> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let name = |w: &str| Path::new(w).file_name().map(OsStr::to_os_string);
    let login = words
        .iter()
        .position(|w| name(w).as_deref() == Some(OsStr::new("script-login")))?;
    let wrapper = words
        .iter()
        .enumerate()
        .skip(login + 1)
        .position(|(i, w)| {
            name(w).as_deref() == Some(OsStr::new("nfs-hostchange"))
                && words.get(i + 1) == Some(&"postlogin")
        })?
        + login
        + 1;
    let with_d = words[login + 1..wrapper].contains(&"-d");
    Some(Wrapper { with_d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let os = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        let a = parse_args(&os(&["--config", "/a", "--dovecot-config=/b"]))
            .expect("ok")
            .expect("args");
        assert_eq!(a.config.as_deref(), Some(OsStr::new("/a")));
        assert_eq!(a.dovecot_config.as_deref(), Some(OsStr::new("/b")));
        assert_eq!(parse_args(&os(&["-h"])), Ok(None));
        assert!(parse_args(&os(&["--bogus"])).is_err());
        assert!(parse_args(&os(&["word"])).is_err());
        assert!(parse_args(&os(&["--config"])).is_err());
    }

    #[test]
    fn postlogin_commands() {
        let w = |with_d| Some(Wrapper { with_d });
        assert_eq!(
            postlogin_command("script-login -d /usr/local/bin/nfs-hostchange postlogin"),
            w(true)
        );
        assert_eq!(
            postlogin_command("script-login /usr/local/bin/nfs-hostchange postlogin --config /c"),
            w(false)
        );
        assert_eq!(
            postlogin_command("/usr/lib/dovecot/script-login -d nfs-hostchange postlogin"),
            w(true)
        );
        assert_eq!(postlogin_command("script-login -d /usr/bin/env"), None);
        assert_eq!(
            postlogin_command("script-login /x/nfs-hostchange show"),
            None
        );
        assert_eq!(postlogin_command(""), None);
    }

    #[test]
    fn versions() {
        assert_eq!(
            dovecot_version("# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf\n# x"),
            Some(vec![2, 3, 19, 1])
        );
        assert_eq!(
            dovecot_version("# 2.4.1-4 (7d8c0e5759): x"),
            Some(vec![2, 4, 1])
        );
        assert_eq!(dovecot_version("mail_location = x"), None);
    }

    #[test]
    fn report_text() {
        let mut f = Findings::default();
        f.add(Level::Ok, "fine");
        f.add(Level::Error, "bad\n  detail");
        let text = f.text();
        assert_eq!(
            text,
            "ok       fine\nerror    bad\n           detail\n1 error, 0 warnings\n"
        );
        assert_eq!(Findings::default().text(), "all well\n");
    }
}
