//! Dovecot 2.3 `%` variable expansion, as done by `src/lib/var-expand.c`.
//!
//! The expansion works on bytes, because user names and home directories need not be
//! UTF-8. A variable is written `%[-][0][width][.[0][-]width][modifiers]key`, where
//! `key` is one letter or a `{long name}`. When a `.` is present the first number is
//! the offset and the second the width.
//!
//! Dovecot reports an unknown variable as a failed expansion (writing
//! `UNSUPPORTED_VARIABLE_x` in its place); this module returns an error for it too. It
//! also refuses a known variable whose value is absent, where Dovecot would expand it
//! to nothing: a path built from such a value is not one this program should touch.

use md5::{Digest, Md5};
use std::fmt;

/// Dovecot's `MAX_MODIFIER_COUNT`: at most this many modifier letters per variable.
const MAX_MODIFIERS: usize = 10;

/// The values variables expand to, as Dovecot's mail user `var_expand_table` holds them.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The full user name (`%u`, `%{user}`); `%n` and `%d` are derived from it.
    pub user: &'a [u8],
    /// The home directory (`%h`, `%{home}`).
    pub home: Option<&'a [u8]>,
    /// The numeric uid as decimal text (`%i`, `%{uid}`).
    pub uid: Option<&'a [u8]>,
    /// The numeric gid as decimal text (`%{gid}`).
    pub gid: Option<&'a [u8]>,
    /// The local IP address (`%l`, `%{lip}`, `%{local_ip}`).
    pub local_ip: Option<&'a [u8]>,
    /// The remote IP address (`%r`, `%{rip}`, `%{remote_ip}`).
    pub remote_ip: Option<&'a [u8]>,
}

/// Why a template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `%q` or `%{foo}`: a variable this program does not know. Holds the name as
    /// written, e.g. "%q" or "%{foo}".
    UnknownVariable(String),
    /// A known variable whose value is absent (e.g. %h with no HOME). Holds the name
    /// as written.
    MissingValue(String),
    /// Malformed template: a '%' at the end, an unterminated `%{`, too many modifiers.
    /// Holds a short reason and the byte offset of the '%'.
    Malformed {
        /// Byte offset of the `%` that starts the bad variable.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::UnknownVariable(name) => write!(f, "unknown variable {name}"),
            ExpandError::MissingValue(name) => {
                write!(f, "{name} needs {}, which is not set", value_source(name))
            }
            ExpandError::Malformed { offset, reason } => {
                write!(f, "malformed template at byte {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for ExpandError {}

/// Where the value of a variable named in a `MissingValue` error comes from.
fn value_source(name: &str) -> &'static str {
    match name {
        "%h" | "%{home}" => "HOME",
        "%i" | "%{uid}" => "the user's uid",
        "%{gid}" => "the user's gid",
        "%l" | "%{lip}" | "%{local_ip}" => "LOCAL_IP",
        "%r" | "%{rip}" | "%{remote_ip}" => "IP",
        _ => "a value",
    }
}

/// Expands every `%` variable in `template`.
///
/// # Errors
///
/// The first unknown variable, absent value or malformed variable, reading left to
/// right.
pub fn expand(template: &[u8], vars: &Vars) -> Result<Vec<u8>, ExpandError> {
    let mut out = Vec::with_capacity(template.len() + vars.user.len());
    let mut pos = 0;
    while pos < template.len() {
        // Copy literal bytes up to the next '%'.
        let Some(rel) = template[pos..].iter().position(|&b| b == b'%') else {
            out.extend_from_slice(&template[pos..]);
            break;
        };
        out.extend_from_slice(&template[pos..pos + rel]);
        let start = pos + rel;

        // Parse the variable, look it up and run its modifiers.
        let spec = parse_spec(template, start)?;
        let mut field = spec.field;
        let mut value = lookup(&spec.key, vars)?.to_vec();
        for modifier in &spec.modifiers {
            value = modifier.apply(&value, &mut field);
        }

        append_field(&mut out, &value, &field);
        pos = spec.end;
    }
    Ok(out)
}

/// The byte offset of the first '%' that starts a variable (not `%%`), or None: callers
/// use it to find the static prefix of a template.
///
/// A malformed variable counts as a variable, so `expand` reports it. The prefix
/// before the returned offset may still hold `%%`, which only `expand` turns into `%`.
#[must_use]
pub fn first_variable(template: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(rel) = template[pos..].iter().position(|&b| b == b'%') {
        let start = pos + rel;
        match parse_spec(template, start) {
            Ok(spec) if matches!(spec.key, Key::Short(b'%')) => pos = spec.end,
            _ => return Some(start),
        }
    }
    None
}

/// Dovecot's per-variable `struct var_expand_context`.
#[derive(Debug, Clone, Copy, Default)]
struct Field {
    /// Bytes to skip (positive) or to keep from the end (negative).
    offset: i32,
    /// Bytes to keep (positive), or to drop from the end (negative); 0 keeps all.
    width: i32,
    /// Left-pad with '0' to the width instead of truncating.
    zero_padding: bool,
}

/// The variable part of a `%` sequence.
#[derive(Debug, Clone, Copy)]
enum Key<'t> {
    /// One letter, e.g. `u` in `%Lu`.
    Short(u8),
    /// The name between braces, e.g. `user` in `%{user}`.
    Long(&'t [u8]),
}

impl Key<'_> {
    /// The variable's name as written in the template, without width or modifiers.
    fn written(&self) -> String {
        match self {
            Key::Short(b) => format!("%{}", String::from_utf8_lossy(&[*b])),
            Key::Long(name) => format!("%{{{}}}", String::from_utf8_lossy(name)),
        }
    }
}

/// One parsed `%` sequence.
#[derive(Debug)]
struct Spec<'t> {
    field: Field,
    modifiers: Vec<Modifier>,
    key: Key<'t>,
    /// Byte offset just past the sequence.
    end: usize,
}

