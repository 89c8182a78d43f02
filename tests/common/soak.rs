//! The cluster soak, shared by `tests/soak.rs` (a CI-sized run) and
//! `examples/soak.rs` (the long run): backends sharing one mail store, users
//! wandering between them at random, and every LIST and STATUS answer
//! checked against a model of what the store holds.
//!
//! The driver is seeded and sequential: each step picks a user, a backend
//! and one of LIST, STATUS, CREATE, DELETE, RENAME, APPEND, and runs it as a
//! whole IMAP session (login, command, logout), so every step passes through
//! the post-login script, where the wrapper acts. A few steps are POP3
//! sessions instead (STAT, checked against INBOX), which pass through the
//! wrapper as well. After every command that changes something the model
//! is also compared with the Maildirs on the store itself, so a wrong model
//! cannot pass for a stale answer.
//!
//! Meanwhile a background thread runs `nfs-hostchange usercache sweep` with
//! a small minimum age on every wrapped backend every few seconds, and now
//! and then (seeded, between two steps) the driver wipes one backend's
//! LISTINDEX root, as a reboot empties tmpfs. A wipe and a sweep of the same
//! backend never overlap (a reboot stops the timer too).
//!
//! The op sequence depends only on the seed and on the answers, which in a
//! run without stale answers are the model's: the same seed replays the same
//! steps. What the sweeps clean depends on timing and does not replay.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::cluster::{Backend, BackendKind};
use super::imap::quote;
use super::system::TEST_USER;
use super::{Cluster, Postlogin};

/// Backend names, in order; a run uses the first `backends` of them.
pub const BACKEND_NAMES: &[&str] = &[
    "backend-a",
    "backend-b",
    "backend-c",
    "backend-d",
    "backend-e",
    "backend-f",
];

/// The name of the backend without the wrapper in the migration variant.
pub const OLD_BACKEND: &str = "backend-old";

/// Folder names users create, rename to and delete. A small pool, so names
/// come back after a DELETE or RENAME, which list indexes must notice too.
const FOLDER_POOL: &[&str] = &["Alpha", "Beta", "Gamma", "Delta", "Omega", "Zeta"];

/// How long one sweep may run before it is killed and counted failed.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The background thread sleeps in steps this long, to stop promptly.
const SWEEP_NAP: Duration = Duration::from_millis(50);
/// At most this many sweep rounds per run, whatever the time.
const SWEEP_ROUNDS_MAX: u64 = 1_000_000;
/// Candidate user names tried when all users must share one hash bucket.
const BUCKET_CANDIDATES_MAX: usize = 1_000_000;
/// After this many failed sessions in a row the run gives up.
const FAILED_SESSIONS_IN_A_ROW_MAX: u32 = 20;
/// How many ops of a user's recent history a stale answer reports.
const HISTORY_LEN: usize = 12;
/// How many problems (stale answers, errors, log lines) a report details.
const DETAILS_MAX: usize = 8;
/// How long to wait for Dovecot's log process to write the last lines.
const LOG_SETTLE_MAX: Duration = Duration::from_secs(5);
const LOG_SETTLE_QUIET: Duration = Duration::from_millis(400);

/// What the wrapper logs when it drops or migrates a list index.
pub const DROPPED_LINE: &str = "dropped the list index";
pub const MIGRATED_LINE: &str = "migrated the list index";

/// The operations, with their weights in the random mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    List,
    Status,
    Create,
    Delete,
    Rename,
    Append,
    Pop3,
}

const OP_WEIGHTS: &[(OpKind, u64)] = &[
    (OpKind::List, 28),
    (OpKind::Status, 22),
    (OpKind::Create, 14),
    (OpKind::Append, 14),
    (OpKind::Delete, 9),
    (OpKind::Rename, 9),
    (OpKind::Pop3, 4),
];

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Scratch directory label (short: socket paths must stay short).
    pub label: String,
    pub seed: u64,
    /// How many users wander (`user00`, `user01`...).
    pub users: usize,
    /// Pick user names that all land in one `%2.256Nu` directory of the
    /// LISTINDEX root, so that cleaning one user races with logins of
    /// others in the same directory.
    pub one_bucket: bool,
    /// How many wrapped (or control) backends.
    pub backends: usize,
    /// Stop after this many moves...
    pub moves: u64,
    /// ...or this many ops...
    pub max_ops: u64,
    /// ...or this much time, whichever comes first.
    pub max_time: Duration,
    /// What the backends run after a login: the wrapper, or a plain exec.
    pub postlogin: Postlogin,
    /// The nfs-hostchange binary: runs the sweeps (in the control run as
    /// well, so that both runs do the same things).
    pub binary: PathBuf,
    /// Sweep every wrapped backend this often (`None`: no sweeps; zero:
    /// one sweep after the other).
    pub sweep_every: Option<Duration>,
    /// The sweep's `--min-age`.
    pub sweep_min_age: String,
    /// Wipe one backend's LISTINDEX root with probability 1/wipe_one_in
    /// before each op (0: never).
    pub wipe_one_in: u64,
    /// The migration variant: one more backend without the wrapper and with
    /// the list index on the store, and migration on in the others.
    pub old_backend: bool,
    /// Print every op as it runs.
    pub verbose: bool,
}

