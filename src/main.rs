//! `nfs-hostchange`: a thin dispatcher to the subcommands.
//!
//! The binary has no Rust `main` of its own (`no_main`): the C `main` below
//! is entered straight from the C runtime, so std's start-up work (checking
//! descriptors 0 to 2, installing a stack-overflow handler, ignoring
//! SIGPIPE) is skipped. That keeps the login path short, and it means the
//! exec()ed program inherits the signal dispositions Dovecot gave us, not
//! ones std changed. Arguments and environment still come from std, which
//! reads them on glibc through `.init_array`.
#![no_main]

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nfs_hostchange::log::{LogTarget, Logger};
use nfs_hostchange::login;

/// Exit status for bad usage (sysexits' EX_USAGE).
const EXIT_USAGE: i32 = 64;
/// Exit status when the command to exec does not exist (as in shells).
const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the command exists but could not be exec()ed.
const EXIT_CANNOT_EXEC: i32 = 126;

const USAGE: &str = "\
usage: nfs-hostchange postlogin [--config FILE] [--] COMMAND [ARGS...]
       nfs-hostchange usercache clean [--min-age AGE] [--config FILE] DIR
       nfs-hostchange usercache clean AGE DIR
       nfs-hostchange usercache sweep [--min-age AGE] [--dry-run] [--config FILE] [ROOT]
       nfs-hostchange show USER [--home DIR] [--config FILE] [--json]
       nfs-hostchange check [--config FILE] [--dovecot-config FILE]
       nfs-hostchange help [SUBCOMMAND | --man]
       nfs-hostchange --help | --version

postlogin  Check, for the user Dovecot names in USER, whether another backend
           served the user since this one did; if so, drop the user's local
           mailbox list index (LISTINDEX). Then exec COMMAND with ARGS, the
           environment and every open descriptor unchanged. Runs as a Dovecot
           post-login script (script-login -d nfs-hostchange postlogin) or in
           a checkpassword chain. Nothing is written to stdout.

usercache clean
           Remove one user's LISTINDEX directory DIR under the user's lock,
           only if no login happened for AGE (default: whatever the age).
           A user whose lock is held is busy: skipped, and said so.
usercache sweep
           Find every user directory under the LISTINDEX root (ROOT, default
           from mail_location) and clean those without a login for AGE
           (default 7 days). --dry-run lists them and changes nothing. Prints
           one summary line; exit 0 all well, 1 some user failed, 2 bad usage.

show       Show what the login check sees for USER on this backend and what
           the next login would do (current, would drop, migration pending),
           without changing anything.
check      Check the settings, the LISTINDEX root and, with doveconf on PATH,
           Dovecot's settings; exit 0 all well, 1 problems found.
help       Show a subcommand's help with examples, or the man page (--man).

AGE        Dovecot's interval syntax: 30m, 12 hours, 7d, 2 weeks; 0 alone.
--config FILE  settings file (default: $NFS_HOSTCHANGE_CONFIG, else
               /etc/dovecot/nfs-hostchange.conf)
";

/// The C entry point.
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).map(|a| a.as_bytes()) {
        Some(b"postlogin") => postlogin(&args[2..]),
        Some(b"usercache") => nfs_hostchange::usercache::main(&args[2..]),
        Some(b"show") => nfs_hostchange::show::main(&args[2..]),
        Some(b"check") => nfs_hostchange::check::main(&args[2..]),
        Some(b"help") if args.len() > 2 => help(&args[2]),
        Some(b"--help" | b"-h" | b"help") => {
            print!("{USAGE}");
            0
        }
        Some(b"--version" | b"-V") => {
            println!("nfs-hostchange {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some(other) => {
            eprintln!(
                "nfs-hostchange: unknown command {:?}\n{USAGE}",
                String::from_utf8_lossy(other)
            );
            EXIT_USAGE
        }
        None => {
            eprint!("{USAGE}");
            EXIT_USAGE
        }
    }
}

