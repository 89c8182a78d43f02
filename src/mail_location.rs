//! Dovecot 2.3's `mail_location` (`mailbox-list.c`) and Dovecot 2.4's
//! settings that replace it (`mail_path`, `mail_index_path`,
//! `mailbox_list_index_prefix`), and the paths this program works on for
//! one user: INDEX on NFS, and LISTINDEX in tmpfs.
//!
//! Which variable syntax a template uses follows from the setting it is
//! in: `mail_location` (and the userdb's `MAIL`) is Dovecot 2.3's, expanded
//! as `%u`, `%2.256Nu`...; the 2.4 settings (and the userdb's `MAIL_PATH`...)
//! are Dovecot 2.4's, expanded as `%{user | md5 | ...}`. That is how the two
//! Dovecot versions read them, so no template is ever guessed at.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::log::Shown;
use crate::var24;
use crate::varexpand::{self, ExpandError, Vars};

/// The list index file name when LISTINDEX gives none.
pub const DEFAULT_LIST_INDEX_PREFIX: &[u8] = b"dovecot.list.index";

/// `mail_location` split into its parts, not yet expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLocation {
    /// The storage format (`maildir`, `mdbox`, ...), when one is given.
    pub format: Option<Vec<u8>>,
    /// The mail root directory.
    pub root: Vec<u8>,
    /// `KEY=VALUE` parts in order (a bare `KEY` has an empty value).
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MailLocation {
    /// Splits a mail_location the way Dovecot 2.3 does: an optional
    /// `format:` prefix, then parts separated by `:`, where `::` stands for
    /// a literal colon.
    pub fn parse(location: &[u8]) -> MailLocation {
        let (format, data) = split_format(location);
        let mut parts = split_parts(data).into_iter();
        let root = parts.next().unwrap_or_default();
        let keys = parts
            .filter(|p| !p.is_empty())
            .map(|part| match part.iter().position(|&b| b == b'=') {
                Some(eq) => (part[..eq].to_vec(), part[eq + 1..].to_vec()),
                None => (part, Vec::new()),
            })
            .collect();
        MailLocation { format, root, keys }
    }

    /// The value of `KEY=` (the last one wins, as in Dovecot).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .rev()
            .find(|(k, _)| k.as_slice() == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// The `format:` prefix is a plain lowercase word followed by `:`.
fn split_format(location: &[u8]) -> (Option<Vec<u8>>, &[u8]) {
    if let Some(colon) = location.iter().position(|&b| b == b':') {
        let word = &location[..colon];
        if !word.is_empty()
            && word
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return (Some(word.to_vec()), &location[colon + 1..]);
        }
    }
    (None, location)
}

/// Splits on `:`; an empty part joins its neighbours with a literal `:`,
/// and a trailing `:` is ignored (Dovecot's `split_next_arg`).
fn split_parts(data: &[u8]) -> Vec<Vec<u8>> {
    let raw: Vec<&[u8]> = data.split(|&b| b == b':').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let mut part = raw[i].to_vec();
        i += 1;
        while i < raw.len() && raw[i].is_empty() {
            i += 1;
            if i == raw.len() {
                break;
            }
            part.push(b':');
            part.extend_from_slice(raw[i]);
            i += 1;
        }
        out.push(part);
    }
    out
}