impl SoakConfig {
    /// A configuration with the defaults of the CI-sized run.
    pub fn new(label: &str, seed: u64, postlogin: Postlogin, binary: PathBuf) -> SoakConfig {
        SoakConfig {
            label: label.to_string(),
            seed,
            users: 8,
            one_bucket: false,
            backends: 4,
            moves: 250,
            max_ops: 2_000,
            max_time: Duration::from_secs(120),
            postlogin,
            binary,
            sweep_every: Some(Duration::from_secs(2)),
            sweep_min_age: "1s".to_string(),
            wipe_one_in: 60,
            old_backend: false,
            verbose: false,
        }
    }

    fn mode(&self) -> &'static str {
        match (&self.postlogin, self.old_backend) {
            (Postlogin::Control, _) => "control (plain exec)",
            (Postlogin::Wrapper(_), false) => "wrapper",
            (Postlogin::Wrapper(_), true) => "wrapper + migration, one OLD backend",
        }
    }
}

// ---------------------------------------------------------------------------
// The random source

/// xorshift64*: small, seeded, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 once, so that small seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is negligible here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        n > 0 && self.next_u64() % n == 0
    }
}

// ---------------------------------------------------------------------------
// The model

/// What one user's mail store holds: message counts of INBOX and of every
/// other folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailboxes {
    pub inbox: u32,
    pub folders: BTreeMap<String, u32>,
}

impl Mailboxes {
    /// The names LIST must answer, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::iter::once("INBOX".to_string())
            .chain(self.folders.keys().cloned())
            .collect();
        names.sort();
        names
    }

    pub fn messages(&self, mailbox: &str) -> Option<u32> {
        if mailbox == "INBOX" {
            Some(self.inbox)
        } else {
            self.folders.get(mailbox).copied()
        }
    }

    fn messages_mut(&mut self, mailbox: &str) -> Option<&mut u32> {
        if mailbox == "INBOX" {
            Some(&mut self.inbox)
        } else {
            self.folders.get_mut(mailbox)
        }
    }

    /// Reads the truth from a Maildir++ root: INBOX is the root itself,
    /// every `.Name` directory a folder (`..DOVECOT-TRASHED` and the like
    /// are Dovecot's leftovers of a DELETE, not folders), and a message is
    /// a file in `cur/` or `new/`.
    pub fn read_maildir(maildir: &Path) -> Result<Mailboxes, String> {
        let mut boxes = Mailboxes {
            inbox: count_messages(maildir)?,
            folders: BTreeMap::new(),
        };
        let entries =
            fs::read_dir(maildir).map_err(|e| format!("readdir {}: {e}", maildir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("readdir {}: {e}", maildir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(folder) = name.strip_prefix('.') else {
                continue;
            };
            if folder.is_empty() || folder.starts_with('.') {
                continue;
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("lstat {}: {e}", entry.path().display())),
            };
            if meta.is_dir() {
                boxes
                    .folders
                    .insert(folder.to_string(), count_messages(&entry.path())?);
            }
        }
        Ok(boxes)
    }
}

fn count_messages(dir: &Path) -> Result<u32, String> {
    let mut count = 0;
    for sub in ["cur", "new"] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("readdir {}: {e}", path.display())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("readdir {}: {e}", path.display()))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                count += 1;
            }
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// The report

/// Figures for one backend.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    pub name: String,
    /// Runs the wrapper (false for the control run and the OLD backend).
    pub wrapped: bool,
    pub logins: u64,
    /// Logins here by a user whose previous op was elsewhere.
    pub moves_in: u64,
    /// The wrapper's "dropped the list index" lines.
    pub drops: u64,
    /// The wrapper's "migrated the list index" lines.
    pub migrations: u64,
    pub wipes: u64,
    pub sweeps: u64,
    /// Sweeps that exited non-zero, timed out or printed no summary.
    pub sweep_failures: u64,
    /// Users cleaned, busy and in error, from the sweep summaries.
    pub cleaned: u64,
    pub busy: u64,
    pub sweep_errors: u64,
    /// Error lines from the wrapper (`nfs-hostchange` or `-postlogin`).
    pub wrapper_errors: u64,
    pub wrapper_warnings: u64,
    /// Every other Error, Panic or Fatal line of Dovecot's log.
    pub dovecot_errors: u64,
}

