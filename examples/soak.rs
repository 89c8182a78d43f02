//! The long cluster soak on real Dovecot 2.3 (tests/common/soak.rs): users
//! wandering across four backends that share one mail store, sweeps and
//! wiped LISTINDEX roots meanwhile, every LIST and STATUS answer checked
//! against a model of the store. Runs the wrapped cluster, then the same
//! seed with a plain exec instead of the wrapper (the control run, which
//! must find stale answers), and prints a table for each.
//!
//! Usage, as root with Dovecot and the user nfshc-test installed
//! (`sudo bash scripts/install-deps`):
//!
//!     cargo build --release
//!     cargo run --release --example soak -- --moves 1000 --seed 7
//!
//! Exit status 0 when the wrapped runs saw no stale answer and no wrapper
//! error and the control run saw stale answers, 1 otherwise, 2 for bad
//! usage.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use common::soak::{self, SoakConfig, SoakReport};
use common::Postlogin;

const USAGE: &str = "\
usage: soak [options]
  --moves N          stop after N moves (default 1000)
  --seed N           seed of the driver (default 1)
  --users N          users (default 8)
  --backends N       wrapped backends (default 4, at most 6)
  --max-ops N        stop after N IMAP sessions (default 20 x moves)
  --max-time SECS    stop after SECS seconds per run (default 1800)
  --sweep-every SECS sweep every backend this often (default 2; 0: back to back)
  --no-sweep         no sweeps
  --one-bucket       users whose LISTINDEX directories share one %2.256Nu directory
  --min-age AGE      the sweep's --min-age (default 1s)
  --wipe-one-in N    wipe a LISTINDEX root before 1 op in N (default 60; 0: never)
  --runs LIST        comma-separated: wrapped, control, migration
                     (default wrapped,control,migration)
  --binary PATH      the nfs-hostchange binary (default: target/release/nfs-hostchange
                     next to this example)
  --verbose          print every op
";

struct Options {
    cfg: SoakConfig,
    runs: Vec<String>,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !common::prerequisites_or_skip("soak") {
        return ExitCode::FAILURE;
    }
    if let Ok(version) = common::system::dovecot_version() {
        println!(
            "Dovecot {version}; nfs-hostchange {}",
            options.cfg.binary.display()
        );
    }

    // Each run returns before the next starts: its cluster is stopped by
    // then, whatever happened.
    let mut ok = true;
    for run in &options.runs {
        let mut cfg = options.cfg.clone();
        let (label, postlogin, old_backend) = match run.as_str() {
            "wrapped" => ("soakw", Postlogin::Wrapper(cfg.binary.clone()), false),
            "control" => ("soakc", Postlogin::Control, false),
            "migration" => ("soakm", Postlogin::Wrapper(cfg.binary.clone()), true),
            _ => unreachable!("checked by parse"),
        };
        cfg.label = label.to_string();
        cfg.postlogin = postlogin;
        cfg.old_backend = old_backend;
        println!();
        let report = match soak::run(&cfg) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("soak {run}: {e}");
                ok = false;
                continue;
            }
        };
        print!("{}", report.table());
        let verdict = verdict(run, &report);
        println!("  verdict: {verdict}");
        ok &= verdict.starts_with("pass");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn verdict(run: &str, report: &SoakReport) -> String {
    if run == "control" {
        return if report.stale_answers() > 0 {
            "pass: without the wrapper the soak sees stale answers".to_string()
        } else {
            "FAIL: the control run saw no stale answer; the soak cannot see the bug".to_string()
        };
    }
    let problems = [
        ("stale answers", report.stale_answers()),
        ("wrapper errors", report.wrapper_errors()),
        ("failed sessions", report.failed_sessions),
        ("store/model mismatches", report.store_mismatches),
        ("refused changes", report.refused),
        ("sweep failures", report.sweep_failures()),
    ];
    let found: Vec<String> = problems
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    if found.is_empty() {
        "pass: no stale answer, no wrapper error".to_string()
    } else {
        format!("FAIL: {}", found.join(", "))
    }
}

/// Parses the options; `None` for `--help`.
fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut cfg = SoakConfig::new("soak", 1, Postlogin::Control, default_binary()?);
    cfg.moves = 1000;
    cfg.max_time = Duration::from_secs(1800);
    let mut max_ops = None;
    let mut runs = vec![
        "wrapped".to_string(),
        "control".to_string(),
        "migration".to_string(),
    ];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--moves" => cfg.moves = number(&arg, &value()?)?,
            "--seed" => cfg.seed = number(&arg, &value()?)?,
            "--users" => cfg.users = number(&arg, &value()?)? as usize,
            "--backends" => cfg.backends = number(&arg, &value()?)? as usize,
            "--max-ops" => max_ops = Some(number(&arg, &value()?)?),
            "--max-time" => cfg.max_time = Duration::from_secs(number(&arg, &value()?)?),
            "--sweep-every" => {
                let text = value()?;
                let secs: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("{arg}: not a number of seconds: {text:?}"))?;
                cfg.sweep_every = Some(Duration::from_secs_f64(secs));
            }
            "--no-sweep" => cfg.sweep_every = None,
            "--one-bucket" => cfg.one_bucket = true,
            "--min-age" => cfg.sweep_min_age = value()?,
            "--wipe-one-in" => cfg.wipe_one_in = number(&arg, &value()?)?,
            "--runs" => {
                runs = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = runs
                    .iter()
                    .find(|r| !["wrapped", "control", "migration"].contains(&r.as_str()))
                {
                    return Err(format!("unknown run {bad:?}"));
                }
            }
            "--binary" => cfg.binary = PathBuf::from(value()?),
            "--verbose" | "-v" => cfg.verbose = true,
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    if cfg.users == 0 || cfg.backends == 0 || cfg.backends > soak::BACKEND_NAMES.len() {
        return Err(format!(
            "--users must be at least 1 and --backends 1 to {}",
            soak::BACKEND_NAMES.len()
        ));
    }
    cfg.max_ops = max_ops.unwrap_or(cfg.moves.saturating_mul(20).max(100));
    if !cfg.binary.is_absolute() {
        cfg.binary = std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(&cfg.binary);
    }
    if !cfg.binary.is_file() {
        return Err(format!(
            "no nfs-hostchange binary at {}: run `cargo build --release` first, or pass --binary",
            cfg.binary.display()
        ));
    }
    Ok(Some(Options { cfg, runs }))
}

fn number(option: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{option}: not a number: {value:?}"))
}

/// `target/release/nfs-hostchange` when this example is
/// `target/release/examples/soak`.
fn default_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("nfs-hostchange"))
        .ok_or_else(|| format!("no directory above {}", exe.display()))
}
