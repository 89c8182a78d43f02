//! The CI-sized cluster soak on real Dovecot 2.3 (see tests/common/soak.rs):
//! four backends sharing one mail store, eight users moving between them at
//! random for a few hundred IMAP sessions, sweeps every two seconds and now
//! and then a wiped LISTINDEX root; every LIST and STATUS answer is checked
//! against a model of the store.
//!
//! With the wrapper no answer may be stale and the wrapper may log no error,
//! also with a fifth, OLD backend (no wrapper, list index on the store) and
//! migration on in the others. The same run with a plain exec instead of
//! the wrapper must find stale answers: otherwise the soak could not see the
//! bug and proves nothing.
//!
//! The seed is fixed (`NFSHC_SOAK_SEED` overrides it). The long run is
//! `cargo run --release --example soak -- --moves 1000 --seed N`.
//!
//! Needs root, Dovecot and the user nfshc-test, as tests/e2e_dovecot.rs.

mod common;

use std::path::PathBuf;

use common::soak::{self, SoakConfig, SoakReport};
use common::Postlogin;

/// Moves per CI run: a few hundred sessions, well under a minute each.
const CI_MOVES: u64 = 250;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nfs-hostchange"))
}

fn seed() -> u64 {
    std::env::var("NFSHC_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_601)
}

fn run(label: &str, postlogin: Postlogin, old_backend: bool) -> SoakReport {
    let mut cfg = SoakConfig::new(label, seed(), postlogin, binary());
    cfg.moves = CI_MOVES;
    cfg.old_backend = old_backend;
    let report = soak::run(&cfg).unwrap_or_else(|e| panic!("soak {label}: {e}"));
    // Shown with --nocapture, and with any failure below.
    eprintln!("{}", report.table());
    report
}

/// What a clean wrapped run must show.
fn assert_clean(report: &SoakReport) {
    let table = report.table();
    assert!(report.moves >= CI_MOVES, "too few moves:\n{table}");
    assert!(report.answers_checked > 0, "no answer checked:\n{table}");
    assert_eq!(report.stale_answers(), 0, "stale answers:\n{table}");
    assert_eq!(report.wrapper_errors(), 0, "wrapper errors:\n{table}");
    assert_eq!(report.failed_sessions, 0, "failed sessions:\n{table}");
    assert_eq!(
        report.store_mismatches, 0,
        "store/model mismatches:\n{table}"
    );
    assert_eq!(report.refused, 0, "refused changes:\n{table}");
    assert_eq!(report.sweep_failures(), 0, "sweep failures:\n{table}");
    let drops: u64 = report.backends.iter().map(|b| b.drops).sum();
    assert!(
        drops > 0,
        "the wrapper never dropped a list index:\n{table}"
    );
}

#[test]
fn soak_with_wrapper_has_no_stale_answer() {
    if !common::prerequisites_or_skip("soak_with_wrapper_has_no_stale_answer") {
        return;
    }
    let report = run("soakw", Postlogin::Wrapper(binary()), false);
    assert_clean(&report);
    let cleaned: u64 = report.backends.iter().map(|b| b.cleaned).sum();
    assert!(
        cleaned > 0,
        "the sweeps cleaned no user:\n{}",
        report.table()
    );
}

#[test]
fn soak_control_run_sees_stale_answers() {
    if !common::prerequisites_or_skip("soak_control_run_sees_stale_answers") {
        return;
    }
    let report = run("soakc", Postlogin::Control, false);
    let table = report.table();
    assert!(report.moves >= CI_MOVES, "too few moves:\n{table}");
    assert!(
        report.stale_answers() > 0,
        "without the wrapper the soak found no stale answer, so it cannot see \
         the bug and the wrapped run proves nothing:\n{table}"
    );
}

/// The migration variant: the four wrapped backends with migration on, and
/// a fifth, OLD, that runs without the wrapper and keeps the list index on
/// the store. Users wander across all five; still nothing may go stale.
#[test]
fn soak_with_old_backend_and_migration_has_no_stale_answer() {
    if !common::prerequisites_or_skip("soak_with_old_backend_and_migration_has_no_stale_answer") {
        return;
    }
    let report = run("soakm", Postlogin::Wrapper(binary()), true);
    assert_clean(&report);
    let migrations: u64 = report.backends.iter().map(|b| b.migrations).sum();
    assert!(
        migrations > 0,
        "no list index was migrated:\n{}",
        report.table()
    );
}