/// What a run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub mode: String,
    pub seed: u64,
    pub users: usize,
    pub ops: u64,
    pub moves: u64,
    pub elapsed: Duration,
    /// LIST and STATUS answers compared with the model.
    pub answers_checked: u64,
    pub stale_lists: u64,
    pub stale_statuses: u64,
    /// POP3 STAT counts INBOX itself, never from the list index: a
    /// mismatch here is a broken model or harness, not the bug.
    pub stale_pop3: u64,
    /// Changes (CREATE, DELETE, RENAME, APPEND) the server refused.
    pub refused: u64,
    /// Times the store disagreed with the model after a change (the model
    /// then takes the store's state).
    pub store_mismatches: u64,
    /// Sessions that failed to connect, log in or complete.
    pub failed_sessions: u64,
    pub backends: Vec<BackendStats>,
    /// The first few problems, with what led to them.
    pub details: Vec<String>,
    /// Why the run stopped.
    pub stopped_by: String,
}

impl SoakReport {
    pub fn stale_answers(&self) -> u64 {
        self.stale_lists + self.stale_statuses + self.stale_pop3
    }

    pub fn wrapper_errors(&self) -> u64 {
        self.backends.iter().map(|b| b.wrapper_errors).sum()
    }

    pub fn dovecot_errors(&self) -> u64 {
        self.backends.iter().map(|b| b.dovecot_errors).sum()
    }

    pub fn sweep_failures(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| b.sweep_failures + b.sweep_errors)
            .sum()
    }

    fn total(&self, f: impl Fn(&BackendStats) -> u64) -> u64 {
        self.backends.iter().map(f).sum()
    }

    /// The report as a small text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: {}, seed {}, {} users, {} backends; stopped by {}",
            self.mode,
            self.seed,
            self.users,
            self.backends.len(),
            self.stopped_by
        );
        let rows: Vec<(&str, String)> = vec![
            ("ops (IMAP sessions)", self.ops.to_string()),
            ("moves", self.moves.to_string()),
            ("answers checked", self.answers_checked.to_string()),
            (
                "stale answers",
                format!(
                    "{} (LIST {}, STATUS {}, POP3 {})",
                    self.stale_answers(),
                    self.stale_lists,
                    self.stale_statuses,
                    self.stale_pop3
                ),
            ),
            ("list indexes dropped", self.total(|b| b.drops).to_string()),
            ("migrations", self.total(|b| b.migrations).to_string()),
            ("users cleaned", self.total(|b| b.cleaned).to_string()),
            ("LISTINDEX roots wiped", self.total(|b| b.wipes).to_string()),
            ("wrapper errors", self.wrapper_errors().to_string()),
            ("changes refused", self.refused.to_string()),
            ("store/model mismatches", self.store_mismatches.to_string()),
            ("failed sessions", self.failed_sessions.to_string()),
            ("other Dovecot errors", self.dovecot_errors().to_string()),
            (
                "sweep failures",
                format!(
                    "{} (runs {}, busy {})",
                    self.sweep_failures(),
                    self.total(|b| b.sweeps),
                    self.total(|b| b.busy)
                ),
            ),
            ("elapsed", format!("{:.1} s", self.elapsed.as_secs_f64())),
        ];
        for (what, value) in rows {
            let _ = writeln!(out, "  {what:<24} {value}");
        }
        let _ = writeln!(
            out,
            "\n  {:<12} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6} {:>7} {:>4} {:>7} {:>7} {:>7}",
            "backend",
            "logins",
            "moves",
            "drops",
            "migr",
            "wipes",
            "sweeps",
            "cleaned",
            "busy",
            "wr-err",
            "wr-warn",
            "dc-err"
        );
        let mut all = BackendStats {
            name: "total".to_string(),
            ..BackendStats::default()
        };
        for b in &self.backends {
            let _ = writeln!(out, "  {}", backend_row(b));
            all.logins += b.logins;
            all.moves_in += b.moves_in;
            all.drops += b.drops;
            all.migrations += b.migrations;
            all.wipes += b.wipes;
            all.sweeps += b.sweeps;
            all.cleaned += b.cleaned;
            all.busy += b.busy;
            all.wrapper_errors += b.wrapper_errors;
            all.wrapper_warnings += b.wrapper_warnings;
            all.dovecot_errors += b.dovecot_errors;
        }
        let _ = writeln!(out, "  {}", backend_row(&all));
        if !self.details.is_empty() {
            let _ = writeln!(out, "\n  first problems:");
            for detail in &self.details {
                for (i, line) in detail.lines().enumerate() {
                    let indent = if i == 0 { "  - " } else { "      " };
                    let _ = writeln!(out, "{indent}{line}");
                }
            }
        }
        out
    }
}