/// `help SUBCOMMAND`: the subcommand's help; `help --man`: the man page.
fn help(what: &OsStr) -> i32 {
    use nfs_hostchange::help;
    let text = if what == "--man" {
        help::man()
    } else if let Some(page) = what.to_str().and_then(help::page) {
        help::text(page)
    } else {
        eprintln!(
            "nfs-hostchange help: no help for {:?}\n{USAGE}",
            what.to_string_lossy()
        );
        return EXIT_USAGE;
    };
    print!("{text}");
    0
}

/// `postlogin [--config FILE] [--] COMMAND [ARGS...]`: check, then exec.
/// Only returns (with an exit status) when there is nothing to exec or
/// exec failed.
fn postlogin(args: &[OsString]) -> i32 {
    let mut log = Logger::new(LogTarget::Early);

    // Options end at the first word that is not one; the rest is the command.
    let mut config: Option<&OsStr> = None;
    let mut rest = args;
    while let Some((word, tail)) = rest.split_first() {
        let bytes = word.as_bytes();
        if bytes == b"--" {
            rest = tail;
            break;
        } else if bytes == b"--config" {
            let Some((file, tail)) = tail.split_first() else {
                eprintln!("nfs-hostchange postlogin: --config needs a file name");
                return EXIT_USAGE;
            };
            config = Some(file);
            rest = tail;
        } else if let Some(file) = bytes.strip_prefix(b"--config=") {
            config = Some(OsStr::from_bytes(file));
            rest = tail;
        } else if bytes == b"--help" || bytes == b"-h" {
            print!(
                "{}",
                nfs_hostchange::help::text(&nfs_hostchange::help::POSTLOGIN)
            );
            return 0;
        } else if bytes.starts_with(b"-") {
            // A wrong option must not lock users out: say so and go on.
            log.error(format_args!(
                "postlogin: unknown option {:?} ignored",
                word.to_string_lossy()
            ));
            rest = tail;
        } else {
            break;
        }
    }
    if rest.is_empty() {
        eprintln!("nfs-hostchange postlogin: no command to run\n{USAGE}");
        return EXIT_USAGE;
    }

    // The check. A bug in it must not stop the login either.
    let held = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        login::check(config, &mut log)
    })) {
        Ok(checked) => checked.held,
        Err(_) => {
            log.error(format_args!("internal error: list index not checked"));
            login::Held::default()
        }
    };
    exec(rest, &log, held)
}

/// Replaces this process with `command`. Returns only when that fails.
/// `held` (the user's lock and the check's descriptors, all close-on-exec)
/// is left to the exec to release and close; when the exec fails, it is
/// dropped before the error is logged.
fn exec(command: &[OsString], log: &Logger, held: login::Held) -> i32 {
    let argv: Result<Vec<CString>, _> =
        command.iter().map(|a| CString::new(a.as_bytes())).collect();
    let program = command[0].to_string_lossy();
    let argv = match argv {
        Ok(argv) => argv,
        Err(_) => {
            log.error(format_args!(
                "cannot execute {program:?}: argument contains a NUL byte"
            ));
            return EXIT_CANNOT_EXEC;
        }
    };
    // A name without a slash is looked up in PATH (or, with no PATH, in
    // the C library's default path), as a shell would.
    // Not dropped: the exec closes every descriptor in it (close-on-exec)
    // and so releases the lock, without an unlock or close() of ours.
    let held = std::mem::ManuallyDrop::new(held);
    let errno = if command[0].as_bytes().contains(&b'/') {
        nix::unistd::execv(&argv[0], &argv)
    } else {
        nix::unistd::execvp(&argv[0], &argv)
    }
    .unwrap_err();
    drop(std::mem::ManuallyDrop::into_inner(held));
    log.error(format_args!("cannot execute {program}: {}", errno.desc()));
    if errno == nix::errno::Errno::ENOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXEC
    }
}
