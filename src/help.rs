//! The help text of every subcommand, and the man page built from it: one
//! source for `nfs-hostchange SUBCOMMAND --help`, `nfs-hostchange help
//! SUBCOMMAND` and `man/nfs-hostchange.1` (`nfs-hostchange help --man`
//! writes it; a test checks that the file in the repository is that output).
//!
//! Text is kept as plain paragraphs wrapped at 76 columns. A paragraph whose
//! lines all start with four spaces is shown as it is (a literal block).

use std::fmt::Write as _;

/// One subcommand's help.
#[derive(Debug)]
pub struct Page {
    /// The subcommand, e.g. `show`.
    pub name: &'static str,
    /// Usage lines, each after `nfs-hostchange `.
    pub synopsis: &'static [&'static str],
    /// Paragraphs separated by blank lines.
    pub description: &'static str,
    /// Options: the option as written, and what it does.
    pub options: &'static [(&'static str, &'static str)],
    /// Examples: what it shows, and the command (or configuration) lines.
    pub examples: &'static [(&'static str, &'static str)],
    /// Exit statuses and what they mean.
    pub exit: &'static [(&'static str, &'static str)],
}

/// `postlogin`.
pub const POSTLOGIN: Page = Page {
    name: "postlogin",
    synopsis: &["postlogin [--config FILE] [--] COMMAND [ARGS...]"],
    description: "\
Check, for the user Dovecot names in USER, whether another backend served
the user since this one did; if so, drop the user's local mailbox list
index (the LISTINDEX directory's dovecot.list.index* files). Then exec
COMMAND with ARGS, the environment and every open descriptor unchanged.

It runs as a Dovecot post-login script (script-login -d nfs-hostchange
postlogin) or in a checkpassword chain. Nothing is written to stdout, which
is the client's connection; messages go where nfs_hostchange_log says. No
failure stops the login: bad settings, a refused user name or an
unreadable INDEX are logged, the list index is dropped when in doubt, and
COMMAND runs all the same.",
    options: &[
        (
            "--config FILE",
            "The settings file (default: $NFS_HOSTCHANGE_CONFIG, else\n\
             /etc/dovecot/nfs-hostchange.conf).",
        ),
        ("--", "End of options: the next word starts COMMAND."),
        ("-h, --help", "Show this help."),
    ],
    examples: &[
        (
            "The post-login service in dovecot.conf (with Dovecot 2.3 and 2.4):",
            "service imap {\n  executable = imap imap-postlogin\n}\n\
             service imap-postlogin {\n\
             \x20 executable = script-login -d /usr/local/bin/nfs-hostchange postlogin\n\
             \x20 unix_listener imap-postlogin {\n  }\n}",
        ),
        (
            "In a checkpassword chain, before the reply program Dovecot appends:",
            "passdb {\n  driver = checkpassword\n\
             \x20 args = /usr/local/bin/real-checkpassword /usr/local/bin/nfs-hostchange postlogin\n}",
        ),
    ],
    exit: &[
        ("(none)", "On success COMMAND replaces the process."),
        ("64", "Bad usage: no COMMAND."),
        ("126", "COMMAND exists but could not be executed."),
        ("127", "COMMAND was not found."),
    ],
};

/// `usercache`.
pub const USERCACHE: Page = Page {
    name: "usercache",
    synopsis: &[
        "usercache clean [--min-age AGE] [--config FILE] DIR",
        "usercache clean AGE DIR",
        "usercache sweep [--min-age AGE] [--dry-run] [--config FILE] [ROOT]",
    ],
    description: "\
Forget users who moved to other backends, so that the LISTINDEX root does
not fill up. A user is aged by the mtime of the local record
(LISTINDEX/.lasthost), which only logins set.

clean removes one user's LISTINDEX directory DIR under the user's lock, and
only if no login happened for AGE (without AGE, whatever the age). A user
whose lock is held is busy: skipped, and said so.

sweep finds every user directory under the LISTINDEX root (ROOT, by default
the one the settings give) and cleans those without a login for AGE (by
default 7 days). It follows no symlink, stays on one file system, changes
no timestamp of the users it keeps, and prints one summary line.",
    options: &[
        (
            "--min-age AGE",
            "Dovecot's interval syntax: a number and a unit, any prefix of\n\
             secs, mins, hours, days or weeks (30m, 12 hours, 7d, 2 weeks);\n\
             a bare number only when it is 0.",
        ),
        ("--dry-run", "List what would go, change nothing."),
        ("--config FILE", "The settings file, as for postlogin."),
        ("-h, --help", "Show this help."),
    ],
    examples: &[
        (
            "From a daily timer, as root:",
            "nfs-hostchange usercache sweep --min-age 7d",
        ),
        (
            "One user, whatever the age:",
            "nfs-hostchange usercache clean /dev/shm/dovecot-listindex/ca/bob",
        ),
    ],
    exit: &[
        ("0", "All well (busy and young users included)."),
        ("1", "Some user or directory could not be handled."),
        (
            "2",
            "Bad usage, bad settings, or a ROOT or DIR that is not safe\n\
             to work on. Nothing was touched.",
        ),
    ],
};

/// `show`.
pub const SHOW: Page = Page {
    name: "show",
    synopsis: &["show USER [--home DIR] [--config FILE] [--json]"],
    description: "\
Show what the login check sees for USER on this backend, and what it would
do: the resolved INDEX, LISTINDEX and list index file name; the local
record (LISTINDEX/.lasthost) decoded; INDEX/.lasthost on NFS (host, inode,
mtime); the verdict; the list index files and their sizes; and the time
since the last login (the record's mtime).

The verdict is one of: current (the record matches INDEX/.lasthost, the
next login keeps the list index), would drop (another backend wrote
INDEX/.lasthost since, or there is no valid record), migration pending
(nfs_hostchange_migration is on and INDEX/PREFIX.log exists, so the next
login moves the NFS list index in), or unknown (the record could not be
read without changing its atime).

show is strictly read-only: it takes no lock, creates nothing (not even a
missing LISTINDEX directory), and changes no timestamp. Files are read
with O_NOATIME, which the kernel allows to root and to the files' owner;
for anyone else show only stats them and says what it could not read. On
NFS the server, not this client, keeps INDEX/.lasthost's atime: reading
its few bytes may update that. The record is read without the lock, so a
login running at that moment can make it look corrupt.

The settings are read as the login reads them, but without the userdb:
a user whose userdb gives MAIL (or MAIL_PATH...) is shown with the paths
of the settings file.",
    options: &[
        (
            "--home DIR",
            "The user's home directory, for ~/ and %h (%{home}) in the\n\
             templates. The userdb is not asked.",
        ),
        ("--config FILE", "The settings file, as for postlogin."),
        (
            "--json",
            "One JSON object on one line instead of aligned text. Bytes\n\
             that are not printable UTF-8 appear as \\xNN.",
        ),
        ("-h, --help", "Show this help."),
    ],
    examples: &[
        (
            "Why did bob's folder list look stale on this backend?",
            "nfs-hostchange show bob@example.com --home /home/bob",
        ),
        (
            "For a script:",
            "nfs-hostchange show bob@example.com --home /home/bob --json",
        ),
    ],
    exit: &[
        ("0", "Shown, whatever the verdict."),
        (
            "1",
            "The settings or the user's paths could not be worked out\n\
             (the message says why).",
        ),
        ("2", "Bad usage."),
    ],
};

/// `check`.
pub const CHECK: Page = Page {
    name: "check",
    synopsis: &["check [--config FILE] [--dovecot-config FILE]"],
    description: "\
Check this backend's set-up and report each finding on one line, marked
ok, note, warning or error.

It validates the settings file (every error and warning the login would
log) and the paths it gives, for a sample user: a relative LISTINDEX,
INDEX=MEMORY, a LISTINDEX without a per-user variable and the like are
errors, and a Dovecot 2.4 template that still holds a 2.3 variable such
as %u (which 2.4 leaves as it is) is a warning.

It checks the LISTINDEX root: that it exists, is a directory and no
symlink, who owns it and with which mode (the login refuses a root owned
by another user, or writable by others without the sticky bit), and
whether it is on tmpfs.

When doveconf is on PATH, it reads Dovecot's own settings and reports any
drift: mail_location (or, for Dovecot 2.4, mail_path, mail_index_path,
mailbox_list_index_prefix and a set mail_driver) must be the same in
dovecot.conf and the settings file, and the Dovecot version must match
the kind of settings. It finds the post-login services of imap and pop3
and warns when none runs nfs-hostchange postlogin (worse with
mailbox_list_index_very_dirty_syncs = yes, when Dovecot trusts a stale
list index), or when script-login runs it without -d.",
    options: &[
        ("--config FILE", "The settings file, as for postlogin."),
        (
            "--dovecot-config FILE",
            "The dovecot.conf that doveconf reads (doveconf -c FILE);\n\
             without it, doveconf reads Dovecot's default.",
        ),
        ("-h, --help", "Show this help."),
    ],
    examples: &[
        (
            "After installing, and after each change:",
            "nfs-hostchange check",
        ),
        (
            "Another instance's configuration:",
            "nfs-hostchange check --config /etc/dovecot-b/nfs-hostchange.conf \\\n\
             \x20   --dovecot-config /etc/dovecot-b/dovecot.conf",
        ),
    ],
    exit: &[
        ("0", "All well: no warning and no error."),
        ("1", "Problems found: at least one warning or error."),
        ("2", "Bad usage."),
    ],
};

/// Every page, in the order of the man page.
pub const PAGES: [&Page; 4] = [&POSTLOGIN, &USERCACHE, &SHOW, &CHECK];

/// The page of a subcommand.
pub fn page(name: &str) -> Option<&'static Page> {
    PAGES.iter().copied().find(|p| p.name == name)
}

/// What the program is, for the man page.
const OVERVIEW: &str = "\
Dovecot backends that share mail over NFS can keep each user's mailbox
list index in local tmpfs (LISTINDEX=/dev/shm/...). When a user moves to
another backend and back, the local copy is stale, and with
mailbox_list_index_very_dirty_syncs = yes Dovecot serves it: folders
created elsewhere are missing from LIST. nfs-hostchange notices the move
at login and drops the stale copy before Dovecot opens it; Dovecot then
rebuilds it from the mail store.

At each login it compares INDEX/.lasthost on NFS (inode, mtime and
content) with the local record LISTINDEX/.lasthost. When they differ,
another backend wrote INDEX/.lasthost since: the local list index is
dropped, INDEX/.lasthost is rewritten with this backend's name and a
random token, and the record remembers it.";

/// The settings file, for the man page.
const SETTINGS: &str = "\
The settings file holds key = value lines and # comments. Names follow
Dovecot's.

    mail_location              the same value as in dovecot.conf (2.3)
    mail_driver                Dovecot 2.4: as in dovecot.conf
    mail_path                  Dovecot 2.4: the mail root
    mail_index_path            Dovecot 2.4: INDEX, when not the mail root
    mailbox_list_index_prefix  Dovecot 2.4: LISTINDEX and the file name
    dovecot_config_version     Dovecot 2.4: optional, must be 2.4.0 or later
    nfs_hostchange_migration   yes: move an NFS list index in at login
    nfs_hostchange_hostname    this backend's name (default: host name)
    nfs_hostchange_log         syslog (default), dovecot or stderr
    mail_uid                   Dovecot's mail user, for the cleaner

Either mail_location or the Dovecot 2.4 settings must be set, not both,
and the list index must have an absolute directory with a per-user
variable in it. Per-user values from the userdb win over the file: MAIL
replaces mail_location, MAIL_PATH, MAIL_INDEX_PATH and
MAILBOX_LIST_INDEX_PREFIX replace the 2.4 settings, and
NFS_HOSTCHANGE_MIGRATION the migration flag.";

/// Dovecot 2.4, for the man page.
const DOVECOT_24: &str = "\
Dovecot 2.4 replaced mail_location with separate settings and the %u
variables with %{variable | filter ...}. Which syntax a template is read
in follows from the setting it is in, as in Dovecot itself:
mail_location (and MAIL) in 2.3 syntax, mail_path, mail_index_path and
mailbox_list_index_prefix (and their userdb fields) in 2.4 syntax. A
settings file uses one kind or the other; dovecot_config_version = 2.4.x
makes mail_location an error.

The 2.4 variables are user, username, domain, home, uid, gid, local_ip
and remote_ip; the filters are lower, upper, username, domain, md5, sha1,
sha256 (with rounds= and salt=), substr(offset[, length]), hex[(width)],
hexlify[(width)], reverse and literal, and one arithmetic step (+ - * /
%) may follow a filter. The usual layouts in both syntaxes:

    2.3: LISTINDEX=/dev/shm/dovecot-listindex/%2.256Nu/%u/dovecot.list.index
    2.4: mailbox_list_index_prefix = /dev/shm/dovecot-listindex/
           %{user | md5 | substr(0, 8) % 256 | hex(2)}/%{user}/dovecot.list.index

    2.3: %1Mu/%2.1Mu
    2.4: %{user | md5 | hexlify(1)}/%{user | md5 | hexlify | substr(2,1)}

    2.3: %Ln/%d
    2.4: %{user | username | lower}/%{user | domain}

The first 2.4 value is one line, cut here to fit. Each pair gives the
same directories for the same user. Dovecot 2.3's %H has no 2.4 form.";

/// Files, for the man page.
const FILES: &str = concat!(
    "    /etc/dovecot/nfs-hostchange.conf   the default settings file\n",
    "    INDEX/.lasthost                    the host stamp on NFS\n",
    "    LISTINDEX/.lasthost                the local record, and the user's lock",
);

/// The usage lines of every subcommand.
fn synopsis_lines() -> impl Iterator<Item = &'static str> {
    PAGES.iter().flat_map(|p| p.synopsis.iter().copied())
}