fn backend_row(b: &BackendStats) -> String {
    let name = if b.wrapped || b.name == "total" {
        b.name.clone()
    } else {
        format!("{}*", b.name)
    };
    format!(
        "{:<12} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6} {:>7} {:>4} {:>7} {:>7} {:>7}",
        name,
        b.logins,
        b.moves_in,
        b.drops,
        b.migrations,
        b.wipes,
        b.sweeps,
        b.cleaned,
        b.busy,
        b.wrapper_errors,
        b.wrapper_warnings,
        b.dovecot_errors
    )
}

// ---------------------------------------------------------------------------
// The run

/// One user's state in the driver.
struct UserState {
    name: String,
    model: Mailboxes,
    /// The backend of the user's previous op.
    last_backend: Option<usize>,
    /// The user's last ops, for reports.
    history: VecDeque<String>,
}

/// Sweep figures the background thread collects.
#[derive(Debug, Default, Clone)]
struct SweepStats {
    runs: u64,
    failures: u64,
    cleaned: u64,
    busy: u64,
    errors: u64,
    details: Vec<String>,
}

/// Runs one soak and reports. The cluster is stopped before this returns.
pub fn run(cfg: &SoakConfig) -> Result<SoakReport, String> {
    if cfg.users == 0 || cfg.backends == 0 || cfg.backends > BACKEND_NAMES.len() {
        return Err(format!(
            "need at least one user and 1 to {} backends",
            BACKEND_NAMES.len()
        ));
    }
    let names = &BACKEND_NAMES[..cfg.backends];
    let cluster = if cfg.old_backend {
        start_with_old_backend(&cfg.label, names, &cfg.postlogin)?
    } else {
        Cluster::start(&cfg.label, names, &cfg.postlogin)?
    };
    for name in names {
        configure_wrapper(cluster.backend(name))?;
    }
    let mut all_names: Vec<&str> = names.to_vec();
    if cfg.old_backend {
        all_names.push(OLD_BACKEND);
    }
    let wrapped = matches!(cfg.postlogin, Postlogin::Wrapper(_));
    let mut stats: Vec<BackendStats> = all_names
        .iter()
        .map(|name| BackendStats {
            name: name.to_string(),
            wrapped: wrapped && *name != OLD_BACKEND,
            ..BackendStats::default()
        })
        .collect();

    let mut users = Vec::new();
    for name in user_names(cfg.users, cfg.one_bucket)? {
        cluster.provision_user(&name)?;
        users.push(UserState {
            model: Mailboxes::read_maildir(&cluster.maildir(&name))?,
            name,
            last_backend: None,
            history: VecDeque::new(),
        });
    }

    // One lock per backend with a LISTINDEX root: a wipe and a sweep of
    // the same backend never overlap.
    let root_locks: Vec<Mutex<()>> = names.iter().map(|_| Mutex::new(())).collect();
    let sweep_stats: Vec<Mutex<SweepStats>> = names
        .iter()
        .map(|_| Mutex::new(SweepStats::default()))
        .collect();
    let stop = AtomicBool::new(false);

    let mut report = SoakReport {
        mode: cfg.mode().to_string(),
        seed: cfg.seed,
        users: cfg.users,
        ..SoakReport::default()
    };
    let started = Instant::now();
    let driven = std::thread::scope(|scope| {
        if let Some(every) = cfg.sweep_every {
            let (cluster, root_locks, sweep_stats, stop) =
                (&cluster, &root_locks, &sweep_stats, &stop);
            scope.spawn(move || {
                sweep_loop(
                    cfg,
                    cluster,
                    names,
                    every,
                    root_locks,
                    sweep_stats,
                    stop,
                    started,
                )
            });
        }
        let result = drive(
            cfg,
            &cluster,
            &all_names,
            &mut users,
            &mut stats,
            &root_locks,
            &mut report,
            started,
        );
        stop.store(true, Ordering::Relaxed);
        result
    });
    report.elapsed = started.elapsed();
    driven?;

    // The figures from the sweeps and the logs.
    for (i, sweep) in sweep_stats.iter().enumerate() {
        let sweep = sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = &mut stats[i];
        b.sweeps = sweep.runs;
        b.sweep_failures = sweep.failures;
        b.cleaned = sweep.cleaned;
        b.busy = sweep.busy;
        b.sweep_errors = sweep.errors;
        for detail in &sweep.details {
            push_detail(&mut report.details, format!("{}: {detail}", b.name));
        }
    }
    settle_logs(&cluster);
    for b in stats.iter_mut() {
        let log = cluster.backend(&b.name).log_text()?;
        count_log(&log, b, &mut report.details);
    }
    report.backends = stats;
    drop(cluster);
    Ok(report)
}