/// Why a user's paths could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The settings cannot work with this program (a configuration error).
    Config(String),
    /// A template could not be expanded.
    Expand(String, ExpandError),
    /// A template in Dovecot 2.4 syntax could not be expanded.
    Expand24(String, var24::ExpandError),
    /// This user's values would lead outside the LISTINDEX root, or make
    /// Dovecot read the location differently: refused.
    Refused(String),
    /// INDEX could not be worked out for this user (HOME missing, relative
    /// or with `..` parts, say), but LISTINDEX could: the caller can still
    /// drop the list index there. `paths.index` is empty.
    Index {
        /// Every path but INDEX.
        paths: Box<UserPaths>,
        /// Why INDEX could not be worked out.
        error: Box<PathError>,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Config(m) => write!(f, "configuration error: {m}"),
            PathError::Expand(what, e) => write!(f, "configuration error: {what}: {e}"),
            PathError::Expand24(what, e) => write!(f, "configuration error: {what}: {e}"),
            PathError::Refused(m) => write!(f, "refused: {m}"),
            PathError::Index { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for PathError {}

impl PathError {
    /// Whether the template itself is wrong (an unknown variable or filter,
    /// bad syntax), whatever the user's values.
    pub fn is_template_error(&self) -> bool {
        match self {
            PathError::Expand(_, e) => matches!(
                e,
                ExpandError::UnknownVariable(_) | ExpandError::Malformed { .. }
            ),
            PathError::Expand24(_, e) => matches!(
                e,
                var24::ExpandError::Syntax { .. }
                    | var24::ExpandError::UnknownVariable(_)
                    | var24::ExpandError::UnsupportedFilter(_)
            ),
            _ => false,
        }
    }
}

/// The paths this program works on for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPaths {
    /// INDEX: the user's index root on NFS (`INDEX=`, else the mail root).
    pub index: PathBuf,
    /// The static part of the LISTINDEX template, before its first
    /// variable: the directory that holds every user's LISTINDEX.
    pub listindex_root: PathBuf,
    /// The user's LISTINDEX directory, below `listindex_root`.
    pub listindex: PathBuf,
    /// The part of `listindex` below the root, one entry per directory.
    pub listindex_parts: Vec<OsString>,
    /// The list index file name prefix (`dovecot.list.index`).
    pub prefix: OsString,
}

/// The file name of the host record, both on NFS (INDEX/.lasthost) and in
/// the local LISTINDEX directory.
pub const LASTHOST: &str = ".lasthost";

/// Which variable syntax a template is written in; it follows from the
/// setting the template is in (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Dovecot 2.3: `%u`, `%2.256Nu`, `%{user}` (`mail_location`, `MAIL`).
    V23,
    /// Dovecot 2.4: `%{user | md5 | substr(0, 8) % 256 | hex(2)}`
    /// (`mail_path`, `mail_index_path`, `mailbox_list_index_prefix`).
    V24,
}

impl Syntax {
    /// Expands `template`; `what` names it in errors.
    fn expand(self, what: &str, template: &[u8], vars: &Vars<'_>) -> Result<Vec<u8>, PathError> {
        match self {
            Syntax::V23 => {
                varexpand::expand(template, vars).map_err(|e| PathError::Expand(what.into(), e))
            }
            Syntax::V24 => {
                var24::expand(template, vars).map_err(|e| PathError::Expand24(what.into(), e))
            }
        }
    }

    /// The offset of the first variable in `template`.
    fn first_variable(self, template: &[u8]) -> Option<usize> {
        match self {
            Syntax::V23 => varexpand::first_variable(template),
            Syntax::V24 => var24::first_variable(template),
        }
    }

    /// `text` written so that expanding it gives it back.
    fn escape(self, text: &[u8]) -> Vec<u8> {
        match self {
            Syntax::V23 => {
                let mut out = Vec::with_capacity(text.len());
                for &b in text {
                    if b == b'%' {
                        out.push(b'%');
                    }
                    out.push(b);
                }
                out
            }
            Syntax::V24 => var24::escape(text),
        }
    }
}

/// What the settings are called in one Dovecot version, for messages.
struct Names {
    syntax: Syntax,
    /// The setting (or part of it) that `~/` appears in.
    location: &'static str,
    /// LISTINDEX, as a setting.
    list: &'static str,
    /// A variable to give as an example.
    example_var: &'static str,
    /// A LISTINDEX value to give as an example.
    example: &'static str,
}

const NAMES_23: Names = Names {
    syntax: Syntax::V23,
    location: "mail_location",
    list: "LISTINDEX",
    example_var: "%u",
    example: "/dev/shm/dovecot-listindex/%u/dovecot.list.index",
};

const NAMES_24: Names = Names {
    syntax: Syntax::V24,
    location: "mail_path",
    list: "mailbox_list_index_prefix",
    example_var: "%{user}",
    example: "/dev/shm/dovecot-listindex/%{user}/dovecot.list.index",
};

/// The templates a user's paths are built from, whichever Dovecot version
/// the settings are for.
struct Templates<'t> {
    names: &'static Names,
    /// INDEX: `INDEX=` (or mail_index_path) when set, else the mail root
    /// (or mail_path); empty when neither is set.
    index: &'t [u8],
    /// The setting INDEX came from, for messages.
    index_setting: &'static str,
    /// Whether INDEX is `MEMORY`.
    index_in_memory: bool,
    /// LISTINDEX (or mailbox_list_index_prefix), when set.
    list: Option<&'t [u8]>,
}

