//! The settings file (`key = value` lines, `#` comments) and the per-user
//! overrides that arrive from Dovecot's userdb as environment variables.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::log::{LogTarget, Shown};
use crate::mail_location::{Location, Settings24};

/// Where the settings are read from when neither `--config` nor
/// `NFS_HOSTCHANGE_CONFIG` names a file.
pub const DEFAULT_CONFIG: &str = "/etc/dovecot/nfs-hostchange.conf";

/// The largest settings file read; a larger one is a mistake.
const CONFIG_MAX_BYTES: u64 = 64 * 1024;

/// The first read's buffer: a whole settings file of ordinary size in one
/// read(), then one more that sees its end.
const CONFIG_FIRST_READ: usize = 8 * 1024;

/// The settings of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Dovecot's `mail_location`, as written in dovecot.conf.
    pub mail_location: Option<Vec<u8>>,
    /// Where mail_location came from, for messages: `FILE line N`, or
    /// `MAIL from the userdb`.
    pub mail_location_origin: String,
    /// Whether the migration step runs (`nfs_hostchange_migration`).
    pub migration: bool,
    /// This backend's name in INDEX/.lasthost; `None` means the host name.
    pub hostname: Option<String>,
    /// Where log lines go.
    pub log: LogTarget,
    /// Dovecot's `mail_uid` (a user name or number), when set: the cleaner
    /// accepts a LISTINDEX root owned by this user as well as by root.
    pub mail_uid: Option<String>,
    /// Dovecot 2.4's `mail_driver` (`maildir`, `mdbox`...). Not needed for
    /// any path; `check` compares it with dovecot.conf.
    pub mail_driver: Option<Vec<u8>>,
    /// Dovecot 2.4's `mail_path` (in 2.4 syntax), an alternative to
    /// mail_location.
    pub mail_path: Option<Vec<u8>>,
    /// Dovecot 2.4's `mail_index_path` (INDEX).
    pub mail_index_path: Option<Vec<u8>>,
    /// Dovecot 2.4's `mailbox_list_index_prefix` (LISTINDEX and the file name).
    pub mailbox_list_index_prefix: Option<Vec<u8>>,
    /// Where the 2.4 mail settings came from, for messages: `FILE line N`
    /// (of the first one), or e.g. `MAIL_PATH from the userdb`.
    pub mail_settings_origin: String,
    /// Dovecot 2.4's `dovecot_config_version`, when set: a check that the
    /// settings are meant for 2.4 (mail_location is then an error).
    pub dovecot_config_version: Option<String>,
}

impl Settings {
    /// Where mail and indexes are: mail_location (Dovecot 2.3 syntax) when
    /// it is set, else the Dovecot 2.4 settings (2.4 syntax) when any of
    /// them is, else nothing.
    pub fn location(&self) -> Option<Location<'_>> {
        if let Some(location) = &self.mail_location {
            return Some(Location::MailLocation(location));
        }
        if self.mail_driver.is_none()
            && self.mail_path.is_none()
            && self.mail_index_path.is_none()
            && self.mailbox_list_index_prefix.is_none()
        {
            return None;
        }
        Some(Location::Dovecot24(Settings24 {
            mail_path: self.mail_path.as_deref(),
            mail_index_path: self.mail_index_path.as_deref(),
            mailbox_list_index_prefix: self.mailbox_list_index_prefix.as_deref(),
        }))
    }

    /// Where the settings that [`Settings::location`] uses came from.
    pub fn location_origin(&self) -> &str {
        if self.mail_location.is_some() {
            &self.mail_location_origin
        } else {
            &self.mail_settings_origin
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mail_location: None,
            mail_location_origin: String::new(),
            migration: false,
            hostname: None,
            log: LogTarget::Syslog,
            mail_uid: None,
            mail_driver: None,
            mail_path: None,
            mail_index_path: None,
            mailbox_list_index_prefix: None,
            mail_settings_origin: String::new(),
            dovecot_config_version: None,
        }
    }
}

