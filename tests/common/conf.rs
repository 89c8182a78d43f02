//! Renders the operator files in `conf.d/` for one test backend, by plain
//! text substitution. Every substituted text must occur in the file, so the
//! shipped files and these tests cannot drift apart unnoticed.
//!
//! `NFSHC_SNIPPET`, when set, names the Dovecot snippet to render instead of
//! `conf.d/90-nfs-hostchange.conf`: the Debian package's example, which
//! runs `/usr/bin/nfs-hostchange` (scripts/package-test sets it).

use std::path::{Path, PathBuf};

/// The Dovecot snippet operators include.
pub const SNIPPET: &str = "90-nfs-hostchange.conf";
/// The example configuration of the wrapper.
pub const WRAPPER_CONF: &str = "nfs-hostchange.conf";

/// The LISTINDEX root in both files; replaced by the backend's own root.
pub const LISTINDEX_ROOT: &str = "/dev/shm/dovecot-listindex";
/// The post-login command in the snippet; replaced by the binary under test.
pub const POSTLOGIN_COMMAND: &str = "/usr/local/bin/nfs-hostchange postlogin";
/// The post-login command in the Debian package's example snippet.
pub const PACKAGED_POSTLOGIN_COMMAND: &str = "/usr/bin/nfs-hostchange postlogin";
/// Names a snippet to render instead of `conf.d/90-nfs-hostchange.conf`.
pub const SNIPPET_ENV: &str = "NFSHC_SNIPPET";
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

/// The Dovecot snippet the backends run: the file `NFSHC_SNIPPET` names
/// (with the packaged post-login command) when set and not empty, else
/// `conf.d/90-nfs-hostchange.conf` (with the from-source one).
pub struct SnippetSource {
    pub path: PathBuf,
    /// How errors name the file.
    pub label: String,
    /// The post-login command the file must contain.
    pub postlogin_command: &'static str,
}

pub fn snippet_source() -> SnippetSource {
    match std::env::var_os(SNIPPET_ENV) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            SnippetSource {
                label: format!("{} ({SNIPPET_ENV})", path.display()),
                path,
                postlogin_command: PACKAGED_POSTLOGIN_COMMAND,
            }
        }
        _ => SnippetSource {
            path: conf_dir().join(SNIPPET),
            label: format!("conf.d/{SNIPPET}"),
            postlogin_command: POSTLOGIN_COMMAND,
        },
    }
}

/// The text of the snippet `snippet_source` names.
pub fn read_snippet() -> Result<(SnippetSource, String), String> {
    let source = snippet_source();
    let text = std::fs::read_to_string(&source.path)
        .map_err(|e| format!("reading {}: {e}", source.label))?;
    Ok((source, text))
}

/// Replaces every occurrence of `from`, which must occur at least once.
fn substitute(text: &str, file: &str, from: &str, to: &str) -> Result<String, String> {
    substitute_in(text, &format!("conf.d/{file}"), from, to)
}

/// `substitute` for a file named by `label`.
fn substitute_in(text: &str, label: &str, from: &str, to: &str) -> Result<String, String> {
    if !text.contains(from) {
        return Err(format!(
            "{label} no longer contains {from:?}; the test harness \
             (tests/common/conf.rs) substitutes it and must be updated with it"
        ));
    }
    Ok(text.replace(from, to))
}

/// `conf.d/90-nfs-hostchange.conf` (or the `NFSHC_SNIPPET` file) for one
/// backend: its own LISTINDEX root, and `postlogin_command` (the words after
/// `script-login -d`) instead of the installed wrapper.
pub fn render_snippet(listindex_root: &Path, postlogin_command: &str) -> Result<String, String> {
    let (source, text) = read_snippet()?;
    let root = path_str(listindex_root)?;
    let text = substitute_in(&text, &source.label, LISTINDEX_ROOT, root)?;
    substitute_in(
        &text,
        &source.label,
        source.postlogin_command,
        postlogin_command,
    )
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

/// The migration line of the wrapper configuration, off as shipped.
pub const MIGRATION_OFF_LINE: &str = "nfs_hostchange_migration = no";
/// What `MIGRATION_OFF_LINE` becomes on a backend with migration on.
pub const MIGRATION_ON_LINE: &str = "nfs_hostchange_migration = yes";

/// `conf.d/nfs-hostchange.conf` for one backend, as `render_wrapper_conf`
/// renders it, with `nfs_hostchange_migration = yes` when `migration`.
pub fn render_wrapper_conf_with(
    listindex_root: &Path,
    hostname: &str,
    migration: bool,
) -> Result<String, String> {
    let text = render_wrapper_conf(listindex_root, hostname)?;
    if !migration {
        return Ok(text);
    }
    enable_migration(&text)
}

/// Turns the shipped `nfs_hostchange_migration = no` line of a wrapper
/// configuration into `= yes`; an error when the line is not there.
pub fn enable_migration(wrapper_conf: &str) -> Result<String, String> {
    if !wrapper_conf
        .lines()
        .any(|line| line.trim() == MIGRATION_OFF_LINE)
    {
        return Err(format!(
            "conf.d/{WRAPPER_CONF} has no line {MIGRATION_OFF_LINE:?}; the test harness \
             (tests/common/conf.rs) turns migration on by substituting it and must be \
             updated with it"
        ));
    }
    substitute(
        wrapper_conf,
        WRAPPER_CONF,
        MIGRATION_OFF_LINE,
        MIGRATION_ON_LINE,
    )
}

/// `location` without its `:LISTINDEX=...` part (up to the next `:` or the
/// end), which an OLD backend does not have.
fn without_listindex(location: &str) -> Result<String, String> {
    const KEY: &str = ":LISTINDEX=";
    let start = location.find(KEY).ok_or_else(|| {
        format!(
            "the mail_location of conf.d/{SNIPPET} has no {KEY:?}: {location:?}; \
             tests/common/conf.rs derives the OLD backend's from it"
        )
    })?;
    let end = location[start + KEY.len()..]
        .find(':')
        .map_or(location.len(), |i| start + KEY.len() + i);
    Ok(format!("{}{}", &location[..start], &location[end..]))
}

/// The Dovecot snippet of an OLD backend, one from before nfs-hostchange:
/// the shipped mail_location without LISTINDEX (so the list index lives in
/// INDEX, on the shared store), the list index on with the same NFS
/// optimisation, and no post-login service.
pub fn render_old_snippet() -> Result<String, String> {
    let (source, shipped) = read_snippet()?;
    let location =
        mail_location(&shipped).ok_or_else(|| format!("{} sets no mail_location", source.label))?;
    let location = without_listindex(location)?;
    Ok(format!(
        "# An OLD backend (no nfs-hostchange), written by tests/common/conf.rs:
# the list index lives on the shared store, next to the mail.
mail_location = {location}
mailbox_list_index = yes
mailbox_list_index_very_dirty_syncs = yes
"
    ))
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
