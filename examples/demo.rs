//! Shows the stale folder list bug on two real Dovecot backends, then the
//! same steps with nfs-hostchange as the post-login script.
//!
//! Usage: `cargo run --release --example demo -- /abs/path/to/nfs-hostchange`
//! as root, with Dovecot and the user nfshc-test installed (`scripts/demo`
//! does all of it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use common::conf;
use common::scenario::{stale_folder_list, Observations, FOLDER, LOG_WAIT};
use common::{Cluster, Postlogin};

const A: &str = "backend-a";
const B: &str = "backend-b";
const USER: &str = "carol";

fn main() -> ExitCode {
    let Some(wrapper) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: demo /absolute/path/to/nfs-hostchange");
        return ExitCode::from(2);
    };
    if !common::prerequisites_or_skip("demo") {
        return ExitCode::FAILURE;
    }
    // Errors come back as values so that the clusters are dropped, and their
    // Dovecot instances stopped, before we exit.
    match run(wrapper) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(wrapper: PathBuf) -> Result<(), String> {
    println!(
        "{}",
        common::system::dovecot_version().map(|v| format!("Dovecot {v}"))?
    );
    println!(
        "Two Dovecot instances on 127.0.0.1 play two NFS backends: one shared \
         Maildir store,\neach backend with its own LISTINDEX directory (tmpfs in \
         production), configured\nfrom conf.d/{} with mailbox_list_index_very_dirty_syncs \
         = yes.",
        conf::SNIPPET
    );

    println!("\n== 1. Without nfs-hostchange: the post-login script is /usr/bin/env ==\n");
    {
        let cluster = Cluster::start("demo-ctl", &[A, B], &Postlogin::Control)?;
        describe(&cluster)?;
        cluster.provision_user(USER)?;
        let seen = stale_folder_list(&cluster, A, B, USER, false, &mut print_step)?;
        verdict(&seen);
    }

    println!("\n== 2. With nfs-hostchange as the post-login script ==\n");
    {
        let cluster = Cluster::start("demo-wrap", &[A, B], &Postlogin::Wrapper(wrapper))?;
        describe(&cluster)?;
        cluster.provision_user(USER)?;
        let a = cluster.backend(A);
        let mark = a.log_mark();
        let seen = stale_folder_list(&cluster, A, B, USER, false, &mut print_step)?;
        verdict(&seen);
        match a.wait_for_log(mark, LOG_WAIT, |l| l.contains("nfs-hostchange")) {
            Ok(line) => println!("  {A}'s Dovecot log says:\n    {line}"),
            Err(_) => println!("  {A}'s Dovecot log has no nfs-hostchange line"),
        }
        let record = cluster.maildir(USER).join(".lasthost");
        match std::fs::read_to_string(&record) {
            Ok(text) => println!(
                "  {} on the shared store: {:?}",
                record.display(),
                text.trim()
            ),
            Err(e) => println!("  {}: {e}", record.display()),
        }
    }
    Ok(())
}

fn print_step(line: String) {
    println!("  {line}");
}

/// Prints each backend's ports and post-login command.
fn describe(cluster: &Cluster) -> Result<(), String> {
    for backend in cluster.backends() {
        let snippet = backend.conf_path().with_file_name(conf::SNIPPET);
        let text = std::fs::read_to_string(&snippet)
            .map_err(|e| format!("reading {}: {e}", snippet.display()))?;
        let command = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("executable = script-login"))
            .unwrap_or("?");
        println!(
            "  {}: IMAP 127.0.0.1:{}, POP3 127.0.0.1:{}, LISTINDEX under {}\n    {command}",
            backend.name,
            backend.imap_port(),
            backend.pop3_port(),
            backend.listindex_root().display()
        );
    }
    println!();
    Ok(())
}

fn verdict(seen: &Observations) {
    if seen.return_list.iter().any(|m| m == FOLDER) {
        println!("  => {A} lists {FOLDER}: its list index is current.");
    } else {
        println!(
            "  => {A} answers from its stale list index: {FOLDER} is missing, although \
             it exists\n     on the shared store and STATUS finds it."
        );
    }
}