/// Parses the `%` sequence that starts at `start` (which holds the '%').
fn parse_spec(t: &[u8], start: usize) -> Result<Spec<'_>, ExpandError> {
    let malformed = |reason| ExpandError::Malformed {
        offset: start,
        reason,
    };
    let at = |i: usize| t.get(i).copied();
    let mut pos = start + 1;
    if pos >= t.len() {
        return Err(malformed("'%' at end"));
    }

    // [-][0]digits: the width, or the offset if a '.' follows.
    let mut field = Field::default();
    let mut negative = false;
    if at(pos) == Some(b'-') {
        negative = true;
        pos += 1;
    }
    if at(pos) == Some(b'0') {
        field.zero_padding = true;
        pos += 1;
    }
    field.width = read_number(t, &mut pos).ok_or_else(|| malformed("number too large"))?;

    // .[0][-]digits: the first number was the offset, this one is the width. Without
    // the '.', Dovecot ignores the '-' (its sign only ever reaches the offset).
    if at(pos) == Some(b'.') {
        pos += 1;
        field.offset = if negative { -field.width } else { field.width };
        field.zero_padding = false;
        if at(pos) == Some(b'0') {
            field.zero_padding = true;
            pos += 1;
        }
        let mut width_negative = false;
        if at(pos) == Some(b'-') {
            width_negative = true;
            pos += 1;
        }
        let width = read_number(t, &mut pos).ok_or_else(|| malformed("number too large"))?;
        field.width = if width_negative { -width } else { width };
    }

    // Up to MAX_MODIFIERS modifier letters.
    let mut modifiers = Vec::new();
    while let Some(modifier) = at(pos).and_then(Modifier::from_letter) {
        if modifiers.len() == MAX_MODIFIERS {
            return Err(malformed("too many modifiers (at most 10)"));
        }
        modifiers.push(modifier);
        pos += 1;
    }

    // The key: one byte, or a {name} with nested braces and backslash escapes.
    let key_start = pos;
    let Some(first) = at(key_start) else {
        return Err(malformed("template ends inside a variable"));
    };
    if first != b'{' {
        return Ok(Spec {
            field,
            modifiers,
            key: Key::Short(first),
            end: key_start + 1,
        });
    }
    let mut depth = 1usize;
    let mut escaped = false;
    let mut i = key_start + 1;
    while i < t.len() {
        let b = t[i];
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'{' {
            depth += 1;
        } else if b == b'}' {
            depth -= 1;
            if depth == 0 {
                return Ok(Spec {
                    field,
                    modifiers,
                    key: Key::Long(&t[key_start + 1..i]),
                    end: i + 1,
                });
            }
        }
        i += 1;
    }
    Err(malformed("unterminated %{"))
}