impl<'t> Templates<'t> {
    fn of_mail_location(loc: &'t MailLocation) -> Self {
        let index_in_memory = loc.get("INDEX") == Some(b"MEMORY");
        let index = match loc.get("INDEX") {
            Some(v) if !v.is_empty() => v,
            _ => loc.root.as_slice(),
        };
        Templates {
            names: &NAMES_23,
            index,
            index_setting: "INDEX",
            index_in_memory,
            list: loc.get("LISTINDEX"),
        }
    }

    fn of_settings_24(set: &Settings24<'t>) -> Self {
        let nonempty = |v: Option<&'t [u8]>| v.filter(|v| !v.is_empty());
        let (index, index_setting) = match nonempty(set.mail_index_path) {
            Some(index) => (index, "mail_index_path"),
            None => (nonempty(set.mail_path).unwrap_or_default(), "mail_path"),
        };
        Templates {
            names: &NAMES_24,
            index,
            index_setting,
            index_in_memory: set.mail_index_path == Some(b"MEMORY"),
            list: nonempty(set.mailbox_list_index_prefix),
        }
    }
}

/// Dovecot 2.4's settings that replace mail_location, as far as this
/// program needs them. Values are templates in 2.4 syntax.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings24<'a> {
    /// `mail_path`: the mail root directory.
    pub mail_path: Option<&'a [u8]>,
    /// `mail_index_path`: the index root when not the mail root (INDEX).
    pub mail_index_path: Option<&'a [u8]>,
    /// `mailbox_list_index_prefix`: the list index file name, with an
    /// absolute directory in front of it here (LISTINDEX).
    pub mailbox_list_index_prefix: Option<&'a [u8]>,
}

/// Where a backend's settings say a user's mail and indexes are: a Dovecot
/// 2.3 mail_location, or the Dovecot 2.4 settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location<'a> {
    /// Dovecot 2.3's `mail_location`.
    MailLocation(&'a [u8]),
    /// Dovecot 2.4's `mail_path`, `mail_index_path` and
    /// `mailbox_list_index_prefix`.
    Dovecot24(Settings24<'a>),
}

impl Location<'_> {
    /// The user's paths; see [`resolve`].
    pub fn resolve(&self, vars: &Vars<'_>) -> Result<UserPaths, PathError> {
        match self {
            Location::MailLocation(location) => resolve(location, vars),
            Location::Dovecot24(set) => resolve_24(set, vars),
        }
    }

    /// Where every user's LISTINDEX lives; see [`layout`].
    pub fn layout(&self) -> Result<Layout, PathError> {
        match self {
            Location::MailLocation(location) => layout(location),
            Location::Dovecot24(set) => layout_24(set),
        }
    }

    /// The variable syntax of the templates.
    pub fn syntax(&self) -> Syntax {
        match self {
            Location::MailLocation(_) => Syntax::V23,
            Location::Dovecot24(_) => Syntax::V24,
        }
    }

    /// The setting to name in messages: `mail_location` or `mail_path`.
    pub fn setting(&self) -> &'static str {
        match self {
            Location::MailLocation(_) => "mail_location",
            Location::Dovecot24(_) => "mail_path",
        }
    }
}

/// Works out INDEX, LISTINDEX and the prefix from a mail_location and the
/// user's variables. Values are expanded the way Dovecot expands them, then
/// checked: LISTINDEX must be absolute, have a variable part, and stay
/// inside its root at the depth its template gives.
pub fn resolve(location: &[u8], vars: &Vars<'_>) -> Result<UserPaths, PathError> {
    let loc = MailLocation::parse(location);
    resolve_templates(&Templates::of_mail_location(&loc), vars)
}

/// [`resolve`] for Dovecot 2.4's settings: INDEX is `mail_index_path`, else
/// `mail_path`; LISTINDEX is the directory of `mailbox_list_index_prefix`.
pub fn resolve_24(set: &Settings24<'_>, vars: &Vars<'_>) -> Result<UserPaths, PathError> {
    resolve_templates(&Templates::of_settings_24(set), vars)
}