/// The wrapper configuration for the soak: the sweep runs as root over a
/// LISTINDEX root that belongs to the mail user, which `mail_uid` allows.
fn configure_wrapper(backend: &Backend) -> Result<(), String> {
    const FROM: &str = "#mail_uid = vmail";
    let path = backend.wrapper_conf_path();
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if !text.contains(FROM) {
        return Err(format!(
            "{} no longer contains {FROM:?}; tests/common/soak.rs must be updated",
            path.display()
        ));
    }
    let text = text.replace(FROM, &format!("mail_uid = {TEST_USER}"));
    super::system::write_public_file(path, &text)
}

/// The driver: one op per step until a bound is reached.
#[allow(clippy::too_many_arguments)]
fn drive(
    cfg: &SoakConfig,
    cluster: &Cluster,
    names: &[&str],
    users: &mut [UserState],
    stats: &mut [BackendStats],
    root_locks: &[Mutex<()>],
    report: &mut SoakReport,
    started: Instant,
) -> Result<(), String> {
    let mut rng = Rng::new(cfg.seed);
    let mut failed_in_a_row = 0;
    // Only backends with a LISTINDEX root are wiped.
    let wipeable = root_locks.len();
    loop {
        if report.moves >= cfg.moves {
            report.stopped_by = format!("{} moves", cfg.moves);
            return Ok(());
        }
        if report.ops >= cfg.max_ops {
            report.stopped_by = format!("{} ops", cfg.max_ops);
            return Ok(());
        }
        if started.elapsed() >= cfg.max_time {
            report.stopped_by = format!("{:?} time limit", cfg.max_time);
            return Ok(());
        }
        let step = report.ops + 1;

        // A reboot of one backend, now and then.
        if rng.one_in(cfg.wipe_one_in) {
            let i = rng.below(wipeable);
            let backend = cluster.backend(names[i]);
            let _guard = root_locks[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let removed = wipe_root(backend.listindex_root())?;
            stats[i].wipes += 1;
            if cfg.verbose {
                println!("#{step} wipe {} ({removed} entries)", names[i]);
            }
            for user in users.iter_mut() {
                remember(user, format!("#{step} {} LISTINDEX root wiped", names[i]));
            }
        }

        let u = rng.below(users.len());
        let b = rng.below(names.len());
        let user = &mut users[u];
        let moved = user.last_backend.is_some_and(|last| last != b);
        if moved {
            report.moves += 1;
            stats[b].moves_in += 1;
        }
        user.last_backend = Some(b);
        stats[b].logins += 1;
        report.ops += 1;

        let op = pick_op(&mut rng, &user.model);
        let backend = cluster.backend(names[b]);
        let outcome = run_op(backend, user, &op, step);
        let summary = format!("#{step} {} {}: {}", names[b], op.describe(), outcome.text);
        if cfg.verbose {
            println!("{} {summary}", user.name);
        }
        remember(user, summary);

        match outcome.kind {
            OutcomeKind::Failed => {
                report.failed_sessions += 1;
                failed_in_a_row += 1;
                push_detail(
                    &mut report.details,
                    format!("{}: session failed: {}", user.name, outcome.text),
                );
                if failed_in_a_row >= FAILED_SESSIONS_IN_A_ROW_MAX {
                    return Err(format!(
                        "{failed_in_a_row} sessions failed in a row; last: {}",
                        outcome.text
                    ));
                }
                // Whether a change went through before the failure is
                // unknown: the store says.
                user.model = Mailboxes::read_maildir(&cluster.maildir(&user.name))?;
            }
            OutcomeKind::Answer { stale } => {
                failed_in_a_row = 0;
                report.answers_checked += 1;
                if stale {
                    match op {
                        Op::List => report.stale_lists += 1,
                        Op::Pop3 => report.stale_pop3 += 1,
                        _ => report.stale_statuses += 1,
                    }
                    push_detail(&mut report.details, stale_detail(cfg.seed, user));
                }
            }
            OutcomeKind::Change { refused } => {
                failed_in_a_row = 0;
                if refused {
                    report.refused += 1;
                    push_detail(
                        &mut report.details,
                        format!(
                            "{}: {}",
                            user.name,
                            user.history.back().cloned().unwrap_or_default()
                        ),
                    );
                }
                let truth = Mailboxes::read_maildir(&cluster.maildir(&user.name))?;
                if truth != user.model {
                    report.store_mismatches += 1;
                    push_detail(
                        &mut report.details,
                        format!(
                            "{}: after #{step} the store holds {:?}, the model {:?}",
                            user.name, truth, user.model
                        ),
                    );
                    user.model = truth;
                }
            }
        }
    }
}

/// `user00`, `user01`... or, for `one_bucket`, the first `count` such
/// names whose `%2.256Nu` is that of `user00`.
pub fn user_names(count: usize, one_bucket: bool) -> Result<Vec<String>, String> {
    let name = |i: usize| format!("user{i:02}");
    if !one_bucket {
        return Ok((0..count).map(name).collect());
    }
    let bucket = hash_bucket(&name(0));
    let names: Vec<String> = (0..BUCKET_CANDIDATES_MAX)
        .map(name)
        .filter(|n| hash_bucket(n) == bucket)
        .take(count)
        .collect();
    if names.len() < count {
        return Err(format!("only {} user names share one bucket", names.len()));
    }
    Ok(names)
}

/// Dovecot's `%2.256Nu`: the first 8 bytes of the MD5 of the name, big
/// endian, modulo 256, as two hex digits (see DESIGN.md). Computed here
/// independently of the code under test.
pub fn hash_bucket(user: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(user.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("{:02x}", u64::from_be_bytes(first) % 256)
}

fn remember(user: &mut UserState, line: String) {
    if user.history.len() == HISTORY_LEN {
        user.history.pop_front();
    }
    user.history.push_back(line);
}

fn push_detail(details: &mut Vec<String>, detail: String) {
    if details.len() < DETAILS_MAX {
        details.push(detail);
    }
}

fn stale_detail(seed: u64, user: &UserState) -> String {
    let mut text = format!(
        "{}: stale answer (seed {seed}); the user's last ops:",
        user.name
    );
    for line in &user.history {
        let _ = write!(text, "\n{line}");
    }
    text
}

/// One operation with its arguments, chosen from the model.
#[derive(Debug, Clone)]
enum Op {
    List,
    Status(String),
    Create(String),
    Delete(String),
    Rename(String, String),
    Append(String),
    Pop3,
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::List => "LIST".to_string(),
            Op::Status(m) => format!("STATUS {m}"),
            Op::Create(m) => format!("CREATE {m}"),
            Op::Delete(m) => format!("DELETE {m}"),
            Op::Rename(from, to) => format!("RENAME {from} {to}"),
            Op::Append(m) => format!("APPEND {m}"),
            Op::Pop3 => "POP3 STAT".to_string(),
        }
    }
}