/// The `--help` text of a page.
pub fn text(page: &Page) -> String {
    let mut out = String::new();
    for (i, line) in page.synopsis.iter().enumerate() {
        let lead = if i == 0 { "usage: " } else { "       " };
        let _ = writeln!(out, "{lead}nfs-hostchange {line}");
    }
    let _ = writeln!(out, "\n{}", page.description);
    let _ = writeln!(out, "\noptions:");
    list(&mut out, page.options);
    let _ = writeln!(out, "\nexamples:");
    for (i, (what, command)) in page.examples.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "  # {what}");
        for line in command.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "\nexit status:");
    list(&mut out, page.exit);
    out
}

/// Two columns: terms, and descriptions whose later lines are indented.
fn list(out: &mut String, items: &[(&str, &str)]) {
    const TERM_WIDTH: usize = 18;
    for (term, description) in items {
        let mut lines = description.lines();
        let first = lines.next().unwrap_or_default();
        if term.len() + 2 < TERM_WIDTH {
            let _ = writeln!(out, "  {term:<width$}{first}", width = TERM_WIDTH - 2);
        } else {
            let _ = writeln!(out, "  {term}\n{:TERM_WIDTH$}{first}", "");
        }
        for line in lines {
            let _ = writeln!(out, "{:TERM_WIDTH$}{}", "", line.trim_start());
        }
    }
}