/// Reads decimal digits at `*pos` (none reads as 0); None if the number does not fit
/// Dovecot's `int`.
fn read_number(t: &[u8], pos: &mut usize) -> Option<i32> {
    let mut n: i32 = 0;
    while let Some(&b) = t.get(*pos).filter(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
        *pos += 1;
    }
    (n <= NUMBER_MAX).then_some(n)
}

/// The largest offset or width accepted. Dovecot takes any `int`, but a
/// path part is at most 255 bytes, and padding a value to a width of a
/// billion would allocate a gigabyte on every login: anything larger than
/// this is a mistake in the template, reported as one.
pub const NUMBER_MAX: i32 = 65536;

/// Finds the value of `key`.
fn lookup<'a>(key: &Key<'_>, vars: &Vars<'a>) -> Result<&'a [u8], ExpandError> {
    // Map letters and long names to a value, as Dovecot's mail user table does.
    let value = match key {
        Key::Short(b'%') => Some(&b"%"[..]),
        Key::Short(b'u') | Key::Long(b"user") => Some(vars.user),
        Key::Short(b'n') | Key::Long(b"username") => Some(username(vars.user)),
        Key::Short(b'd') | Key::Long(b"domain") => Some(domain(vars.user)),
        Key::Short(b'h') | Key::Long(b"home") => vars.home,
        Key::Short(b'i') | Key::Long(b"uid") => vars.uid,
        Key::Long(b"gid") => vars.gid,
        Key::Short(b'l') | Key::Long(b"lip") | Key::Long(b"local_ip") => vars.local_ip,
        Key::Short(b'r') | Key::Long(b"rip") | Key::Long(b"remote_ip") => vars.remote_ip,
        _ => return Err(ExpandError::UnknownVariable(key.written())),
    };
    value.ok_or_else(|| ExpandError::MissingValue(key.written()))
}

/// `%n`: the user name before the first '@', all of it if there is none.
fn username(user: &[u8]) -> &[u8] {
    match user.iter().position(|&b| b == b'@') {
        Some(at) => &user[..at],
        None => user,
    }
}

/// `%d`: the user name after the first '@', empty if there is none.
fn domain(user: &[u8]) -> &[u8] {
    match user.iter().position(|&b| b == b'@') {
        Some(at) => &user[at + 1..],
        None => &[],
    }
}

/// Applies the offset, then the width, and appends the result (the end of Dovecot's
/// `var_expand_with_funcs` loop).
fn append_field(out: &mut Vec<u8>, value: &[u8], field: &Field) {
    // Offset: a negative one keeps the last bytes, a positive one skips bytes.
    let len = value.len();
    let offset = field.offset.unsigned_abs() as usize;
    let value = if field.offset < 0 {
        &value[len.saturating_sub(offset)..]
    } else {
        &value[offset.min(len)..]
    };

    // Width: truncate, drop from the end, or zero-pad.
    let len = value.len();
    let width = field.width.unsigned_abs() as usize;
    if field.width == 0 {
        out.extend_from_slice(value);
    } else if !field.zero_padding {
        let keep = if field.width > 0 {
            width.min(len)
        } else if width <= len {
            len - width
        } else {
            // Dovecot computes strlen - n in size_t; when n is larger it wraps to a
            // huge length and the whole value is appended.
            len
        };
        out.extend_from_slice(&value[..keep]);
    } else {
        // "%05d-like padding, no truncation"; a negative width pads nothing.
        let pad = if field.width > 0 {
            width.saturating_sub(len)
        } else {
            0
        };
        out.resize(out.len() + pad, b'0');
        out.extend_from_slice(value);
    }
}

/// A modifier letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    /// `L`: ASCII lower case.
    Lower,
    /// `U`: ASCII upper case.
    Upper,
    /// `E`: backslash before `"`, `'` and `\`.
    Escape,
    /// `X`: unsigned decimal number as lower-case hex, 0 if not a number.
    Hex,
    /// `R`: bytes in reverse order.
    Reverse,
    /// `H`: Dovecot's old `str_hash`, see [`Modifier::apply`].
    OldHash,
    /// `N`: the first 8 bytes of MD5, see [`Modifier::apply`].
    NewHash,
    /// `M`: MD5 as 32 lower-case hex digits.
    Md5,
    /// `D`: every `.` becomes `,dc=`.
    LdapDn,
    /// `T`: trailing white space removed.
    Trim,
}