fn resolve_templates(t: &Templates<'_>, vars: &Vars<'_>) -> Result<UserPaths, PathError> {
    let names = t.names;
    let config = |m: &str| PathError::Config(m.to_string());

    // INDEX must be on disk somewhere (it is worked out last, below).
    if t.index_in_memory {
        return Err(match names.syntax {
            Syntax::V23 => config(
                "INDEX=MEMORY keeps no index files, so there is no list index to manage",
            ),
            Syntax::V24 => config(
                "mail_index_path = MEMORY keeps no index files, so there is no list index to manage",
            ),
        });
    }
    if t.index.is_empty() {
        return Err(match names.syntax {
            Syntax::V23 => config("mail_location has no mail root directory"),
            Syntax::V24 => config(
                "neither mail_index_path nor mail_path is set (Dovecot would look for the \
                 mail itself; this program needs the directory spelled out)",
            ),
        });
    }

    // LISTINDEX: the root, the depth below it, the file name.
    let (layout, user_part_template) = list_layout(t, vars)?;
    let (root, depth) = (layout.root, layout.depth);

    // The user's part must be `depth` plain names below the root.
    let user_part = names.syntax.expand(names.list, &user_part_template, vars)?;
    check_no_new_colon(names, &user_part_template, &user_part, names.list)?;
    let parts = user_parts(&user_part, depth).ok_or_else(|| {
        PathError::Refused(format!(
            "the {} directory for this user, {}{}, is not {depth} plain names below {}",
            names.list,
            root.shown(),
            crate::log::printable(&user_part, 200),
            root.shown()
        ))
    })?;
    let mut listindex = root.clone();
    for part in &parts {
        listindex.push(part);
    }

    let mut paths = UserPaths {
        index: PathBuf::new(),
        listindex_root: root,
        listindex,
        listindex_parts: parts,
        prefix: layout.prefix,
    };

    // INDEX last: when only it fails, LISTINDEX is still known, and the
    // list index there can still be dropped.
    match index_path(t, vars) {
        Ok(index) => {
            paths.index = index;
            Ok(paths)
        }
        // A mistake in the template itself is the operator's, like one in
        // LISTINDEX: report it and touch nothing, for every user alike.
        Err(error) if error.is_template_error() => Err(error),
        Err(error) => Err(PathError::Index {
            paths: Box::new(paths),
            error: Box::new(error),
        }),
    }
}

/// INDEX for one user: expanded, absolute, and without `.` or `..` parts.
fn index_path(t: &Templates<'_>, vars: &Vars<'_>) -> Result<PathBuf, PathError> {
    let names = t.names;
    let index = expand_path(names, t.index_setting, t.index, vars)?;
    if !index.is_absolute() {
        return Err(PathError::Config(format!(
            "INDEX {} is not an absolute path",
            index.shown()
        )));
    }
    if index
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .any(|part| part == b"." || part == b"..")
    {
        return Err(PathError::Refused(format!(
            "INDEX {} has a . or .. part",
            crate::log::printable(index.as_os_str().as_bytes(), 200)
        )));
    }
    Ok(index)
}

/// Where every user's LISTINDEX lives: what the cleaner walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The static directory before the LISTINDEX template's first variable.
    pub root: PathBuf,
    /// How many directories below the root a user's LISTINDEX is.
    pub depth: usize,
    /// The list index file name prefix.
    pub prefix: OsString,
}

/// The LISTINDEX layout of a mail_location, for all users.
pub fn layout(location: &[u8]) -> Result<Layout, PathError> {
    let loc = MailLocation::parse(location);
    list_layout(&Templates::of_mail_location(&loc), &NO_VARS).map(|(layout, _)| layout)
}

/// [`layout`] for Dovecot 2.4's settings.
pub fn layout_24(set: &Settings24<'_>) -> Result<Layout, PathError> {
    list_layout(&Templates::of_settings_24(set), &NO_VARS).map(|(layout, _)| layout)
}

/// No user: what the static part of a template may use.
const NO_VARS: Vars<'static> = Vars {
    user: b"",
    home: None,
    uid: None,
    gid: None,
    local_ip: None,
    remote_ip: None,
};