/// The man page, in roff (man macros).
pub fn man() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".\\\" Generated by `nfs-hostchange help --man` from src/help.rs: edit that, not this."
    );
    let _ = writeln!(
        out,
        ".TH NFS-HOSTCHANGE 1 \"\" \"nfs-hostchange {}\" \"User Commands\"",
        env!("CARGO_PKG_VERSION")
    );
    // No hyphenation and no justification: setting names must stay whole.
    out.push_str(".nh\n.ad l\n");
    out.push_str(".SH NAME\nnfs-hostchange \\- drop stale Dovecot mailbox list indexes when a user changed NFS backend\n");
    out.push_str(".SH SYNOPSIS\n.nf\n");
    for line in synopsis_lines() {
        let _ = writeln!(out, "\\fBnfs\\-hostchange\\fR {}", escape(line));
    }
    out.push_str("\\fBnfs\\-hostchange\\fR help [\\fISUBCOMMAND\\fR | \\-\\-man]\n.fi\n");
    out.push_str(".SH DESCRIPTION\n");
    paragraphs(&mut out, OVERVIEW);
    out.push_str(".SH COMMANDS\n");
    for page in PAGES {
        let _ = writeln!(out, ".SS {}", page.name);
        out.push_str(".nf\n");
        for line in page.synopsis {
            let _ = writeln!(out, "\\fBnfs\\-hostchange\\fR {}", escape(line));
        }
        out.push_str(".fi\n");
        paragraphs(&mut out, page.description);
        out.push_str(".PP\nOptions:\n");
        man_list(&mut out, page.options, true);
        out.push_str(".PP\nExamples:\n");
        for (what, command) in page.examples {
            let _ = writeln!(out, ".PP\n{}\n.RS\n.nf", escape(what));
            for line in command.lines() {
                let _ = writeln!(out, "{}", escape(line));
            }
            out.push_str(".fi\n.RE\n");
        }
        out.push_str(".PP\nExit status:\n");
        man_list(&mut out, page.exit, false);
    }
    out.push_str(".SH SETTINGS\n");
    paragraphs(&mut out, SETTINGS);
    out.push_str(".SH DOVECOT 2.4\n");
    paragraphs(&mut out, DOVECOT_24);
    out.push_str(".SH FILES\n");
    paragraphs(&mut out, FILES);
    out.push_str(".SH SEE ALSO\n\\fBdoveconf\\fR(1), \\fBdovecot\\fR(1)\n");
    out
}