/// Picks an op by weight, then its arguments from what the model holds.
/// An op that cannot apply (DELETE without folders, CREATE with every name
/// taken) becomes a LIST.
fn pick_op(rng: &mut Rng, model: &Mailboxes) -> Op {
    let total: u64 = OP_WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.next_u64() % total;
    let mut kind = OpKind::List;
    for (k, w) in OP_WEIGHTS {
        if roll < *w {
            kind = *k;
            break;
        }
        roll -= w;
    }
    let folders: Vec<&String> = model.folders.keys().collect();
    let free: Vec<&str> = FOLDER_POOL
        .iter()
        .copied()
        .filter(|n| !model.folders.contains_key(*n))
        .collect();
    let any_mailbox = |rng: &mut Rng| {
        let i = rng.below(folders.len() + 1);
        if i == 0 {
            "INBOX".to_string()
        } else {
            folders[i - 1].clone()
        }
    };
    match kind {
        OpKind::List => Op::List,
        OpKind::Status => Op::Status(any_mailbox(rng)),
        OpKind::Append => Op::Append(any_mailbox(rng)),
        OpKind::Pop3 => Op::Pop3,
        OpKind::Create if !free.is_empty() => Op::Create(free[rng.below(free.len())].to_string()),
        OpKind::Delete if !folders.is_empty() => {
            Op::Delete(folders[rng.below(folders.len())].clone())
        }
        OpKind::Rename if !folders.is_empty() && !free.is_empty() => {
            let from = folders[rng.below(folders.len())].clone();
            let to = free[rng.below(free.len())].to_string();
            Op::Rename(from, to)
        }
        _ => Op::List,
    }
}

enum OutcomeKind {
    /// LIST or STATUS answered; `stale` when it differs from the model.
    Answer { stale: bool },
    /// A change ran; `refused` when the server said NO or BAD.
    Change { refused: bool },
    /// The session itself failed.
    Failed,
}

struct Outcome {
    kind: OutcomeKind,
    text: String,
}