/// Checks LISTINDEX and splits it into the layout and the template of the
/// user's part below the root (it starts with `/`).
fn list_layout(t: &Templates<'_>, vars: &Vars<'_>) -> Result<(Layout, Vec<u8>), PathError> {
    let names = t.names;
    let syntax = names.syntax;
    let config = |m: String| PathError::Config(m);
    let list = names.list;
    // LISTINDEX: an absolute directory part and a file name.
    let Some(list_template) = t.list else {
        return Err(config(match syntax {
            Syntax::V23 => {
                "mail_location has no LISTINDEX=, so the list index is on NFS already".into()
            }
            Syntax::V24 => "mailbox_list_index_prefix is not set, so the list index is on NFS \
                            already"
                .into(),
        }));
    };
    let list_template = home_template(names, list_template, vars)?;
    let Some(slash) = list_template.iter().rposition(|&b| b == b'/') else {
        return Err(config(format!(
            "{list} has no directory part, so the list index stays inside INDEX on NFS"
        )));
    };
    if list_template.first() != Some(&b'/') {
        return Err(config(format!(
            "{list} is a relative path, which puts the list index inside INDEX on NFS"
        )));
    }
    let (dir_template, prefix_template) = (&list_template[..slash], &list_template[slash + 1..]);
    if syntax.first_variable(prefix_template).is_some() {
        return Err(config(format!(
            "the {list} file name must not contain variables"
        )));
    }
    let prefix = syntax.expand(list, prefix_template, vars)?;
    check_prefix(names, &prefix)?;

    // The root is the static directory before the first variable.
    let Some(first_var) = syntax.first_variable(dir_template) else {
        return Err(config(format!(
            "the {list} directory has no variable such as {}, so all users would share one list index",
            names.example_var
        )));
    };
    let root_end = dir_template[..first_var]
        .iter()
        .rposition(|&b| b == b'/')
        .unwrap_or(0);
    let root_template = &dir_template[..root_end];
    let root = syntax.expand(list, root_template, vars)?;
    let root = clean_absolute(&root)
        .filter(|root| root != Path::new("/"))
        .ok_or_else(|| {
            config(format!(
                "the static part of {list} must be a plain absolute directory other than /"
            ))
        })?;
    let depth = dir_template[root_end..]
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .count();

    let layout = Layout {
        root,
        depth,
        prefix: OsStr::from_bytes(&prefix).to_os_string(),
    };
    Ok((layout, dir_template[root_end..].to_vec()))
}

/// Expands a path-valued template, with `~` for the home directory, and
/// drops one trailing slash, as Dovecot's `fix_path` does.
fn expand_path(
    names: &Names,
    what: &str,
    template: &[u8],
    vars: &Vars<'_>,
) -> Result<PathBuf, PathError> {
    let template = home_template(names, template, vars)?;
    let mut value = names.syntax.expand(what, &template, vars)?;
    check_no_new_colon(names, &template, &value, what)?;
    if value.len() > 1 && value.last() == Some(&b'/') {
        value.pop();
    }
    if value.contains(&0) {
        return Err(PathError::Refused(format!("{what} contains a NUL byte")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(&value)))
}

/// Replaces a leading `~` or `~/` by `%h`-equivalent text: the home
/// directory, escaped so that nothing in it is expanded again.
fn home_template(names: &Names, template: &[u8], vars: &Vars<'_>) -> Result<Vec<u8>, PathError> {
    let rest = match template {
        [b'~'] => &b""[..],
        [b'~', b'/', rest @ ..] => rest,
        _ => return Ok(template.to_vec()),
    };
    let Some(home) = vars.home.filter(|h| !h.is_empty()) else {
        return Err(PathError::Config(format!(
            "{} uses ~/ but the userdb gave no home directory (HOME is not set)",
            names.location
        )));
    };
    let mut out = names.syntax.escape(home);
    if !rest.is_empty() {
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(rest);
    }
    Ok(out)
}

/// Dovecot expands the whole mail_location before splitting it on `:`, so a
/// colon that comes from a user's value would split it differently than
/// this program does. Such a user is refused rather than guessed at. (The
/// 2.4 settings are separate values, split by nothing.)
fn check_no_new_colon(
    names: &Names,
    template: &[u8],
    value: &[u8],
    what: &str,
) -> Result<(), PathError> {
    if names.syntax == Syntax::V24 {
        return Ok(());
    }
    let count = |s: &[u8]| s.iter().filter(|&&b| b == b':').count();
    if count(value) > count(template) {
        return Err(PathError::Refused(format!(
            "{what} for this user contains ':', which Dovecot would read as a separator"
        )));
    }
    Ok(())
}

/// The list index file name must be a plain name that the record file
/// name does not start with (or dropping the list index would drop it).
fn check_prefix(names: &Names, prefix: &[u8]) -> Result<(), PathError> {
    if prefix.is_empty() || prefix == b"." || prefix == b".." || prefix.contains(&0) {
        return Err(PathError::Config(format!(
            "{} must end in a file name, e.g. {}",
            names.list, names.example
        )));
    }
    if LASTHOST.as_bytes().starts_with(prefix) {
        return Err(PathError::Config(format!(
            "the {} file name {:?} would match this program's own {LASTHOST}",
            names.list,
            String::from_utf8_lossy(prefix)
        )));
    }
    Ok(())
}

/// An absolute path with no `.`/`..` parts and no NUL, normalised.
fn clean_absolute(path: &[u8]) -> Option<PathBuf> {
    if path.is_empty() {
        return Some(PathBuf::from("/"));
    }
    if path.first() != Some(&b'/') || path.contains(&0) {
        return None;
    }
    let p = Path::new(OsStr::from_bytes(path));
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => out.push(name),
            _ => return None,
        }
    }
    Some(out)
}