/// Paragraphs of text; literal blocks (every line indented four spaces)
/// are kept as they are.
fn paragraphs(out: &mut String, text: &str) {
    for paragraph in text.split("\n\n") {
        let literal = paragraph.lines().all(|l| l.starts_with("    "));
        out.push_str(".PP\n");
        if literal {
            out.push_str(".RS\n.nf\n");
        }
        for line in paragraph.lines() {
            let line = if literal { &line[4..] } else { line };
            let _ = writeln!(out, "{}", escape(line));
        }
        if literal {
            out.push_str(".fi\n.RE\n");
        }
    }
}

/// A tagged list (`.TP`); option terms in bold.
fn man_list(out: &mut String, items: &[(&str, &str)], bold: bool) {
    for (term, description) in items {
        let term = escape(term);
        if bold {
            let _ = writeln!(out, ".TP\n\\fB{term}\\fR");
        } else {
            let _ = writeln!(out, ".TP\n{term}");
        }
        for line in description.lines() {
            let _ = writeln!(out, "{}", escape(line.trim_start()));
        }
    }
}

/// Escapes one line for roff: backslashes, minus signs, and a leading `.`
/// or `'` that would read as a request.
fn escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    if line.starts_with('.') || line.starts_with('\'') {
        out.push_str("\\&");
    }
    for c in line.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_examples_and_exit_statuses() {
        for page in PAGES {
            assert!(!page.examples.is_empty(), "{}", page.name);
            assert!(!page.exit.is_empty(), "{}", page.name);
            assert!(
                page.options.iter().any(|(o, _)| o.contains("--help")),
                "{}",
                page.name
            );
            for line in page.synopsis {
                assert!(line.starts_with(page.name), "{line}");
            }
        }
        assert_eq!(page("show").map(|p| p.name), Some("show"));
        assert!(page("nope").is_none());
    }

    #[test]
    fn text_lines_fit_a_terminal() {
        for page in PAGES {
            for line in text(page).lines() {
                assert!(line.chars().count() <= 90, "{}: {line}", page.name);
            }
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(escape(".x --y a\\b"), "\\&.x \\-\\-y a\\eb");
        assert_eq!(escape("'q"), "\\&'q");
        let man = man();
        assert!(man.contains(".SS show\n"));
        assert!(man.contains(".SH DOVECOT 2.4\n"));
        // No line may start a request by accident.
        for line in man.lines() {
            if let Some(rest) = line.strip_prefix('.') {
                let request = rest.split(' ').next().unwrap_or_default();
                assert!(
                    ["\\\"", "TH", "SH", "SS", "PP", "TP", "RS", "RE", "nf", "fi", "nh", "ad"]
                        .contains(&request),
                    "{line}"
                );
            }
        }
    }
}
