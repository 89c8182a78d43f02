//! Dovecot 2.3's `mail_location` (`mailbox-list.c`), and the paths this
//! program works on for one user: INDEX on NFS, and LISTINDEX in tmpfs.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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
    /// This user's values would lead outside the LISTINDEX root, or make
    /// Dovecot read the location differently: refused.
    Refused(String),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Config(m) => write!(f, "configuration error: {m}"),
            PathError::Expand(what, e) => write!(f, "configuration error: {what}: {e}"),
            PathError::Refused(m) => write!(f, "refused: {m}"),
        }
    }
}

impl std::error::Error for PathError {}

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

/// Works out INDEX, LISTINDEX and the prefix from a mail_location and the
/// user's variables. Values are expanded the way Dovecot expands them, then
/// checked: LISTINDEX must be absolute, have a variable part, and stay
/// inside its root at the depth its template gives.
pub fn resolve(location: &[u8], vars: &Vars<'_>) -> Result<UserPaths, PathError> {
    let loc = MailLocation::parse(location);
    let config = |m: &str| PathError::Config(m.to_string());

    // INDEX: `INDEX=` when set, else the mail root.
    let index_template = match loc.get("INDEX") {
        Some(b"MEMORY") => {
            return Err(config(
                "INDEX=MEMORY keeps no index files, so there is no list index to manage",
            ))
        }
        Some(v) if !v.is_empty() => v,
        _ => loc.root.as_slice(),
    };
    if index_template.is_empty() {
        return Err(config("mail_location has no mail root directory"));
    }
    let index = expand_path("INDEX", index_template, vars)?;
    if !index.is_absolute() {
        return Err(PathError::Config(format!(
            "INDEX {} is not an absolute path",
            index.display()
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

    // LISTINDEX: the root, the depth below it, the file name.
    let (layout, user_part_template) = list_layout(&loc, vars)?;
    let (root, depth) = (layout.root, layout.depth);

    // The user's part must be `depth` plain names below the root.
    let user_part = varexpand::expand(&user_part_template, vars)
        .map_err(|e| PathError::Expand("LISTINDEX".into(), e))?;
    check_no_new_colon(&user_part_template, &user_part, "LISTINDEX")?;
    let parts = user_parts(&user_part, depth).ok_or_else(|| {
        PathError::Refused(format!(
            "the LISTINDEX directory for this user, {}{}, is not {depth} plain names below {}",
            root.display(),
            crate::log::printable(&user_part, 200),
            root.display()
        ))
    })?;
    let mut listindex = root.clone();
    for part in &parts {
        listindex.push(part);
    }

    Ok(UserPaths {
        index,
        listindex_root: root,
        listindex,
        listindex_parts: parts,
        prefix: layout.prefix,
    })
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
    let vars = Vars {
        user: b"",
        home: None,
        uid: None,
        gid: None,
        local_ip: None,
        remote_ip: None,
    };
    list_layout(&MailLocation::parse(location), &vars).map(|(layout, _)| layout)
}

/// Checks LISTINDEX and splits it into the layout and the template of the
/// user's part below the root (it starts with `/`).
fn list_layout(loc: &MailLocation, vars: &Vars<'_>) -> Result<(Layout, Vec<u8>), PathError> {
    let config = |m: &str| PathError::Config(m.to_string());
    // LISTINDEX: an absolute directory part and a file name.
    let Some(list_template) = loc.get("LISTINDEX") else {
        return Err(config(
            "mail_location has no LISTINDEX=, so the list index is on NFS already",
        ));
    };
    let list_template = home_template(list_template, vars)?;
    let Some(slash) = list_template.iter().rposition(|&b| b == b'/') else {
        return Err(config(
            "LISTINDEX has no directory part, so the list index stays inside INDEX on NFS",
        ));
    };
    if list_template.first() != Some(&b'/') {
        return Err(config(
            "LISTINDEX is a relative path, which puts the list index inside INDEX on NFS",
        ));
    }
    let (dir_template, prefix_template) = (&list_template[..slash], &list_template[slash + 1..]);
    if varexpand::first_variable(prefix_template).is_some() {
        return Err(config("the LISTINDEX file name must not contain variables"));
    }
    let prefix = varexpand::expand(prefix_template, vars)
        .map_err(|e| PathError::Expand("LISTINDEX".into(), e))?;
    check_prefix(&prefix)?;

    // The root is the static directory before the first variable.
    let Some(first_var) = varexpand::first_variable(dir_template) else {
        return Err(config(
            "the LISTINDEX directory has no variable such as %u, so all users would share one list index",
        ));
    };
    let root_end = dir_template[..first_var]
        .iter()
        .rposition(|&b| b == b'/')
        .unwrap_or(0);
    let root_template = &dir_template[..root_end];
    let root = varexpand::expand(root_template, vars)
        .map_err(|e| PathError::Expand("LISTINDEX".into(), e))?;
    let root = clean_absolute(&root)
        .filter(|root| root != Path::new("/"))
        .ok_or_else(|| {
            config("the static part of LISTINDEX must be a plain absolute directory other than /")
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
fn expand_path(what: &str, template: &[u8], vars: &Vars<'_>) -> Result<PathBuf, PathError> {
    let template = home_template(template, vars)?;
    let mut value =
        varexpand::expand(&template, vars).map_err(|e| PathError::Expand(what.into(), e))?;
    check_no_new_colon(&template, &value, what)?;
    if value.len() > 1 && value.last() == Some(&b'/') {
        value.pop();
    }
    if value.contains(&0) {
        return Err(PathError::Refused(format!("{what} contains a NUL byte")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(&value)))
}

/// Replaces a leading `~` or `~/` by `%h`-equivalent text: the home
/// directory, with its `%` escaped so it is not expanded again.
fn home_template(template: &[u8], vars: &Vars<'_>) -> Result<Vec<u8>, PathError> {
    let rest = match template {
        [b'~'] => &b""[..],
        [b'~', b'/', rest @ ..] => rest,
        _ => return Ok(template.to_vec()),
    };
    let Some(home) = vars.home.filter(|h| !h.is_empty()) else {
        return Err(PathError::Config(
            "mail_location uses ~/ but the userdb gave no home directory (HOME is not set)".into(),
        ));
    };
    let mut out = Vec::with_capacity(home.len() + rest.len() + 1);
    for &b in home {
        if b == b'%' {
            out.extend_from_slice(b"%%");
        } else {
            out.push(b);
        }
    }
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
/// this program does. Such a user is refused rather than guessed at.
fn check_no_new_colon(template: &[u8], value: &[u8], what: &str) -> Result<(), PathError> {
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
fn check_prefix(prefix: &[u8]) -> Result<(), PathError> {
    if prefix.is_empty() || prefix == b"." || prefix == b".." {
        return Err(PathError::Config(
            "LISTINDEX must end in a file name, e.g. /dev/shm/dovecot-listindex/%u/dovecot.list.index"
                .into(),
        ));
    }
    if LASTHOST.as_bytes().starts_with(prefix) {
        return Err(PathError::Config(format!(
            "the LISTINDEX file name {:?} would match this program's own {LASTHOST}",
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
        let e = resolve(input, &vars(b"bob", Some(b"/h/bob"))).unwrap_err();
        assert!(
            matches!(e, PathError::Config(_) | PathError::Expand(..)),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }

    #[test]
    fn missing_home_is_a_config_error() {
        let e = resolve(LOC, &vars(b"bob", None)).unwrap_err();
        assert!(e.to_string().contains("HOME"), "{e}");
        let e = resolve(b"maildir:/m/%h:LISTINDEX=/l/%u/x", &vars(b"bob", None)).unwrap_err();
        assert!(matches!(e, PathError::Expand(..)), "{e:?}");
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
            let e = resolve(LOC, &vars(b"bob", Some(home))).unwrap_err();
            assert!(matches!(e, PathError::Refused(_)), "{home:?}: {e:?}");
        }
        let e = resolve(LOC, &vars(b"bob", Some(b"relative/home"))).unwrap_err();
        assert!(matches!(e, PathError::Config(_)), "{e:?}");
    }

    #[test]
    fn home_with_percent_is_not_expanded_again() {
        let p = resolve(LOC, &vars(b"bob", Some(b"/home/100%u"))).expect("ok");
        assert_eq!(p.index, Path::new("/home/100%u/Maildir"));
    }
}
