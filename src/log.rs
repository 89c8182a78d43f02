//! Logging to syslog (facility mail), to Dovecot's log process through its
//! internal protocol on stderr, or as plain lines on stderr.
//!
//! Nothing here ever writes to stdout: in the post-login chain, stdout is the
//! IMAP client's socket.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::sync::Once;

/// Where log lines go (`nfs_hostchange_log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// syslog(3), facility mail, ident `nfs-hostchange`.
    Syslog,
    /// Dovecot's internal log protocol on stderr: `\x01<level><pid> text\n`,
    /// which lands in Dovecot's own log at the right level.
    Dovecot,
    /// Plain lines on stderr (under Dovecot they are logged as errors).
    Stderr,
    /// syslog and plain stderr lines both: where lines go before the
    /// settings say (a settings file that cannot be read must still be
    /// seen in Dovecot's log, which is stderr in every deployment).
    Early,
}

impl LogTarget {
    /// Parses a setting value: `syslog`, `dovecot` or `stderr`.
    pub fn parse(value: &str) -> Option<LogTarget> {
        match value {
            "syslog" => Some(LogTarget::Syslog),
            "dovecot" => Some(LogTarget::Dovecot),
            "stderr" => Some(LogTarget::Stderr),
            _ => None,
        }
    }
}

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something happened that an operator may want to see (an index dropped).
    Info,
    /// An odd state that was recovered from.
    Warning,
    /// The check could not run as it should.
    Error,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }

    /// The level byte of Dovecot's internal log protocol.
    fn dovecot_byte(self) -> u8 {
        match self {
            Level::Info => 0x02,
            Level::Warning => 0x03,
            Level::Error => 0x04,
        }
    }

    fn syslog_priority(self) -> libc::c_int {
        match self {
            Level::Info => libc::LOG_INFO,
            Level::Warning => libc::LOG_WARNING,
            Level::Error => libc::LOG_ERR,
        }
    }
}

/// Writes log lines that all name the user they are about.
#[derive(Debug)]
pub struct Logger {
    target: LogTarget,
    /// The user as it appears in every line, already made printable.
    user: Option<String>,
    /// False when descriptor 2 is not open: lines then go to syslog, so
    /// that they cannot land in a file that happens to reuse descriptor 2.
    stderr_open: bool,
}

/// The longest user name printed in a log line; longer names are cut.
const LOG_USER_MAX: usize = 100;

/// The longest message text in a log line, in characters: with the prefix
/// a line stays well under PIPE_BUF (4096 bytes), so a write to Dovecot's
/// shared log pipe stays atomic.
const LOG_TEXT_MAX: usize = 900;

impl Logger {
    /// A logger for `target`. Checks once whether stderr is open.
    pub fn new(target: LogTarget) -> Logger {
        // SAFETY: F_GETFD only reads the descriptor flags of fd 2; it has no
        // memory arguments and fails harmlessly with EBADF when fd 2 is closed.
        let stderr_open = unsafe { libc::fcntl(2, libc::F_GETFD) } != -1;
        Logger {
            target,
            user: None,
            stderr_open,
        }
    }

    /// Changes where lines go (once the settings are read).
    pub fn set_target(&mut self, target: LogTarget) {
        self.target = target;
    }

    /// Names the user in every following line.
    pub fn set_user(&mut self, user: &[u8]) {
        self.user = Some(printable(user, LOG_USER_MAX));
    }

    /// Logs at info level.
    pub fn info(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Info, args);
    }

    /// Logs at warning level.
    pub fn warning(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Warning, args);
    }

    /// Logs at error level.
    pub fn error(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Error, args);
    }

    /// Writes one line at `level`. Failures to log are ignored: logging
    /// must never stop a login.
    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        let text = printable(fmt::format(args).as_bytes(), LOG_TEXT_MAX);
        let who = match &self.user {
            Some(user) => format!("nfs-hostchange({user})"),
            None => "nfs-hostchange".to_string(),
        };
        let target = if self.stderr_open {
            self.target
        } else {
            LogTarget::Syslog
        };
        match target {
            LogTarget::Syslog => self.syslog(level, &text),
            LogTarget::Early => {
                self.syslog(level, &text);
                let line = format!("{who}: {}: {text}\n", level.word());
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            LogTarget::Dovecot => {
                let line = format!(
                    "\x01{}{} {who}: {text}\n",
                    level.dovecot_byte() as char,
                    std::process::id()
                );
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            LogTarget::Stderr => {
                let line = format!("{who}: {}: {text}\n", level.word());
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

impl Logger {
    fn syslog(&self, level: Level, text: &str) {
        match &self.user {
            Some(user) => syslog(level, &format!("{user}: {text}")),
            None => syslog(level, text),
        }
    }
}

/// The longest path shown in a message, in characters: long enough for any
/// real path, short enough that the reason after it survives the cut of
/// the whole line at [`LOG_TEXT_MAX`].
const PATH_SHOWN_MAX: usize = 400;

/// Shows a path in a message the way [`printable`] shows bytes: invalid
/// UTF-8 as `\xNN`, not as U+FFFD, so that two different byte names stay
/// apart in the log. Very long paths are cut.
pub trait Shown {
    /// The path, printable.
    fn shown(&self) -> String;
}

impl Shown for std::path::Path {
    fn shown(&self) -> String {
        use std::os::unix::ffi::OsStrExt;
        printable(self.as_os_str().as_bytes(), PATH_SHOWN_MAX)
    }
}

/// Makes bytes safe for one log line: invalid UTF-8 and control characters
/// become `\xNN`, and the text is cut after `max` characters.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if out.chars().count() > max {
        let cut: String = out.chars().take(max).collect();
        return cut + "...";
    }
    out
}

fn syslog(level: Level, text: &str) {
    static OPEN: Once = Once::new();
    OPEN.call_once(|| {
        // SAFETY: the ident is a 'static C string that outlives every later
        // syslog call, as openlog(3) requires; the flags are plain integers.
        unsafe { libc::openlog(c"nfs-hostchange".as_ptr(), libc::LOG_PID, libc::LOG_MAIL) };
    });
    // `printable` removed control characters, so no NUL is left.
    let Ok(message) = CString::new(text) else {
        return;
    };
    // SAFETY: both pointers are valid NUL-terminated strings for the whole
    // call, and the format string "%s" consumes exactly the one argument.
    unsafe {
        libc::syslog(
            level.syslog_priority() | libc::LOG_MAIL,
            c"%s".as_ptr(),
            message.as_ptr(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_invalid_bytes() {
        assert_eq!(printable(b"a\nb\tc", 100), "a\\x0ab\\x09c");
        assert_eq!(printable(b"x\xffy", 100), "x\\xffy");
        assert_eq!(printable("caf\u{e9}".as_bytes(), 100), "caf\u{e9}");
    }

    #[test]
    fn printable_cuts_long_text() {
        assert_eq!(printable(b"abcdef", 3), "abc...");
    }

    #[test]
    fn log_target_names() {
        assert_eq!(LogTarget::parse("dovecot"), Some(LogTarget::Dovecot));
        assert_eq!(LogTarget::parse("syslog"), Some(LogTarget::Syslog));
        assert_eq!(LogTarget::parse("stderr"), Some(LogTarget::Stderr));
        assert_eq!(LogTarget::parse("file"), None);
    }
}