/// Runs `op` in one session and updates the model with what a completed
/// change did.
fn run_op(backend: &Backend, user: &mut UserState, op: &Op, step: u64) -> Outcome {
    let failed = |text: String| Outcome {
        kind: OutcomeKind::Failed,
        text,
    };
    if let Op::Pop3 = op {
        let stat = match backend.pop3_login(&user.name) {
            Ok(stat) => stat,
            Err(e) => return failed(e),
        };
        let got: Option<u32> = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok());
        let want = user.model.inbox;
        let stale = got != Some(want);
        let text = if stale {
            format!("STALE: {stat}, INBOX on the store has {want}")
        } else {
            stat
        };
        return Outcome {
            kind: OutcomeKind::Answer { stale },
            text,
        };
    }
    let mut session = match backend.imap_login(&user.name) {
        Ok(session) => session,
        Err(e) => return failed(e),
    };
    let outcome = match op {
        Op::List => match session.list() {
            Ok(mut got) => {
                got.sort();
                let want = user.model.names();
                let stale = got != want;
                let text = if stale {
                    format!("STALE: got {got:?}, the store has {want:?}")
                } else {
                    format!("{got:?}")
                };
                Outcome {
                    kind: OutcomeKind::Answer { stale },
                    text,
                }
            }
            Err(e) => failed(format!("LIST: {e}")),
        },
        Op::Status(mailbox) => {
            let want = user.model.messages(mailbox);
            match session.status_messages(mailbox) {
                Ok(got) => {
                    let stale = Some(got) != want;
                    let text = if stale {
                        format!("STALE: MESSAGES {got}, the store has {want:?}")
                    } else {
                        format!("MESSAGES {got}")
                    };
                    Outcome {
                        kind: OutcomeKind::Answer { stale },
                        text,
                    }
                }
                Err(e) if is_refusal(&e) => Outcome {
                    kind: OutcomeKind::Answer { stale: true },
                    text: format!("STALE: {e}, the store has {want:?} messages"),
                },
                Err(e) => failed(format!("STATUS: {e}")),
            }
        }
        Op::Create(name) => change(session.create(name), || {
            user.model.folders.insert(name.clone(), 0);
        }),
        Op::Delete(name) => change(session.ok(&format!("DELETE {}", quote(name))), || {
            user.model.folders.remove(name);
        }),
        Op::Rename(from, to) => change(
            session.ok(&format!("RENAME {} {}", quote(from), quote(to))),
            || {
                let count = user.model.folders.remove(from).unwrap_or(0);
                user.model.folders.insert(to.clone(), count);
            },
        ),
        Op::Pop3 => unreachable!("handled above"),
        Op::Append(mailbox) => {
            let message = format!(
                "From: {u}@example.org\nTo: {u}@example.org\nSubject: soak step {step}\n\
                 Message-ID: <soak-{step}@example.org>\n\nstep {step} on {b}\n",
                u = user.name,
                b = backend.name
            );
            change(session.append(mailbox, &message), || {
                if let Some(n) = user.model.messages_mut(mailbox) {
                    *n += 1;
                }
            })
        }
    };
    if matches!(outcome.kind, OutcomeKind::Failed) {
        return outcome;
    }
    match session.logout() {
        Ok(()) => outcome,
        Err(e) => failed(format!("{} then LOGOUT: {e}", outcome.text)),
    }
}

/// The outcome of a change; `apply` updates the model when it completed.
fn change<T>(result: Result<T, String>, apply: impl FnOnce()) -> Outcome {
    match result {
        Ok(_) => {
            apply();
            Outcome {
                kind: OutcomeKind::Change { refused: false },
                text: "OK".to_string(),
            }
        }
        Err(e) if is_refusal(&e) => Outcome {
            kind: OutcomeKind::Change { refused: true },
            text: format!("REFUSED: {e}"),
        },
        Err(e) => Outcome {
            kind: OutcomeKind::Failed,
            text: e,
        },
    }
}

/// Whether an ImapClient error is the server's NO or BAD (the session
/// itself is fine) rather than a broken connection.
fn is_refusal(e: &str) -> bool {
    e.contains(" failed: NO") || e.contains(" failed: BAD")
}