/// A problem in the settings file, with the file and line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The settings file.
    pub file: PathBuf,
    /// The line number (1-based), or 0 when the problem is the whole file.
    pub line: usize,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.shown(), self.message)
        } else {
            write!(
                f,
                "{} line {}: {}",
                self.file.shown(),
                self.line,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// What reading the settings gave: the settings, errors and warnings.
///
/// Parsing goes on past a bad line so that the lines that are fine (the log
/// target above all) still take effect; the check itself must not run when
/// `errors` is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The settings, from every line that was fine.
    pub settings: Settings,
    /// Lines that are wrong: the settings cannot be trusted.
    pub errors: Vec<ConfigError>,
    /// Lines that were accepted but look wrong (unknown keys).
    pub warnings: Vec<ConfigError>,
}

/// Picks the settings file: `--config`, else `NFS_HOSTCHANGE_CONFIG`, else
/// the default. The flag says whether the file was named explicitly.
pub fn config_path(option: Option<&OsStr>) -> (PathBuf, bool) {
    if let Some(path) = option {
        return (PathBuf::from(path), true);
    }
    match std::env::var_os("NFS_HOSTCHANGE_CONFIG") {
        Some(path) if !path.is_empty() => (PathBuf::from(path), true),
        _ => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// Reads the settings file. A missing default file gives the defaults (the
/// userdb may still supply `MAIL`); a missing file that was named
/// explicitly is an error.
pub fn load(path: &Path, explicit: bool) -> Result<Loaded, ConfigError> {
    load_opened(path, explicit, open_config(path, 0), &mut Vec::new())
}

/// Opens the settings file for reading, with `O_NONBLOCK` so that a FIFO
/// in its place cannot hang a login (it then reads as empty, and an empty
/// file is checked for being a regular one).
fn open_config(path: &Path, flags: libc::c_int) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK)
        .open(path)
}

/// [`load`], leaving the file's descriptor in `keep` instead of closing
/// it: the login leaves it to its exec (it is close-on-exec), which saves
/// a close().
pub fn load_keeping(
    path: &Path,
    explicit: bool,
    keep: &mut Vec<std::os::fd::OwnedFd>,
) -> Result<Loaded, ConfigError> {
    load_opened(path, explicit, open_config(path, 0), keep)
}

/// [`load`] for the read-only tools (`show`, `check`): the file is read
/// through an `O_NOATIME` descriptor where the kernel allows it (to root
/// and to the file's owner), so that its atime stays as it was. The flag
/// says whether that was allowed.
pub fn load_keeping_atime(path: &Path, explicit: bool) -> (Result<Loaded, ConfigError>, bool) {
    let open = |flags| open_config(path, flags);
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            (load_opened(path, explicit, open(0), &mut Vec::new()), false)
        }
        opened => (load_opened(path, explicit, opened, &mut Vec::new()), true),
    }
}

/// Reads and parses a settings file that was opened (or failed to open).
/// The file's descriptor ends up in `keep`.
fn load_opened(
    path: &Path,
    explicit: bool,
    opened: std::io::Result<std::fs::File>,
    keep: &mut Vec<std::os::fd::OwnedFd>,
) -> Result<Loaded, ConfigError> {
    let whole = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        message,
    };
    let text = match opened {
        Ok(file) => {
            let text = read_capped(&file).map_err(|e| whole(format!("cannot read: {e}")))?;
            if text.is_empty() && !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(whole("not a regular file".to_string()));
            }
            keep.push(file.into());
            if text.len() as u64 > CONFIG_MAX_BYTES {
                return Err(whole(format!("larger than {CONFIG_MAX_BYTES} bytes")));
            }
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Loaded {
                settings: Settings::default(),
                errors: Vec::new(),
                warnings: Vec::new(),
            })
        }
        Err(e) => return Err(whole(format!("cannot open: {e}"))),
    };
    Ok(parse(&text, path))
}

