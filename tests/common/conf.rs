//! Renders the operator files in `conf.d/` for one test backend, by plain
//! text substitution. Every substituted text must occur in the file, so the
//! shipped files and these tests cannot drift apart unnoticed.

use std::path::{Path, PathBuf};

/// The Dovecot snippet operators include.
pub const SNIPPET: &str = "90-nfs-hostchange.conf";
/// The example configuration of the wrapper.
pub const WRAPPER_CONF: &str = "nfs-hostchange.conf";

/// The LISTINDEX root in both files; replaced by the backend's own root.
pub const LISTINDEX_ROOT: &str = "/dev/shm/dovecot-listindex";
/// The post-login command in the snippet; replaced by the binary under test.
pub const POSTLOGIN_COMMAND: &str = "/usr/local/bin/nfs-hostchange postlogin";
/// The commented host name line of the wrapper configuration.
pub const HOSTNAME_LINE: &str = "#nfs_hostchange_hostname = backend-a";

/// `conf.d/` of this repository.
pub fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf.d")
}

pub fn read_conf(name: &str) -> Result<String, String> {
    let path = conf_dir().join(name);
    std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Replaces every occurrence of `from`, which must occur at least once.
fn substitute(text: &str, file: &str, from: &str, to: &str) -> Result<String, String> {
    if !text.contains(from) {
        return Err(format!(
            "conf.d/{file} no longer contains {from:?}; the test harness \
             (tests/common/conf.rs) substitutes it and must be updated with it"
        ));
    }
    Ok(text.replace(from, to))
}

/// `conf.d/90-nfs-hostchange.conf` for one backend: its own LISTINDEX root,
/// and `postlogin_command` (the words after `script-login -d`) instead of
/// the installed wrapper.
pub fn render_snippet(listindex_root: &Path, postlogin_command: &str) -> Result<String, String> {
    let text = read_conf(SNIPPET)?;
    let root = path_str(listindex_root)?;
    let text = substitute(&text, SNIPPET, LISTINDEX_ROOT, root)?;
    substitute(&text, SNIPPET, POSTLOGIN_COMMAND, postlogin_command)
}

/// `conf.d/nfs-hostchange.conf` for one backend: its own LISTINDEX root and
/// its name as `nfs_hostchange_hostname`.
pub fn render_wrapper_conf(listindex_root: &Path, hostname: &str) -> Result<String, String> {
    let text = read_conf(WRAPPER_CONF)?;
    let root = path_str(listindex_root)?;
    let text = substitute(&text, WRAPPER_CONF, LISTINDEX_ROOT, root)?;
    substitute(
        &text,
        WRAPPER_CONF,
        HOSTNAME_LINE,
        &format!("nfs_hostchange_hostname = {hostname}"),
    )
}

/// The `mail_location` value a rendered file sets.
pub fn mail_location(rendered: &str) -> Option<&str> {
    rendered.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "mail_location").then(|| value.trim())
    })
}

/// Paths go into Dovecot's configuration unquoted, where spaces split words.
pub fn path_str(path: &Path) -> Result<&str, String> {
    match path.to_str() {
        Some(s) if !s.contains(char::is_whitespace) => Ok(s),
        _ => Err(format!(
            "unusable path for a Dovecot config: {}",
            path.display()
        )),
    }
}