impl Modifier {
    /// The modifier a letter stands for, if any.
    fn from_letter(b: u8) -> Option<Self> {
        Some(match b {
            b'L' => Modifier::Lower,
            b'U' => Modifier::Upper,
            b'E' => Modifier::Escape,
            b'X' => Modifier::Hex,
            b'R' => Modifier::Reverse,
            b'H' => Modifier::OldHash,
            b'N' => Modifier::NewHash,
            b'M' => Modifier::Md5,
            b'D' => Modifier::LdapDn,
            b'T' => Modifier::Trim,
            _ => return None,
        })
    }

    /// Transforms `value`. The hash modifiers consume the field's width (as a modulus)
    /// and offset (as the zero-padded length), like Dovecot's `m_str_hash` and
    /// `m_str_newhash`.
    fn apply(self, value: &[u8], field: &mut Field) -> Vec<u8> {
        match self {
            Modifier::Lower => value.to_ascii_lowercase(),
            Modifier::Upper => value.to_ascii_uppercase(),
            Modifier::Escape => {
                let mut out = Vec::with_capacity(value.len());
                for &b in value {
                    if matches!(b, b'"' | b'\'' | b'\\') {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out
            }
            Modifier::Hex => format!("{:x}", parse_ullong(value).unwrap_or(0)).into_bytes(),
            Modifier::Reverse => value.iter().rev().copied().collect(),
            Modifier::OldHash => {
                let mut hash = str_hash(value);
                if field.width != 0 {
                    // C converts the int width to unsigned int.
                    hash %= field.width as u32;
                    field.width = 0;
                }
                hash_hex(hash, field)
            }
            Modifier::NewHash => {
                let digest = Md5::digest(value);
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest[..8]);
                let mut hash = u64::from_be_bytes(first);
                if field.width != 0 {
                    // C converts the int width to uint64_t, sign-extending it.
                    hash %= i64::from(field.width) as u64;
                    field.width = 0;
                }
                hash_hex(hash as u32, field)
            }
            Modifier::Md5 => {
                let digest = Md5::digest(value);
                let mut out = Vec::with_capacity(32);
                for b in &digest {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out
            }
            Modifier::LdapDn => {
                let mut out = Vec::with_capacity(value.len());
                for &b in value {
                    if b == b'.' {
                        out.extend_from_slice(b",dc=");
                    } else {
                        out.push(b);
                    }
                }
                out
            }
            Modifier::Trim => {
                // C isspace() in the C locale: space, \t, \n, \v, \f, \r.
                let keep = value
                    .iter()
                    .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
                    .map_or(0, |i| i + 1);
                value[..keep].to_vec()
            }
        }
    }
}

/// Lower-case hex of a hash, left-padded with '0' to the offset, which is consumed.
fn hash_hex(hash: u32, field: &mut Field) -> Vec<u8> {
    let digits = format!("{hash:x}");
    let pad = usize::try_from(field.offset)
        .unwrap_or(0)
        .saturating_sub(digits.len());
    field.offset = 0;
    let mut out = vec![b'0'; pad];
    out.extend_from_slice(digits.as_bytes());
    out
}

/// Dovecot's `str_hash` (the ELF hash).
fn str_hash(value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in value {
        h = (h << 4).wrapping_add(u32::from(b));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

/// Dovecot's `str_to_ullong` (2.4: `str_to_uintmax`): only decimal digits,
/// at least one, no overflow.
pub(crate) fn parse_ullong(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const TSV: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/dovecot-var-expand.tsv"
    );
    /// Users in the TSV file: a shorter file must fail, not pass with fewer checks.
    const TSV_USERS: usize = 15;
    /// Template columns in the TSV file, besides the user column.
    const TSV_TEMPLATES: usize = 14;

    /// The TSV file: the template header and the rows, each a user then its cells.
    struct Table {
        templates: Vec<Vec<u8>>,
        rows: Vec<Vec<Vec<u8>>>,
    }

    fn read_table() -> Table {
        let data = std::fs::read(TSV).expect("read dovecot-var-expand.tsv");
        let mut lines = data
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
            .map(|line| {
                line.split(|&b| b == b'\t')
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            });
        let header = lines.next().expect("header line");
        assert_eq!(header[0], b"user", "first header column");
        Table {
            templates: header[1..].to_vec(),
            rows: lines.collect(),
        }
    }

    fn vars(user: &[u8]) -> Vars<'_> {
        Vars {
            user,
            home: None,
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        }
    }

    fn full_vars(user: &[u8]) -> Vars<'_> {
        Vars {
            user,
            home: Some(b"/home/u"),
            uid: Some(b"1001"),
            gid: Some(b"100"),
            local_ip: Some(b"192.0.2.1"),
            remote_ip: Some(b"198.51.100.7"),
        }
    }

    fn expand_str(template: &str, user: &str) -> Result<String, ExpandError> {
        let out = expand(template.as_bytes(), &full_vars(user.as_bytes()))?;
        Ok(String::from_utf8(out).expect("utf-8 output"))
    }

    fn ok(template: &str, user: &str) -> String {
        expand_str(template, user)
            .unwrap_or_else(|e| panic!("expand({template:?}, {user:?}) failed: {e}"))
    }

    #[test]
    fn tsv_has_every_user_and_template() {
        let table = read_table();
        assert_eq!(table.templates.len(), TSV_TEMPLATES, "template columns");
        assert_eq!(table.rows.len(), TSV_USERS, "user rows");
        for (i, row) in table.rows.iter().enumerate() {
            assert_eq!(row.len(), TSV_TEMPLATES + 1, "cells in row {}", i + 1);
        }
    }

    /// One case per user row; each checks every template column of its row.
    #[rstest]
    fn tsv_row_matches_dovecot(
        #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)] row: usize,
    ) {
        let table = read_table();
        let cells = table
            .rows
            .get(row)
            .unwrap_or_else(|| panic!("row {} missing from the TSV file", row + 1));
        let user = &cells[0];
        let mut failures = Vec::new();
        for (col, template) in table.templates.iter().enumerate() {
            let expected = cells.get(col + 1).map_or(&b""[..], Vec::as_slice);
            let got = expand(template, &vars(user));
            if got.as_deref() != Ok(expected) {
                failures.push(format!(
                    "row {} (user {:?}), column {} ({:?}): expected {:?}, got {:?}",
                    row + 1,
                    String::from_utf8_lossy(user),
                    col + 2,
                    String::from_utf8_lossy(template),
                    String::from_utf8_lossy(expected),
                    got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[rstest]
    #[case::alone("%%", "%")]
    #[case::in_text("100%%/x", "100%/x")]
    #[case::before_letter("%%u", "%u")]
    #[case::twice("%%%%", "%%")]
    #[case::next_to_variable("%u%%", "bob%")]
    // Dovecot looks '%' up like any other key, so width and modifiers apply to it.
    #[case::with_modifier("%L%", "%")]
    #[case::with_zero_width("%03%", "00%")]
    fn percent(#[case] template: &str, #[case] expected: &str) {
        assert_eq!(ok(template, "bob"), expected);
    }

    #[rstest]
    #[case("%u", "user@example.com")]
    #[case("%{user}", "user@example.com")]
    #[case("%n", "user")]
    #[case("%{username}", "user")]
    #[case("%d", "example.com")]
    #[case("%{domain}", "example.com")]
    #[case("%h", "/home/u")]
    #[case("%{home}", "/home/u")]
    #[case("%i", "1001")]
    #[case("%{uid}", "1001")]
    #[case("%{gid}", "100")]
    #[case("%l", "192.0.2.1")]
    #[case("%{lip}", "192.0.2.1")]
    #[case("%{local_ip}", "192.0.2.1")]
    #[case("%r", "198.51.100.7")]
    #[case("%{rip}", "198.51.100.7")]
    #[case("%{remote_ip}", "198.51.100.7")]
    #[case("/idx/%{domain}/%{username}/", "/idx/example.com/user/")]
    #[case("%L{user}", "user@example.com")]
    #[case("%2.1M{user}", "8")]
    fn variable_names(#[case] template: &str, #[case] expected: &str) {
        assert_eq!(ok(template, "user@example.com"), expected);
    }

    #[rstest]
    #[case::lower("%Lu", "MiXeD@Example.COM", "mixed@example.com")]
    #[case::upper("%Uu", "MiXeD@Example.COM", "MIXED@EXAMPLE.COM")]
    #[case::reverse("%Ru", "abc@d", "d@cba")]
    #[case::trim("%Tu", "bob \t\r\n\x0b\x0c", "bob")]
    #[case::trim_keeps_leading("%Tu", "  bob  ", "  bob")]
    #[case::trim_all("%Tu", "   ", "")]
    #[case::hex("%Xu", "255", "ff")]
    #[case::hex_not_a_number("%Xu", "abc", "0")]
    #[case::hex_empty("%Xd", "bob", "0")]
    #[case::hex_signed("%Xu", "+1", "0")]
    #[case::hex_max("%Xu", "18446744073709551615", "ffffffffffffffff")]
    #[case::hex_overflow("%Xu", "18446744073709551616", "0")]
    #[case::escape("%Eu", r#"a"b'c\d"#, r#"a\"b\'c\\d"#)]
    #[case::ldap_dn("%Dd", "j@sub.example.com", "sub,dc=example,dc=com")]
    #[case::md5("%Mu", "a", "0cc175b9c0f1b6a831c399e269772661")]
    #[case::lower_then_reverse("%LRu", "AbC", "cba")]
    #[case::hex_then_reverse("%XRu", "16", "01")]
    #[case::reverse_then_hex("%RXu", "16", "3d")]
    #[case::lower_then_md5("%LMu", "A", "0cc175b9c0f1b6a831c399e269772661")]
    #[case::upper_then_lower("%ULu", "AbC", "abc")]
    #[case::ten_modifiers("%LLLLLLLLLLu", "AbC", "abc")]
    fn modifiers(#[case] template: &str, #[case] user: &str, #[case] expected: &str) {
        assert_eq!(ok(template, user), expected);
    }

    /// Offsets and widths. The `value1234` cases are Dovecot's own `test-var-expand.c`.
    #[rstest]
    #[case::plain("%u", "value1234")]
    #[case::width("%3u", "val")]
    #[case::offset_width("%3.2u", "ue")]
    // Offset 3 skips "val"; width -2 drops "34" from the end of "ue1234".
    #[case::negative_width("%3.-2u", "ue12")]
    // Offset -3 keeps the last three bytes, "234"; width 2 keeps "23".
    #[case::negative_offset("%-3.2u", "23")]
    // The '0' before the offset is dropped; width -1 drops the last byte.
    #[case::zero_offset_negative_width("%0.-1u", "value123")]
    // Offset -4 keeps "1234"; width -1 drops the "4".
    #[case::negative_offset_and_width("%-4.-1u", "123")]
    // Without a '.', Dovecot reads the '-' but never applies it: a plain width of 3.
    #[case::minus_without_dot("%-3u", "val")]
    #[case::negative_offset_longer_than_value("%-20.u", "value1234")]
    #[case::offset_past_end("%20.u", "")]
    #[case::offset_only("%5.u", "1234")]
    #[case::width_longer_than_value("%20u", "value1234")]
    // Width -6 drops all six bytes of "ue1234".
    #[case::drop_everything("%3.-6u", "")]
    // Dropping more than is there wraps Dovecot's size_t length: all of it is kept.
    #[case::drop_more_than_value("%3.-10u", "ue1234")]
    fn ranges(#[case] template: &str, #[case] expected: &str) {
        assert_eq!(ok(template, "value1234"), expected);
    }

    #[rstest]
    #[case::pads("%05u", "42", "00042")]
    #[case::no_truncation("%05u", "1234567", "1234567")]
    #[case::exact("%02u", "42", "42")]
    #[case::without_zero_truncates("%5u", "1234567", "12345")]
    // A '0' before the offset does not pad: skip 1, then at most 5.
    #[case::zero_on_offset_ignored("%01.5u", "abcdefg", "bcdef")]
    // A '0' before the width pads: skip 1, then pad "b" to 5.
    #[case::zero_on_width("%1.05u", "ab", "0000b")]
    #[case::negative_width_pads_nothing("%.0-2u", "ab", "ab")]
    fn zero_padding(#[case] template: &str, #[case] user: &str, #[case] expected: &str) {
        assert_eq!(ok(template, user), expected);
    }

    /// Hash vectors: the `%50` cases are Dovecot's own `test-var-expand.c`; the others
    /// follow from the MD5 of "bob" (9f9d51bc70ef21ca...), whose first 8 bytes as a u64
    /// have the low 32 bits 0x70ef21ca.
    #[rstest]
    #[case::old_hash_value("%50Hu", "value", "1f")]
    #[case::old_hash_value2("%50Hu", "value2", "2e")]
    #[case::new_hash_value("%50Nu", "value", "25")]
    #[case::new_hash_value2("%50Nu", "value2", "e")]
    #[case::new_hash_low_32_bits("%Nu", "bob", "70ef21ca")]
    #[case::new_hash_padded_to_offset("%10.Nu", "bob", "0070ef21ca")]
    #[case::new_hash_modulo_and_pad("%4.256Nu", "bob", "00ca")]
    #[case::old_hash_plain("%Hu", "ab", "672")]
    #[case::hash_then_upper("%2.256NUu", "bob", "CA")]
    fn hashes(#[case] template: &str, #[case] user: &str, #[case] expected: &str) {
        assert_eq!(ok(template, user), expected);
    }

    #[test]
    fn str_hash_folds_top_nibble() {
        // Eight 0xff bytes push bits past 28, so the fold runs.
        let mut h: u64 = 0;
        for _ in 0..8 {
            h = ((h << 4) + 0xff) & 0xffff_ffff;
            let g = h & 0xf000_0000;
            if g != 0 {
                h ^= g >> 24;
                h ^= g;
            }
        }
        assert_eq!(u64::from(str_hash(&[0xff; 8])), h);
        assert_eq!(str_hash(b""), 0);
    }

    #[rstest]
    #[case::unknown_long("%{foo}", ExpandError::UnknownVariable("%{foo}".into()))]
    #[case::unknown_short("%q", ExpandError::UnknownVariable("%q".into()))]
    #[case::unknown_after_modifiers("x%2.3Lq", ExpandError::UnknownVariable("%q".into()))]
    #[case::dovecot_only_variable("%s", ExpandError::UnknownVariable("%s".into()))]
    #[case::nested_braces("%{a{b}c}", ExpandError::UnknownVariable("%{a{b}c}".into()))]
    #[case::escaped_brace(r"%{a\}b}", ExpandError::UnknownVariable(r"%{a\}b}".into()))]
    #[case::env_function("%{env:HOME}", ExpandError::UnknownVariable("%{env:HOME}".into()))]
    #[case::first_error_wins("%q%{foo}", ExpandError::UnknownVariable("%q".into()))]
    #[case::home_missing("/x/%h", ExpandError::MissingValue("%h".into()))]
    #[case::home_long_missing("%{home}", ExpandError::MissingValue("%{home}".into()))]
    #[case::uid_missing("%i", ExpandError::MissingValue("%i".into()))]
    #[case::gid_missing("%{gid}", ExpandError::MissingValue("%{gid}".into()))]
    #[case::lip_missing("%l", ExpandError::MissingValue("%l".into()))]
    #[case::rip_missing("%{remote_ip}", ExpandError::MissingValue("%{remote_ip}".into()))]
    #[case::trailing_percent(
        "abc%",
        ExpandError::Malformed { offset: 3, reason: "'%' at end" }
    )]
    #[case::ends_after_flags(
        "ab%5L",
        ExpandError::Malformed { offset: 2, reason: "template ends inside a variable" }
    )]
    #[case::unterminated(
        "/x/%{user",
        ExpandError::Malformed { offset: 3, reason: "unterminated %{" }
    )]
    #[case::unbalanced(
        "%{a{b}",
        ExpandError::Malformed { offset: 0, reason: "unterminated %{" }
    )]
    #[case::too_many_modifiers(
        "%LLLLLLLLLLLu",
        ExpandError::Malformed { offset: 0, reason: "too many modifiers (at most 10)" }
    )]
    #[case::width_too_large(
        "%2147483648u",
        ExpandError::Malformed { offset: 0, reason: "number too large" }
    )]
    #[case::offset_too_large(
        "x%1.99999999999u",
        ExpandError::Malformed { offset: 1, reason: "number too large" }
    )]
    fn errors(#[case] template: &str, #[case] expected: ExpandError) {
        assert_eq!(expand(template.as_bytes(), &vars(b"bob")), Err(expected));
    }

    #[test]
    fn width_is_bounded() {
        assert_eq!(ok("%65536u", "bob"), "bob");
        assert_eq!(ok("%065536u", "bob").len(), 65536);
        for template in [
            "%65537u",
            "%2147483647u",
            "%01000000000u",
            "%1000000000.256Nu",
        ] {
            assert_eq!(
                expand(template.as_bytes(), &vars(b"bob")),
                Err(ExpandError::Malformed {
                    offset: 0,
                    reason: "number too large"
                }),
                "{template}"
            );
        }
    }

    #[rstest]
    #[case::unknown(
        ExpandError::UnknownVariable("%{foo}".into()),
        "unknown variable %{foo}"
    )]
    #[case::home(
        ExpandError::MissingValue("%h".into()),
        "%h needs HOME, which is not set"
    )]
    #[case::remote_ip(
        ExpandError::MissingValue("%{rip}".into()),
        "%{rip} needs IP, which is not set"
    )]
    #[case::malformed(
        ExpandError::Malformed { offset: 12, reason: "'%' at end" },
        "malformed template at byte 12: '%' at end"
    )]
    fn error_messages(#[case] error: ExpandError, #[case] expected: &str) {
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn non_utf8_user() {
        let user: &[u8] = b"J\xf6rg@Ex\xe4mple.org";
        let v = vars(user);
        let cases: [(&[u8], &[u8]); 7] = [
            (b"%u", user),
            (b"%Lu", b"j\xf6rg@ex\xe4mple.org"),
            (b"%Un", b"J\xf6RG"),
            (b"%d", b"Ex\xe4mple.org"),
            (b"%Rn", b"gr\xf6J"),
            (b"%2u", b"J\xf6"),
            (b"/idx/\xff/%n", b"/idx/\xff/J\xf6rg"),
        ];
        for (template, expected) in cases {
            assert_eq!(
                expand(template, &v).as_deref(),
                Ok(expected),
                "template {:?}",
                String::from_utf8_lossy(template)
            );
        }
        // MD5 runs over the raw bytes, not over a lossy UTF-8 conversion.
        let md5 = expand(b"%Mu", &v).expect("md5");
        let lossy = expand(b"%Mu", &vars(String::from_utf8_lossy(user).as_bytes())).expect("md5");
        assert_eq!(md5.len(), 32);
        assert_ne!(md5, lossy);
        // An unknown non-UTF-8 name is reported lossily.
        assert_eq!(
            expand(b"%{\xff}", &v),
            Err(ExpandError::UnknownVariable("%{\u{fffd}}".into()))
        );
        assert_eq!(
            expand(b"%\xff", &v),
            Err(ExpandError::UnknownVariable("%\u{fffd}".into()))
        );
    }

    #[test]
    fn empty_user_and_template() {
        assert_eq!(expand(b"", &vars(b"bob")), Ok(Vec::new()));
        assert_eq!(expand(b"%u/%n/%d", &vars(b"")), Ok(b"//".to_vec()));
        assert_eq!(expand(b"plain", &vars(b"bob")), Ok(b"plain".to_vec()));
    }

    #[rstest]
    #[case::empty("", None)]
    #[case::static_only("/srv/idx", None)]
    #[case::percent_only("/srv/%%/x", None)]
    #[case::percent_with_flags("/srv/%L%/x", None)]
    #[case::first("%u", Some(0))]
    #[case::after_prefix("/srv/idx/%2.256Nu/%u", Some(9))]
    #[case::after_percent("100%%/%u", Some(6))]
    #[case::long_name("/a/%{user}", Some(3))]
    #[case::unknown("/a/%q", Some(3))]
    #[case::trailing_percent("abc%", Some(3))]
    #[case::unterminated("ab%{user", Some(2))]
    fn first_variable_offsets(#[case] template: &str, #[case] expected: Option<usize>) {
        assert_eq!(first_variable(template.as_bytes()), expected);
    }
}