/// Splits the user's part of LISTINDEX (it starts with `/`) into exactly
/// `depth` names, none empty, `.` or `..`, none with a NUL.
fn user_parts(part: &[u8], depth: usize) -> Option<Vec<OsString>> {
    let rest = part.strip_prefix(b"/")?;
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    let names: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    if names.len() != depth {
        return None;
    }
    names
        .into_iter()
        .map(|n| {
            if n.is_empty() || n == b"." || n == b".." || n.contains(&0) {
                None
            } else {
                Some(OsStr::from_bytes(n).to_os_string())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn vars<'a>(user: &'a [u8], home: Option<&'a [u8]>) -> Vars<'a> {
        Vars {
            user,
            home,
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        }
    }

    const LOC: &[u8] =
        b"maildir:~/Maildir:LISTINDEX=/dev/shm/dovecot-listindex/%2.256Nu/%u/dovecot.list.index";

    #[rstest]
    #[case(b"maildir:~/Maildir", Some("maildir"), "~/Maildir", &[])]
    #[case(b"mdbox:/srv/m/%u:INDEX=/srv/i/%u", Some("mdbox"), "/srv/m/%u", &[("INDEX", "/srv/i/%u")])]
    #[case(b"/var/mail/%u", None, "/var/mail/%u", &[])]
    #[case(b"maildir:/a::b:INDEX=/c", Some("maildir"), "/a:b", &[("INDEX", "/c")])]
    #[case(b"maildir:/a:LAYOUT=fs:ITERINDEX", Some("maildir"), "/a", &[("LAYOUT", "fs"), ("ITERINDEX", "")])]
    #[case(b"maildir:/a:", Some("maildir"), "/a", &[])]
    #[case(b"maildir:/a:INDEX=/x::y", Some("maildir"), "/a", &[("INDEX", "/x:y")])]
    fn parse_cases(
        #[case] input: &[u8],
        #[case] format: Option<&str>,
        #[case] root: &str,
        #[case] keys: &[(&str, &str)],
    ) {
        let loc = MailLocation::parse(input);
        assert_eq!(loc.format.as_deref(), format.map(str::as_bytes));
        assert_eq!(loc.root, root.as_bytes());
        let want: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(loc.keys, want);
    }

    #[test]
    fn resolves_the_usual_layout() {
        let p = resolve(LOC, &vars(b"carol.x@example.com", Some(b"/home/carol"))).expect("ok");
        assert_eq!(p.index, Path::new("/home/carol/Maildir"));
        assert_eq!(p.listindex_root, Path::new("/dev/shm/dovecot-listindex"));
        assert_eq!(
            p.listindex,
            Path::new("/dev/shm/dovecot-listindex/39/carol.x@example.com")
        );
        assert_eq!(
            p.listindex_parts,
            vec![OsString::from("39"), "carol.x@example.com".into()]
        );
        assert_eq!(p.prefix, "dovecot.list.index");
    }

    #[test]
    fn index_key_wins_over_root_and_trailing_slash_goes() {
        let p = resolve(
            b"mdbox:~/mdbox:INDEX=/nfs/idx/%u/:LISTINDEX=/run/li/%u/list",
            &vars(b"bob", Some(b"/h/bob")),
        )
        .expect("ok");
        assert_eq!(p.index, Path::new("/nfs/idx/bob"));
        assert_eq!(p.listindex, Path::new("/run/li/bob"));
        assert_eq!(p.prefix, "list");
    }

    #[rstest]
    #[case(b"maildir:~/Maildir", "no LISTINDEX")]
    #[case(b"maildir:~/M:LISTINDEX=dovecot.list.index", "no directory part")]
    #[case(b"maildir:~/M:LISTINDEX=sub/dovecot.list.index", "relative")]
    #[case(b"maildir:~/M:INDEX=MEMORY:LISTINDEX=/l/%u/x", "INDEX=MEMORY")]
    #[case(b"maildir:~/M:LISTINDEX=/l/all/x", "share one")]
    #[case(b"maildir:~/M:LISTINDEX=/l/%u/", "file name")]
    #[case(b"maildir:~/M:LISTINDEX=/l/%u/.last", "own .lasthost")]
    #[case(b"maildir:~/M:LISTINDEX=/l/%u/x%u", "must not contain variables")]
    #[case(b"maildir:~/M:LISTINDEX=/l/%u/%q/x", "unknown variable")]
    #[case(b"maildir:relative:LISTINDEX=/l/%u/x", "not an absolute")]
    fn config_errors(#[case] input: &[u8], #[case] needle: &str) {
        let e = index_cause(resolve(input, &vars(b"bob", Some(b"/h/bob"))).unwrap_err());
        assert!(
            matches!(e, PathError::Config(_) | PathError::Expand(..)),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }

    /// What went wrong with INDEX when only INDEX failed (checking that
    /// LISTINDEX was still worked out), else the error itself.
    fn index_cause(e: PathError) -> PathError {
        match e {
            PathError::Index { paths, error } => {
                assert!(paths.listindex.starts_with(&paths.listindex_root));
                assert_eq!(paths.index, PathBuf::new());
                *error
            }
            other => other,
        }
    }

    #[test]
    fn missing_home_fails_index_only() {
        let e = resolve(LOC, &vars(b"bob", None)).unwrap_err();
        let PathError::Index { paths, error } = e else {
            panic!("{e:?}");
        };
        assert_eq!(
            paths.listindex,
            Path::new("/dev/shm/dovecot-listindex/ca/bob")
        );
        assert!(error.to_string().contains("HOME"), "{error}");
        let e = resolve(b"maildir:/m/%h:LISTINDEX=/l/%u/x", &vars(b"bob", None)).unwrap_err();
        assert!(matches!(index_cause(e), PathError::Expand(..)));
    }

    #[rstest]
    #[case(b"..")]
    #[case(b".")]
    #[case(b"")]
    #[case(b"a/b")]
    #[case(b"../../etc")]
    #[case(b"a\0b")]
    #[case(b"x:LISTINDEX=/etc/x")]
    fn hostile_users_are_refused(#[case] user: &[u8]) {
        let e = resolve(LOC, &vars(user, Some(b"/h/x"))).unwrap_err();
        assert!(matches!(e, PathError::Refused(_)), "{user:?}: {e:?}");
    }

    #[test]
    fn user_at_dotdot_domain_is_refused_when_domain_is_a_directory() {
        let loc = b"maildir:~/M:LISTINDEX=/l/%d/%n/dovecot.list.index";
        for user in [
            &b"..@example.com"[..],
            b"user@..",
            b"@example.com",
            b"user@",
        ] {
            let e = resolve(loc, &vars(user, Some(b"/h"))).unwrap_err();
            assert!(matches!(e, PathError::Refused(_)), "{user:?}: {e:?}");
        }
        let ok = resolve(loc, &vars(b"user@example.com", Some(b"/h"))).expect("ok");
        assert_eq!(ok.listindex, Path::new("/l/example.com/user"));
    }

    #[test]
    fn layout_for_the_cleaner() {
        let l = layout(LOC).expect("ok");
        assert_eq!(l.root, Path::new("/dev/shm/dovecot-listindex"));
        assert_eq!(l.depth, 2);
        assert_eq!(l.prefix, "dovecot.list.index");
        assert!(layout(b"maildir:~/M:LISTINDEX=/%u/x").is_err());
        assert!(layout(b"maildir:~/M:LISTINDEX=~/li/%u/x").is_err());
    }

    #[test]
    fn home_with_dot_dot_is_refused() {
        for home in [&b"/home/../etc"[..], b"/home/./x", b"/h/x/.."] {
            let e = index_cause(resolve(LOC, &vars(b"bob", Some(home))).unwrap_err());
            assert!(matches!(e, PathError::Refused(_)), "{home:?}: {e:?}");
        }
        let e = index_cause(resolve(LOC, &vars(b"bob", Some(b"relative/home"))).unwrap_err());
        assert!(matches!(e, PathError::Config(_)), "{e:?}");
    }

    #[test]
    fn home_with_percent_is_not_expanded_again() {
        let p = resolve(LOC, &vars(b"bob", Some(b"/home/100%u"))).expect("ok");
        assert_eq!(p.index, Path::new("/home/100%u/Maildir"));
    }

    /// The usual layout in Dovecot 2.4's settings.
    const SET24: Settings24<'static> = Settings24 {
        mail_path: Some(b"~/Maildir"),
        mail_index_path: None,
        mailbox_list_index_prefix: Some(
            b"/dev/shm/dovecot-listindex/%{user | md5 | substr(0, 8) % 256 | hex(2)}/%{user}/dovecot.list.index",
        ),
    };

    #[test]
    fn resolves_the_usual_layout_in_24_syntax() {
        let v = vars(b"carol.x@example.com", Some(b"/home/carol"));
        let p = resolve_24(&SET24, &v).expect("ok");
        assert_eq!(p, resolve(LOC, &v).expect("2.3 ok"));
        assert_eq!(
            p.listindex,
            Path::new("/dev/shm/dovecot-listindex/39/carol.x@example.com")
        );
        let l = layout_24(&SET24).expect("layout");
        assert_eq!(l, layout(LOC).expect("2.3 layout"));
        let loc = Location::Dovecot24(SET24);
        assert_eq!(loc.resolve(&v), Ok(p));
        assert_eq!(loc.syntax(), Syntax::V24);
        assert_eq!(loc.setting(), "mail_path");
        assert_eq!(Location::MailLocation(LOC).syntax(), Syntax::V23);
    }

    #[test]
    fn mail_index_path_wins_over_mail_path() {
        let set = Settings24 {
            mail_path: Some(b"/srv/mail/%{user}"),
            mail_index_path: Some(b"/srv/idx/%{user | username}/"),
            mailbox_list_index_prefix: Some(b"/run/li/%{user}/list"),
        };
        let p = resolve_24(&set, &vars(b"bob@x.org", None)).expect("ok");
        assert_eq!(p.index, Path::new("/srv/idx/bob"));
        assert_eq!(p.listindex, Path::new("/run/li/bob@x.org"));
        assert_eq!(p.prefix, "list");
        let only_index = Settings24 {
            mail_path: None,
            ..set
        };
        assert_eq!(
            resolve_24(&only_index, &vars(b"bob@x.org", None)).map(|p| p.index),
            Ok(PathBuf::from("/srv/idx/bob"))
        );
    }

    #[rstest]
    #[case(None, Some(&b"/l/%{user}/x"[..]), "neither mail_index_path nor mail_path")]
    #[case(Some(&b"MEMORY"[..]), Some(&b"/l/%{user}/x"[..]), "mail_index_path = MEMORY")]
    #[case(Some(&b"/i/%{user}"[..]), None, "mailbox_list_index_prefix is not set")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"dovecot.list.index"[..]), "no directory part")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"li/x"[..]), "relative")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"/l/%u/x"[..]), "such as %{user}")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"/l/%{user}/x%{user}"[..]), "must not contain variables")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"/l/%{user}/.last"[..]), "own .lasthost")]
    #[case(Some(&b"/i/%{user}"[..]), Some(&b"/l/%{nope}/x"[..]), "unknown variable %{nope}")]
    #[case(Some(&b"/i/%{user | nope}"[..]), Some(&b"/l/%{user}/x"[..]), "mail_index_path: filter \"nope\"")]
    fn config_errors_24(
        #[case] index: Option<&'static [u8]>,
        #[case] list: Option<&'static [u8]>,
        #[case] needle: &str,
    ) {
        let set = Settings24 {
            mail_path: None,
            mail_index_path: index,
            mailbox_list_index_prefix: list,
        };
        let e = index_cause(resolve_24(&set, &vars(b"bob", Some(b"/h/bob"))).unwrap_err());
        assert!(
            matches!(e, PathError::Config(_) | PathError::Expand24(..)),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }

    #[rstest]
    #[case(b"..")]
    #[case(b"")]
    #[case(b"a/b")]
    #[case(b"a\0b")]
    fn hostile_users_are_refused_in_24_syntax(#[case] user: &[u8]) {
        let e = resolve_24(&SET24, &vars(user, Some(b"/h/x"))).unwrap_err();
        assert!(matches!(e, PathError::Refused(_)), "{user:?}: {e:?}");
    }

    #[test]
    fn colons_are_plain_in_24_settings() {
        let p = resolve_24(&SET24, &vars(b"x:y", Some(b"/h/x:y"))).expect("ok");
        assert_eq!(p.index, Path::new("/h/x:y/Maildir"));
    }

    #[test]
    fn home_with_brace_is_not_expanded_in_24_syntax() {
        let p = resolve_24(&SET24, &vars(b"bob", Some(b"/home/%{user}"))).expect("ok");
        assert_eq!(p.index, Path::new("/home/%{user}/Maildir"));
        let e = resolve_24(&SET24, &vars(b"bob", None)).unwrap_err();
        assert!(e.to_string().contains("mail_path uses ~/"), "{e}");
    }
}
