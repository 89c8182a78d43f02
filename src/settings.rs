//! The settings file (`key = value` lines, `#` comments) and the per-user
//! overrides that arrive from Dovecot's userdb as environment variables.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::log::LogTarget;

/// Where the settings are read from when neither `--config` nor
/// `NFS_HOSTCHANGE_CONFIG` names a file.
pub const DEFAULT_CONFIG: &str = "/etc/dovecot/nfs-hostchange.conf";

/// The largest settings file read; a larger one is a mistake.
const CONFIG_MAX_BYTES: u64 = 64 * 1024;

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
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{} line {}: {}",
                self.file.display(),
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
    let whole = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        message,
    };
    let text = match std::fs::File::open(path) {
        Ok(file) => {
            use std::io::Read;
            let mut text = Vec::new();
            file.take(CONFIG_MAX_BYTES + 1)
                .read_to_end(&mut text)
                .map_err(|e| whole(format!("cannot read: {e}")))?;
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

/// Parses the text of a settings file; `file` is only used in messages.
pub fn parse(text: &[u8], file: &Path) -> Loaded {
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
                    settings.mail_location_origin = format!("{} line {line}", file.display());
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
const KEYS: [&str; 5] = [
    "mail_location",
    "mail_uid",
    "nfs_hostchange_migration",
    "nfs_hostchange_hostname",
    "nfs_hostchange_log",
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
    match key {
        "mail_location" => {
            if value.is_empty() {
                return Err("mail_location is empty".into());
            }
            settings.mail_location = Some(value.as_bytes().to_vec());
        }
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
    /// `MAIL`: replaces mail_location, as it does in Dovecot.
    pub mail: Option<Vec<u8>>,
    /// `NFS_HOSTCHANGE_MIGRATION`: replaces the migration flag.
    pub migration: Option<Vec<u8>>,
}

impl UserOverrides {
    /// Reads `MAIL` and `NFS_HOSTCHANGE_MIGRATION`; empty values count as unset.
    pub fn from_env() -> UserOverrides {
        let get = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().to_vec())
        };
        UserOverrides {
            mail: get("MAIL"),
            migration: get("NFS_HOSTCHANGE_MIGRATION"),
        }
    }

    /// Applies the overrides. A migration value that is not a boolean is
    /// ignored and returned as a message for the log.
    pub fn apply(&self, settings: &mut Settings) -> Option<String> {
        if let Some(mail) = &self.mail {
            settings.mail_location = Some(mail.clone());
            settings.mail_location_origin = "MAIL from the userdb".to_string();
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
    fn missing_default_file_gives_defaults_but_explicit_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.conf");
        assert!(load(&path, false).is_ok());
        let e = load(&path, true).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }

    #[test]
    fn overrides_win() {
        let mut s = Settings::default();
        let o = UserOverrides {
            mail: Some(b"mdbox:~/m".to_vec()),
            migration: Some(b"yes".to_vec()),
        };
        assert_eq!(o.apply(&mut s), None);
        assert_eq!(s.mail_location.as_deref(), Some(&b"mdbox:~/m"[..]));
        assert!(s.migration);
        let bad = UserOverrides {
            mail: None,
            migration: Some(b"perhaps".to_vec()),
        };
        assert!(bad.apply(&mut s).is_some());
        assert!(s.migration);
    }
}