/// Removes everything below `root`, as a reboot empties tmpfs. Returns how
/// many entries went.
fn wipe_root(root: &Path) -> Result<usize, String> {
    let mut removed = 0;
    let entries = fs::read_dir(root).map_err(|e| format!("readdir {}: {e}", root.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("readdir {}: {e}", root.display()))?;
        let path = entry.path();
        let meta =
            fs::symlink_metadata(&path).map_err(|e| format!("lstat {}: {e}", path.display()))?;
        if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .map_err(|e| format!("removing {}: {e}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

// ---------------------------------------------------------------------------
// Sweeps

/// The background thread: sweeps every backend with a LISTINDEX root, then
/// waits `every`, until told to stop (or a bound is reached).
#[allow(clippy::too_many_arguments)]
fn sweep_loop(
    cfg: &SoakConfig,
    cluster: &Cluster,
    names: &[&str],
    every: Duration,
    root_locks: &[Mutex<()>],
    sweep_stats: &[Mutex<SweepStats>],
    stop: &AtomicBool,
    started: Instant,
) {
    // The driver stops by max_time; allow one sweep beyond it at most.
    let deadline = started + cfg.max_time + SWEEP_TIMEOUT;
    for _ in 0..SWEEP_ROUNDS_MAX {
        let next = Instant::now() + every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return;
            }
            sleep(SWEEP_NAP);
        }
        for (i, name) in names.iter().enumerate() {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return;
            }
            let backend = cluster.backend(name);
            let result = {
                let _guard = root_locks[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                sweep_once(cfg, cluster, backend)
            };
            let mut stats = sweep_stats[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            stats.runs += 1;
            match result {
                Ok(summary) => {
                    stats.cleaned += summary.cleaned;
                    stats.busy += summary.busy;
                    stats.errors += summary.errors;
                    if summary.errors > 0 && stats.details.len() < DETAILS_MAX {
                        stats.details.push(format!("sweep: {}", summary.output));
                    }
                }
                Err(e) => {
                    stats.failures += 1;
                    if stats.details.len() < DETAILS_MAX {
                        stats.details.push(format!("sweep failed: {e}"));
                    }
                }
            }
        }
    }
}

struct SweepSummary {
    cleaned: u64,
    busy: u64,
    errors: u64,
    output: String,
}

/// Runs `nfs-hostchange usercache sweep --min-age AGE --config FILE ROOT`
/// on one backend (as root, as a timer would), with a time limit.
fn sweep_once(
    cfg: &SoakConfig,
    cluster: &Cluster,
    backend: &Backend,
) -> Result<SweepSummary, String> {
    let out_path = cluster.root().join(format!("sweep-{}.out", backend.name));
    let out = fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", out_path.display()))?;
    let mut child = Command::new(&cfg.binary)
        .args([
            "usercache",
            "sweep",
            "--min-age",
            &cfg.sweep_min_age,
            "--config",
        ])
        .arg(backend.wrapper_conf_path())
        .arg(backend.listindex_root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cfg.binary.display()))?;
    let deadline = Instant::now() + SWEEP_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no exit within {SWEEP_TIMEOUT:?}; killed"));
            }
            Err(e) => return Err(format!("waiting for the sweep: {e}")),
        }
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    let output = output.trim().to_string();
    let Some(line) = output
        .lines()
        .find(|l| l.starts_with("sweep ") && l.contains("scanned"))
    else {
        return Err(format!("{status}, no summary line: {output}"));
    };
    let summary = SweepSummary {
        cleaned: count_after(line, "cleaned").unwrap_or(0),
        busy: count_after(line, "busy").unwrap_or(0),
        errors: count_after(line, "errors").unwrap_or(0),
        output: output.clone(),
    };
    if !status.success() && summary.errors == 0 {
        return Err(format!("{status}: {output}"));
    }
    Ok(summary)
}

/// The number after `word` in a summary such as `scanned 3, cleaned 1`.
fn count_after(line: &str, word: &str) -> Option<u64> {
    let pattern = format!(" {word} ");
    let at = line.find(&pattern)? + pattern.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// Logs

/// Waits until no backend's log has grown for a moment (bounded).
fn settle_logs(cluster: &Cluster) {
    let deadline = Instant::now() + LOG_SETTLE_MAX;
    let sizes = |c: &Cluster| -> Vec<u64> { c.backends().iter().map(Backend::log_mark).collect() };
    let mut last = sizes(cluster);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(50));
        let now = sizes(cluster);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= LOG_SETTLE_QUIET {
            return;
        }
    }
}

/// Whether a Dovecot log line comes from the wrapper: its own prefix, or
/// an unprefixed stderr line of the post-login service.
pub fn is_wrapper_line(line: &str) -> bool {
    line.contains("nfs-hostchange") || line.contains("-postlogin:")
}

fn is_error_line(line: &str) -> bool {
    line.contains(" Error: ") || line.contains(" Panic: ") || line.contains(" Fatal: ")
}

/// Counts the wrapper's drops, migrations, errors and warnings, and
/// Dovecot's own errors, in one backend's log.
fn count_log(log: &str, b: &mut BackendStats, details: &mut Vec<String>) {
    for line in log.lines() {
        let wrapper = is_wrapper_line(line);
        if wrapper && line.contains(DROPPED_LINE) {
            b.drops += 1;
        }
        if wrapper && line.contains(MIGRATED_LINE) {
            b.migrations += 1;
        }
        if wrapper && line.contains(" Warning: ") {
            b.wrapper_warnings += 1;
        }
        if is_error_line(line) {
            if wrapper {
                b.wrapper_errors += 1;
            } else {
                b.dovecot_errors += 1;
            }
            push_detail(details, format!("{} log: {line}", b.name));
        }
    }
}

// ---------------------------------------------------------------------------
// The OLD backend

/// Starts the wrapped (or control) backends `names` with migration on, and
/// one more, OLD_BACKEND, that runs without a post-login script and keeps
/// the list index on the store, as a backend not yet switched over does.
fn start_with_old_backend(
    label: &str,
    names: &[&str],
    postlogin: &Postlogin,
) -> Result<Cluster, String> {
    let mut specs: Vec<(&str, BackendKind)> = names
        .iter()
        .map(|name| {
            let kind = BackendKind::Current {
                postlogin: postlogin.clone(),
                migration: true,
            };
            (*name, kind)
        })
        .collect();
    specs.push((OLD_BACKEND, BackendKind::Old));
    Cluster::start_mixed(label, &specs)
}