/// Reads `file` to its end, or to one byte past [`CONFIG_MAX_BYTES`]: a
/// file of up to [`CONFIG_FIRST_READ`] bytes takes one read() for its
/// content and one that returns 0 (std's `read_to_end` probes with small
/// reads first, five calls for a 300-byte file).
fn read_capped(mut file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let cap = CONFIG_MAX_BYTES as usize + 1;
    let mut text = vec![0u8; CONFIG_FIRST_READ.min(cap)];
    let mut len = 0;
    loop {
        if len == text.len() {
            if len == cap {
                break;
            }
            text.resize((len * 2).min(cap), 0);
        }
        match file.read(&mut text[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    text.truncate(len);
    Ok(text)
}

/// Parses the text of a settings file; `file` is only used in messages.
pub fn parse(text: &[u8], file: &Path) -> Loaded {
    // A byte order mark some editors write is not part of the first key.
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut settings = Settings::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: Vec<(&'static str, usize)> = Vec::new();
    let error = |line: usize, message: String| ConfigError {
        file: file.to_path_buf(),
        line,
        message,
    };

    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        match parse_line(raw, &mut settings, &seen) {
            Ok(Line::Blank) => {}
            Ok(Line::Set(key)) => {
                if key == "mail_location" {
                    settings.mail_location_origin = format!("{} line {line}", file.shown());
                } else if KEYS_24.contains(&key) && settings.mail_settings_origin.is_empty() {
                    settings.mail_settings_origin = format!("{} line {line}", file.shown());
                }
                seen.push((key, line));
            }
            Ok(Line::Unknown(key)) => {
                warnings.push(error(line, format!("unknown setting {key:?} ignored")))
            }
            Err(message) => errors.push(error(line, message)),
        }
    }
    Loaded {
        settings,
        errors,
        warnings,
    }
}

/// What one line of the settings file was.
enum Line {
    Blank,
    Set(&'static str),
    Unknown(String),
}

/// The keys this program knows.
const KEYS: [&str; 10] = [
    "mail_location",
    "mail_uid",
    "nfs_hostchange_migration",
    "nfs_hostchange_hostname",
    "nfs_hostchange_log",
    "mail_driver",
    "mail_path",
    "mail_index_path",
    "mailbox_list_index_prefix",
    "dovecot_config_version",
];

/// Dovecot 2.4's settings that replace mail_location; their values are in
/// 2.4 syntax.
const KEYS_24: [&str; 4] = [
    "mail_driver",
    "mail_path",
    "mail_index_path",
    "mailbox_list_index_prefix",
];

/// Parses one line into `settings`; `seen` holds the keys set so far, with
/// their line numbers.
fn parse_line(
    raw: &[u8],
    settings: &mut Settings,
    seen: &[(&'static str, usize)],
) -> Result<Line, String> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_string())?;
    if raw.chars().any(|c| c.is_control() && c != '\t') {
        return Err("contains a control character (a NUL byte?)".to_string());
    }
    let content = raw.trim();
    if content.is_empty() || content.starts_with('#') {
        return Ok(Line::Blank);
    }
    let Some((key, value)) = content.split_once('=') else {
        return Err(format!("expected `key = value`, found {content:?}"));
    };
    let key = key.trim();
    let value = unquote(value.trim());
    let Some(key) = KEYS.iter().copied().find(|k| *k == key) else {
        return Ok(Line::Unknown(key.to_string()));
    };
    if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
        return Err(format!("{key} is set twice (first on line {first})"));
    }
    check_generation(key, value, seen)?;
    let template = || (!value.is_empty()).then(|| value.as_bytes().to_vec());
    match key {
        "mail_location" => {
            if value.is_empty() {
                return Err("mail_location is empty".into());
            }
            settings.mail_location = Some(value.as_bytes().to_vec());
        }
        "mail_driver" => settings.mail_driver = template(),
        "mail_path" => settings.mail_path = template(),
        "mail_index_path" => settings.mail_index_path = template(),
        "mailbox_list_index_prefix" => settings.mailbox_list_index_prefix = template(),
        "dovecot_config_version" => settings.dovecot_config_version = Some(value.to_string()),
        "nfs_hostchange_migration" => {
            settings.migration = parse_bool(value)
                .ok_or_else(|| format!("{key} must be yes or no, not {value:?}"))?;
        }
        "mail_uid" => {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "mail_uid must be a user name or number, not {value:?}"
                ));
            }
            settings.mail_uid = Some(value.to_string());
        }
        "nfs_hostchange_hostname" => {
            check_hostname(value)?;
            settings.hostname = Some(value.to_string());
        }
        _ => {
            settings.log = LogTarget::parse(value)
                .ok_or_else(|| format!("{key} must be syslog, dovecot or stderr, not {value:?}"))?;
        }
    }
    Ok(Line::Set(key))
}

/// Refuses a mix of Dovecot 2.3's mail_location with Dovecot 2.4's
/// settings, which no Dovecot reads together, and checks
/// `dovecot_config_version`.
fn check_generation(key: &str, value: &str, seen: &[(&'static str, usize)]) -> Result<(), String> {
    let line_of = |wanted: &[&str]| {
        seen.iter()
            .find(|(k, _)| wanted.contains(k))
            .map(|(k, line)| (*k, *line))
    };
    if key == "dovecot_config_version" {
        let version: Vec<u32> = value
            .split('.')
            .map_while(|part| part.parse().ok())
            .collect();
        if version.len() < 2 || version.as_slice() < [2, 4].as_slice() {
            return Err(format!(
                "dovecot_config_version must be 2.4.0 or later, not {value:?} \
                 (Dovecot 2.3 has no such setting: leave it out)"
            ));
        }
        if let Some((_, line)) = line_of(&["mail_location"]) {
            return Err(format!(
                "dovecot_config_version {value} is Dovecot 2.4's, which has no mail_location \
                 (line {line}): use mail_driver, mail_path, mail_index_path and \
                 mailbox_list_index_prefix"
            ));
        }
    }
    if key == "mail_location" {
        if let Some((other, line)) = line_of(&KEYS_24) {
            return Err(format!(
                "mail_location is Dovecot 2.3's and {other} (line {line}) Dovecot 2.4's: \
                 set mail_location or the 2.4 settings, not both"
            ));
        }
        if let Some((_, line)) = line_of(&["dovecot_config_version"]) {
            return Err(format!(
                "Dovecot 2.4 (dovecot_config_version, line {line}) has no mail_location: \
                 use mail_driver, mail_path, mail_index_path and mailbox_list_index_prefix"
            ));
        }
    }
    if KEYS_24.contains(&key) {
        if let Some((_, line)) = line_of(&["mail_location"]) {
            return Err(format!(
                "{key} is Dovecot 2.4's and mail_location (line {line}) Dovecot 2.3's: \
                 set mail_location or the 2.4 settings, not both"
            ));
        }
    }
    Ok(())
}

/// Dovecot's boolean words. `None` for anything else.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Some(true),
        "no" | "n" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Checks a value for `nfs_hostchange_hostname`: it is written into a
/// one-line file that other backends read, so it must be one printable word.
pub fn check_hostname(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 255 {
        return Err("nfs_hostchange_hostname must be 1 to 255 characters".into());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "nfs_hostchange_hostname must be printable ASCII without spaces, not {value:?}"
        ));
    }
    Ok(())
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The per-user overrides from the userdb, read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOverrides {
    /// `MAIL`: replaces mail_location, as it does in Dovecot 2.3.
    pub mail: Option<Vec<u8>>,
    /// `NFS_HOSTCHANGE_MIGRATION`: replaces the migration flag.
    pub migration: Option<Vec<u8>>,
    /// `MAIL_PATH`: replaces mail_path, as the userdb field does in 2.4.
    pub mail_path: Option<Vec<u8>>,
    /// `MAIL_INDEX_PATH`: replaces mail_index_path.
    pub mail_index_path: Option<Vec<u8>>,
    /// `MAILBOX_LIST_INDEX_PREFIX`: replaces mailbox_list_index_prefix.
    pub mailbox_list_index_prefix: Option<Vec<u8>>,
}

impl UserOverrides {
    /// Reads `MAIL`, `NFS_HOSTCHANGE_MIGRATION` and Dovecot 2.4's
    /// `MAIL_PATH`, `MAIL_INDEX_PATH` and `MAILBOX_LIST_INDEX_PREFIX`;
    /// empty values count as unset.
    pub fn from_env() -> UserOverrides {
        let get = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().to_vec())
        };
        UserOverrides {
            mail: get("MAIL"),
            migration: get("NFS_HOSTCHANGE_MIGRATION"),
            mail_path: get("MAIL_PATH"),
            mail_index_path: get("MAIL_INDEX_PATH"),
            mailbox_list_index_prefix: get("MAILBOX_LIST_INDEX_PREFIX"),
        }
    }

    /// Applies the overrides. A migration value that is not a boolean is
    /// ignored and returned as a message for the log. (`MAIL` makes the
    /// location a 2.3 mail_location, which wins over 2.4 settings; see
    /// [`Settings::location`].)
    pub fn apply(&self, settings: &mut Settings) -> Option<String> {
        if let Some(mail) = &self.mail {
            settings.mail_location = Some(mail.clone());
            settings.mail_location_origin = "MAIL from the userdb".to_string();
        }
        let fields_24 = [
            ("MAIL_PATH", &self.mail_path, &mut settings.mail_path),
            (
                "MAIL_INDEX_PATH",
                &self.mail_index_path,
                &mut settings.mail_index_path,
            ),
            (
                "MAILBOX_LIST_INDEX_PREFIX",
                &self.mailbox_list_index_prefix,
                &mut settings.mailbox_list_index_prefix,
            ),
        ];
        let mut origin = None;
        for (name, value, setting) in fields_24 {
            if let Some(value) = value {
                *setting = Some(value.clone());
                origin.get_or_insert(name);
            }
        }
        if let Some(name) = origin {
            settings.mail_settings_origin = format!("{name} from the userdb");
        }
        let value = self.migration.as_ref()?;
        match std::str::from_utf8(value).ok().and_then(parse_bool) {
            Some(flag) => {
                settings.migration = flag;
                None
            }
            None => Some(format!(
                "NFS_HOSTCHANGE_MIGRATION from the userdb must be yes or no, not {:?}; using {}",
                String::from_utf8_lossy(value),
                if settings.migration { "yes" } else { "no" }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Loaded, ConfigError> {
        let loaded = parse(text.as_bytes(), Path::new("/etc/x.conf"));
        match loaded.errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(loaded),
        }
    }

    #[test]
    fn full_file() {
        let loaded = p("# comment\n\nmail_location = maildir:~/Maildir:LISTINDEX=/dev/shm/l/%u/dovecot.list.index\n\
             nfs_hostchange_migration = yes\nnfs_hostchange_hostname = backend-a\n\
             nfs_hostchange_log = dovecot\n")
        .expect("valid");
        let s = loaded.settings;
        assert_eq!(
            s.mail_location.as_deref(),
            Some(&b"maildir:~/Maildir:LISTINDEX=/dev/shm/l/%u/dovecot.list.index"[..])
        );
        assert!(s.migration);
        assert_eq!(s.mail_location_origin, "/etc/x.conf line 3");
        assert_eq!(s.hostname.as_deref(), Some("backend-a"));
        assert_eq!(s.log, LogTarget::Dovecot);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn defaults() {
        let s = p("").expect("empty is fine").settings;
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn value_may_contain_equals_and_quotes() {
        let s = p("mail_location = \"maildir:~/M:LISTINDEX=/a/%u/x\"\n")
            .expect("valid")
            .settings;
        assert_eq!(
            s.mail_location.as_deref(),
            Some(&b"maildir:~/M:LISTINDEX=/a/%u/x"[..])
        );
    }

    #[test]
    fn unknown_key_is_a_warning_with_line() {
        let loaded = p("\nmail_locaton = x\n").expect("warning only");
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(
            loaded.warnings[0].to_string(),
            "/etc/x.conf line 2: unknown setting \"mail_locaton\" ignored"
        );
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = p("nfs_hostchange_log = syslog\nnfs_hostchange_log = stderr\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("set twice (first on line 1)"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        for (text, line) in [
            ("nfs_hostchange_migration = maybe", 1),
            ("\nnfs_hostchange_log = file", 2),
            ("just words", 1),
            ("nfs_hostchange_hostname = two words", 1),
            ("mail_location =", 1),
        ] {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn good_lines_still_count_after_a_bad_one() {
        let loaded = parse(
            b"nfs_hostchange_migration = maybe\nnfs_hostchange_log = dovecot\n",
            Path::new("/x"),
        );
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(loaded.settings.log, LogTarget::Dovecot);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let loaded = parse(
            b"\xef\xbb\xbfnfs_hostchange_log = stderr\n",
            Path::new("/x"),
        );
        assert!(loaded.errors.is_empty() && loaded.warnings.is_empty());
        assert_eq!(loaded.settings.log, LogTarget::Stderr);
    }

    #[test]
    fn a_fifo_is_not_a_settings_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo.conf");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // Without O_NONBLOCK this open would wait for a writer forever.
        let e = load(&path, true).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_explicit_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.conf");
        assert!(load(&path, false).is_ok());
        let e = load(&path, true).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }

    #[test]
    fn dovecot_24_settings() {
        let loaded = p("dovecot_config_version = 2.4.1\nmail_driver = maildir\n\
             mail_path = ~/Maildir\nmail_index_path =\n\
             mailbox_list_index_prefix = /dev/shm/l/%{user}/dovecot.list.index\n")
        .expect("valid");
        let s = loaded.settings;
        assert_eq!(s.mail_driver.as_deref(), Some(&b"maildir"[..]));
        assert_eq!(s.mail_index_path, None, "empty means unset");
        assert_eq!(s.mail_settings_origin, "/etc/x.conf line 2");
        assert_eq!(s.location_origin(), "/etc/x.conf line 2");
        assert_eq!(s.dovecot_config_version.as_deref(), Some("2.4.1"));
        match s.location() {
            Some(Location::Dovecot24(set)) => {
                assert_eq!(set.mail_path, Some(&b"~/Maildir"[..]));
                assert_eq!(
                    set.mailbox_list_index_prefix,
                    Some(&b"/dev/shm/l/%{user}/dovecot.list.index"[..])
                );
            }
            other => panic!("not 2.4 settings: {other:?}"),
        }
    }

    #[test]
    fn location_is_mail_location_or_24_or_nothing() {
        assert_eq!(Settings::default().location(), None);
        let s = p("mail_location = maildir:~/M").expect("valid").settings;
        assert_eq!(s.location(), Some(Location::MailLocation(b"maildir:~/M")));
        let s = p("mail_driver = maildir").expect("valid").settings;
        assert!(matches!(s.location(), Some(Location::Dovecot24(_))));
    }

    #[test]
    fn mail_location_and_24_settings_do_not_mix() {
        for (text, line, needle) in [
            (
                "mail_location = maildir:~/M\nmail_path = ~/M",
                2,
                "not both",
            ),
            ("mail_path = /m\nmail_location = x", 2, "not both"),
            (
                "dovecot_config_version = 2.4.0\nmail_location = x",
                2,
                "no mail_location",
            ),
            (
                "mail_location = x\ndovecot_config_version = 2.4.0",
                2,
                "no mail_location",
            ),
            ("dovecot_config_version = 2.3.19", 1, "2.4.0 or later"),
            ("dovecot_config_version = latest", 1, "2.4.0 or later"),
        ] {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        assert!(p("dovecot_config_version = 2.5.0\nmail_path = /m").is_ok());
    }

    #[test]
    fn overrides_of_24_settings() {
        let mut s = p("mail_path = /m/%{user}\nmailbox_list_index_prefix = /l/%{user}/x")
            .expect("valid")
            .settings;
        let o = UserOverrides {
            mail_index_path: Some(b"/i/%{user}".to_vec()),
            mailbox_list_index_prefix: Some(b"/l2/%{user}/x".to_vec()),
            ..UserOverrides::default()
        };
        assert_eq!(o.apply(&mut s), None);
        assert_eq!(s.mail_path.as_deref(), Some(&b"/m/%{user}"[..]));
        assert_eq!(s.mail_index_path.as_deref(), Some(&b"/i/%{user}"[..]));
        assert_eq!(
            s.mailbox_list_index_prefix.as_deref(),
            Some(&b"/l2/%{user}/x"[..])
        );
        assert_eq!(s.location_origin(), "MAIL_INDEX_PATH from the userdb");
        // MAIL makes it a 2.3 mail_location, which wins.
        let mail = UserOverrides {
            mail: Some(b"maildir:~/M".to_vec()),
            ..UserOverrides::default()
        };
        mail.apply(&mut s);
        assert_eq!(s.location(), Some(Location::MailLocation(b"maildir:~/M")));
        assert_eq!(s.location_origin(), "MAIL from the userdb");
    }

    #[test]
    fn overrides_win() {
        let mut s = Settings::default();
        let o = UserOverrides {
            mail: Some(b"mdbox:~/m".to_vec()),
            migration: Some(b"yes".to_vec()),
            ..UserOverrides::default()
        };
        assert_eq!(o.apply(&mut s), None);
        assert_eq!(s.mail_location.as_deref(), Some(&b"mdbox:~/m"[..]));
        assert!(s.migration);
        let bad = UserOverrides {
            mail: None,
            migration: Some(b"perhaps".to_vec()),
            ..UserOverrides::default()
        };
        assert!(bad.apply(&mut s).is_some());
        assert!(s.migration);
    }
}
