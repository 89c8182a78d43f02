//! Property tests of the parsers and the expander, called as a library:
//! `varexpand::expand`, `mail_location::{resolve, layout, MailLocation}`,
//! `record::Stamp` and `settings::parse`.
//!
//! Inputs come from a small seeded xorshift generator (no dependency): byte
//! strings built from the fragments each grammar cares about (`%`, `{`,
//! `:`, `/`, `.`, NUL, digits, modifier letters...) mixed with arbitrary
//! bytes. Every run uses the same seed, so a failure is reproducible; set
//! `NFS_HOSTCHANGE_SEED` to explore others. A failure names the seed, the
//! case number and the input (escaped).
//!
//! Properties: no panic on any input; every user a resolve accepts stays
//! inside the LISTINDEX root at exactly the template's depth with plain
//! parts; escaping and expansion agree; records round-trip; the settings
//! parser names real lines.

use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path};

use md5::{Digest, Md5};

use nfs_hostchange::mail_location::{layout, resolve, MailLocation, PathError};
use nfs_hostchange::record::Stamp;
use nfs_hostchange::settings;
use nfs_hostchange::varexpand::{expand, Vars};

// ---------------------------------------------------------------------------
// The generator.

/// xorshift64* (Vigna): small, fast, and good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // The state must not be 0.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// Up to `max` bytes: mostly from `alphabet`, sometimes any byte.
    fn bytes_from(&mut self, alphabet: &[u8], max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                if self.chance(10) {
                    self.next() as u8
                } else {
                    alphabet[self.below(alphabet.len())]
                }
            })
            .collect()
    }

    /// Up to `pieces` fragments, each from `fragments` or a random byte.
    fn mix(&mut self, fragments: &[&[u8]], pieces: usize) -> Vec<u8> {
        let n = self.below(pieces + 1);
        let mut out = Vec::new();
        for _ in 0..n {
            if self.chance(15) {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(self.pick(fragments));
            }
        }
        out
    }
}

/// SplitMix64's finaliser: turns (seed, case number) into unrelated states.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed: `NFS_HOSTCHANGE_SEED` (decimal or 0x hex), else a fixed one.
fn seed() -> u64 {
    let Ok(text) = std::env::var("NFS_HOSTCHANGE_SEED") else {
        return 0x5eed_0005_4a2d_e111;
    };
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("NFS_HOSTCHANGE_SEED={text:?} is not a number"))
}

/// Bytes as an escaped string, for failure messages.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Runs `body` for `cases` inputs, each from its own generator, and turns a
/// panic (of the code under test or of a property) into a failure that
/// names the seed and the case. `body` returns a description of its input.
fn for_all(name: &str, cases: usize, mut body: impl FnMut(&mut Rng, &mut String)) {
    let seed = seed();
    for case in 0..cases {
        let mut rng = Rng::new(splitmix64(seed ^ splitmix64(case as u64)));
        let mut input = String::new();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&mut rng, &mut input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{name}: case {case} (NFS_HOSTCHANGE_SEED={seed:#x}) failed: {message}\ninput: {input}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Variable expansion.

/// What a template is made of.
const TEMPLATE_FRAGMENTS: &[&[u8]] = &[
    b"%",
    b"%%",
    b"%u",
    b"%n",
    b"%d",
    b"%h",
    b"%i",
    b"%l",
    b"%r",
    b"%{",
    b"}",
    b"{",
    b"\\",
    b"%{user}",
    b"%{username}",
    b"%{domain}",
    b"%{home}",
    b"%{uid}",
    b"%{gid}",
    b"%{lip}",
    b"%{rip}",
    b"%{nope}",
    b"%{a{b}c}",
    b"-",
    b"0",
    b".",
    b"1",
    b"2",
    b"7",
    b"256",
    b"L",
    b"U",
    b"E",
    b"X",
    b"R",
    b"H",
    b"N",
    b"M",
    b"D",
    b"T",
    b"u",
    b"n",
    b"d",
    b"/",
    b"..",
    b"@",
    b" ",
    b"\0",
    b"\xff",
    b"%2.256Nu",
    b"%-3.2u",
    b"%0.-1u",
    b"%.-9u",
    b"%03Xi",
    b"%-0u",
];

/// Bytes user names and other values are made of.
const VALUE_ALPHABET: &[u8] = b"ab@.%/:{}\\-0123456789 \t\0\xff";

fn random_vars<'a>(rng: &mut Rng, store: &'a mut [Vec<u8>; 6]) -> Vars<'a> {
    for (i, value) in store.iter_mut().enumerate() {
        *value = if i == 4 && rng.chance(50) {
            // uid: often a number, for %X.
            rng.next().to_string().into_bytes()
        } else {
            rng.bytes_from(VALUE_ALPHABET, 12)
        };
    }
    let present: [bool; 5] = std::array::from_fn(|_| rng.chance(70));
    let store: &'a [Vec<u8>; 6] = store;
    let [user, home, uid, gid, lip, rip] = store;
    let opt = |on: bool, v: &'a Vec<u8>| on.then_some(v.as_slice());
    Vars {
        user,
        home: opt(present[0], home),
        uid: opt(present[1], uid),
        gid: opt(present[2], gid),
        local_ip: opt(present[3], lip),
        remote_ip: opt(present[4], rip),
    }
}

/// Any template, any values: an answer (value or error), never a panic,
/// and a template without `%` is copied as it is.
#[test]
fn expand_never_panics() {
    for_all("expand_never_panics", 40_000, |rng, input| {
        let template = rng.mix(TEMPLATE_FRAGMENTS, 12);
        let mut store: [Vec<u8>; 6] = Default::default();
        let vars = random_vars(rng, &mut store);
        *input = format!("template {} vars {vars:?}", show(&template));
        let result = expand(&template, &vars);
        if !template.contains(&b'%') {
            assert_eq!(result.as_deref(), Ok(&template[..]));
        }
        let longest_number = template
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        if let (Ok(out), true) = (&result, longest_number <= 3) {
            // At most 12 variables of at most 999 bytes each. Catches
            // padding or repetition that runs away.
            assert!(out.len() <= 16 * 1024, "output of {} bytes", out.len());
        }
    });
}

/// Doubling every `%` (how HOME is put into a template) gives the text
/// back: a HOME with `%` in it is never expanded again. And `%u`, `%n@%d`
/// and `%Lu` give the user name as it is (as bytes, not as UTF-8).
#[test]
fn escaping_and_user_variables_agree_with_expansion() {
    for_all("escaping_and_user_variables", 30_000, |rng, input| {
        let text = rng.bytes_from(VALUE_ALPHABET, 24);
        let user = rng.bytes_from(VALUE_ALPHABET, 16);
        *input = format!("text {} user {}", show(&text), show(&user));
        let vars = Vars {
            user: &user,
            home: None,
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        };
        let mut escaped = Vec::new();
        for &b in &text {
            if b == b'%' {
                escaped.push(b'%');
            }
            escaped.push(b);
        }
        assert_eq!(expand(&escaped, &vars), Ok(text.clone()), "escaped text");
        assert_eq!(expand(b"%u", &vars), Ok(user.clone()), "%u");
        assert_eq!(expand(b"%{user}", &vars), Ok(user.clone()), "%{{user}}");
        assert_eq!(expand(b"%Lu", &vars), Ok(user.to_ascii_lowercase()), "%Lu");
        if user.contains(&b'@') {
            assert_eq!(expand(b"%n@%d", &vars), Ok(user.clone()), "%n@%d");
        } else {
            assert_eq!(expand(b"%n", &vars), Ok(user.clone()), "%n");
            assert_eq!(expand(b"%d", &vars), Ok(Vec::new()), "%d");
        }
        // %2.256Nu, computed here independently: MD5, first 8 bytes big
        // endian, modulo 256, two hex digits.
        let digest = Md5::digest(&user);
        let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 256;
        assert_eq!(
            expand(b"%2.256Nu", &vars),
            Ok(format!("{n:02x}").into_bytes()),
            "%2.256Nu"
        );
        assert_eq!(
            expand(b"%Ru", &vars).map(|mut v| {
                v.reverse();
                v
            }),
            Ok(user.clone()),
            "%Ru"
        );
    });
}

// ---------------------------------------------------------------------------
// mail_location.

const LOCATION_FRAGMENTS: &[&[u8]] = &[
    b"maildir:",
    b"mdbox:",
    b"sdbox:",
    b"~/",
    b"~",
    b"/",
    b"%u",
    b"%n",
    b"%d",
    b"%h",
    b"%",
    b"%%",
    b":",
    b"::",
    b"=",
    b"INDEX=",
    b"LISTINDEX=",
    b"CONTROL=",
    b"LAYOUT=fs",
    b"MEMORY",
    b"/dev/shm/li/",
    b"/srv/mail/",
    b"%2.256Nu",
    b"%1u",
    b"%Lu",
    b"dovecot.list.index",
    b".lasthost",
    b".",
    b"..",
    b"%{",
    b"}",
    b"%{user}",
    b"\0",
    b"\xff",
    b"x",
];

/// A mail_location: mostly the usual shape (format, root, maybe INDEX,
/// LISTINDEX with one to three variable levels), then damaged a little;
/// sometimes plain fragments.
fn random_location(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(25) {
        return rng.mix(LOCATION_FRAGMENTS, 14);
    }
    let mut out = rng
        .pick(&[&b"maildir:"[..], b"mdbox:", b"sdbox:", b""])
        .to_vec();
    out.extend_from_slice(rng.pick(&[
        &b"~/Maildir"[..],
        b"~",
        b"/srv/mail/%u",
        b"/srv/mail/%d/%n",
        b"%h/Maildir",
        b"/srv/%{user}/m",
    ]));
    if rng.chance(40) {
        out.extend_from_slice(b":INDEX=");
        out.extend_from_slice(rng.pick(&[
            &b"/srv/idx/%u"[..],
            b"~/idx",
            b"MEMORY",
            b"/srv/idx/%n/%d/",
            b"%h/i",
        ]));
    }
    if rng.chance(90) {
        out.extend_from_slice(b":LISTINDEX=");
        out.extend_from_slice(rng.pick(&[&b"/dev/shm/li"[..], b"/run/l/x", b"~/li", b""]));
        for _ in 0..1 + rng.below(3) {
            out.push(b'/');
            let level = rng.mix(
                &[
                    b"%u",
                    b"%n",
                    b"%d",
                    b"%2.256Nu",
                    b"%1u",
                    b"%Lu",
                    b"%Ru",
                    b"%{user}",
                    b"x",
                    b"-",
                    b".",
                    b"%%",
                    b"%h",
                ],
                3,
            );
            out.extend_from_slice(&level);
        }
        out.push(b'/');
        out.extend_from_slice(rng.pick(&[&b"dovecot.list.index"[..], b"list", b".last", b""]));
    }
    // A little damage.
    for _ in 0..rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(3) {
            0 if at < out.len() => {
                out.remove(at);
            }
            1 => out.insert(at, rng.next() as u8),
            _ => {
                let fragment = rng.pick(LOCATION_FRAGMENTS);
                out.splice(at..at, fragment.iter().copied());
            }
        }
    }
    out
}

/// Any bytes: parse, resolve and layout answer without panicking.
#[test]
fn mail_location_functions_never_panic() {
    let mut resolved_ok = 0usize;
    for_all(
        "mail_location_functions_never_panic",
        30_000,
        |rng, input| {
            let location = random_location(rng);
            let mut store: [Vec<u8>; 6] = Default::default();
            let vars = random_vars(rng, &mut store);
            *input = format!("location {} vars {vars:?}", show(&location));
            let parsed = MailLocation::parse(&location);
            // Parts never hold the separator they were split on, unless it
            // was escaped as `::` (which needs two colons in the input).
            let colons = location.iter().filter(|&&b| b == b':').count();
            let kept = parsed.root.iter().filter(|&&b| b == b':').count()
                + parsed
                    .keys
                    .iter()
                    .map(|(k, v)| k.iter().chain(v).filter(|&&b| b == b':').count())
                    .sum::<usize>();
            assert!(kept * 2 <= colons, "{parsed:?}");
            let resolved = resolve(&location, &vars);
            let layout = layout(&location);
            if let Ok(paths) = &resolved {
                resolved_ok += 1;
                check_paths(paths, layout.as_ref().ok(), &location);
            }
        },
    );
    eprintln!("mail_location_functions_never_panic: {resolved_ok} resolved");
    // Catches a generator that never builds a location that resolves (the
    // path checks would then check nothing).
    assert!(resolved_ok > 300, "only {resolved_ok} locations resolved");
}

/// Checks what a successful resolve gave.
fn check_paths(
    paths: &nfs_hostchange::mail_location::UserPaths,
    layout: Option<&nfs_hostchange::mail_location::Layout>,
    template: &[u8],
) {
    let root = &paths.listindex_root;
    // LISTINDEX is below the root, component by component.
    assert!(root.is_absolute(), "root {}", root.display());
    assert_ne!(root.as_path(), Path::new("/"));
    assert!(
        paths.listindex.starts_with(root),
        "{} is not below {}",
        paths.listindex.display(),
        root.display()
    );
    // Plain parts only: no empty, `.` or `..` part, no `/` or NUL in one,
    // and no `:` (none of the templates has one in LISTINDEX).
    let listindex_template = template
        .windows(10)
        .position(|w| w == b"LISTINDEX=")
        .map_or(&[][..], |at| &template[at..]);
    for part in &paths.listindex_parts {
        let bytes = part.as_bytes();
        assert!(
            !bytes.is_empty() && bytes != b"." && bytes != b"..",
            "part {:?}",
            part
        );
        assert!(
            !bytes.contains(&b'/') && !bytes.contains(&0),
            "part {part:?}"
        );
        if !listindex_template.contains(&b':') {
            assert!(!bytes.contains(&b':'), "part {part:?}");
        }
    }
    // Exactly root + parts, nothing collapsed.
    let mut rebuilt = root.clone();
    for part in &paths.listindex_parts {
        rebuilt.push(part);
    }
    assert_eq!(rebuilt, paths.listindex);
    let mut want = root.as_os_str().as_bytes().to_vec();
    for part in &paths.listindex_parts {
        want.push(b'/');
        want.extend_from_slice(part.as_bytes());
    }
    assert_eq!(paths.listindex.as_os_str().as_bytes(), &want[..]);
    assert_eq!(
        paths.listindex.components().count(),
        root.components().count() + paths.listindex_parts.len()
    );
    // The depth is the template's, for every user.
    if let Some(layout) = layout {
        assert_eq!(&layout.root, root, "layout root");
        assert_eq!(paths.listindex_parts.len(), layout.depth, "depth");
        assert_eq!(layout.prefix, paths.prefix);
    }
    // The prefix is a plain file name.
    let prefix = paths.prefix.as_bytes();
    assert!(!prefix.is_empty() && prefix != b"." && prefix != b"..");
    assert!(
        !prefix.contains(&b'/') && !prefix.contains(&0),
        "the list index file name {} holds '/' or NUL: no file can match it, so \
         nothing would ever be dropped",
        show(prefix)
    );
    // INDEX is absolute, without `.`/`..` parts or NUL.
    let index = paths.index.as_os_str().as_bytes();
    assert!(paths.index.is_absolute(), "INDEX {}", show(index));
    assert!(!index.contains(&0), "INDEX {}", show(index));
    assert!(
        !index.split(|&b| b == b'/').any(|p| p == b"." || p == b".."),
        "INDEX {}",
        show(index)
    );
    assert!(
        paths
            .index
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "INDEX {}",
        show(index)
    );
}

/// The LISTINDEX layouts users are resolved against.
const LAYOUTS: &[&str] = &[
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%2.256Nu/%u/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%d/%n/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%u/dovecot.list.index",
    "mdbox:/srv/mail/%d/%n:INDEX=/srv/idx/%u:LISTINDEX=/run/li/%1u/%Lu/list",
    "maildir:/srv/%u/Maildir:LISTINDEX=/dev/shm/li/%n-%d/x/%u/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/pre%u/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%Ru/%3.1u/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%{user}/%{domain}/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%2.256Hu/%2.256Nn/%u/dovecot.list.index",
    "maildir:~/Maildir:LISTINDEX=/dev/shm/li/%u/%d/%n/dovecot.list.index",
    "maildir:%h/Maildir:LISTINDEX=/dev/shm/li/%u/dovecot.list.index",
];

/// User names that are known trouble, besides random ones.
const NASTY_USERS: &[&[u8]] = &[
    b"",
    b".",
    b"..",
    b"...",
    b"/",
    b"//",
    b"a/..",
    b"../a",
    b"a/b",
    b"..@..",
    b".@.",
    b"@",
    b"a@",
    b"@a",
    b"a@b/..",
    b"a@../b",
    b"\0",
    b"a\0b",
    b"%",
    b"%u",
    b"%%",
    b":",
    b"a:b",
    b"a::b",
    b"a:LISTINDEX=/etc/x",
    b"..@example.com",
    b"user@..",
    b"\xff\xfe",
    b".\0.",
];

/// Hostile user names never lead outside the LISTINDEX root, never collapse
/// a level, and are refused (not reported as configuration errors).
#[test]
fn resolve_keeps_every_user_inside_the_listindex_root() {
    let mut accepted = vec![0usize; LAYOUTS.len()];
    let mut refused = vec![0usize; LAYOUTS.len()];
    for_all("resolve_keeps_every_user_inside", 60_000, |rng, input| {
        let which = rng.below(LAYOUTS.len());
        let template = LAYOUTS[which].as_bytes();
        let user = if rng.chance(10) {
            rng.pick(NASTY_USERS).to_vec()
        } else {
            rng.bytes_from(b"ab./:%@\0-", 10)
        };
        // A plain HOME (the userdb's, trusted), so that every refusal
        // comes from the user name.
        let home = b"/home/someone".to_vec();
        *input = format!("template {} user {}", LAYOUTS[which], show(&user));
        let vars = Vars {
            user: &user,
            home: Some(&home),
            uid: Some(b"1000"),
            gid: Some(b"1000"),
            local_ip: Some(b"127.0.0.1"),
            remote_ip: Some(b"127.0.0.2"),
        };
        let layout = layout(template).expect("the layouts are valid");
        match resolve(template, &vars) {
            Ok(paths) => {
                accepted[which] += 1;
                check_paths(&paths, Some(&layout), template);
            }
            Err(PathError::Refused(_)) => refused[which] += 1,
            // A user name must not be able to produce a "configuration
            // error": the operator would look for a mistake in the file.
            Err(e) => panic!("not a refusal: {e}"),
        }
    });
    // Catches a vacuous run: every layout saw both outcomes.
    for (i, layout) in LAYOUTS.iter().enumerate() {
        assert!(
            accepted[i] > 100 && refused[i] > 100,
            "{layout}: {} accepted, {} refused",
            accepted[i],
            refused[i]
        );
    }
}

/// A HOME from the userdb is trusted to name the user's directory, but
/// INDEX built from it must still be absolute and plain, or refused.
#[test]
fn resolve_with_random_homes_gives_a_plain_index_or_an_error() {
    let mut resolved_ok = 0usize;
    for_all("resolve_with_random_homes", 20_000, |rng, input| {
        let template = LAYOUTS[rng.below(LAYOUTS.len())].as_bytes();
        let home = rng.bytes_from(b"/a.%:~\0", 14);
        *input = format!("template {} home {}", show(template), show(&home));
        let vars = Vars {
            user: b"bob",
            home: Some(&home),
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        };
        if let Ok(paths) = resolve(template, &vars) {
            resolved_ok += 1;
            check_paths(&paths, layout(template).ok().as_ref(), template);
            // HOME is used as it is: a `%` in it is not expanded again.
            let index = paths.index.as_os_str().as_bytes();
            let mut want = home.clone();
            if template.starts_with(b"maildir:~/Maildir:") {
                if want.last() != Some(&b'/') {
                    want.push(b'/');
                }
                want.extend_from_slice(b"Maildir");
                assert_eq!(show(index), show(&want), "INDEX from ~/Maildir");
            } else if template.starts_with(b"maildir:%h/Maildir:") {
                want.extend_from_slice(b"/Maildir");
                assert_eq!(show(index), show(&want), "INDEX from %h/Maildir");
            }
        }
    });
    eprintln!("resolve_with_random_homes: {resolved_ok} resolved");
    assert!(resolved_ok > 1000, "only {resolved_ok} homes resolved");
}

/// A location built from known parts (a `:` inside a value written `::`)
/// parses back into those parts. Values are not empty and do not start with
/// `:`, where the grammar itself is ambiguous.
#[test]
fn mail_location_parse_gives_back_the_parts_it_was_built_from() {
    for_all("mail_location_parse_round_trip", 20_000, |rng, input| {
        let value = |rng: &mut Rng| loop {
            let v = rng.bytes_from(b"/a=:%~.", 8);
            if !v.is_empty() && v[0] != b':' {
                return v;
            }
        };
        let escape = |v: &[u8]| {
            let mut out = Vec::new();
            for &b in v {
                out.push(b);
                if b == b':' {
                    out.push(b':');
                }
            }
            out
        };
        let format = rng.pick(&["maildir", "mdbox", "sdbox", "mbox"]).to_string();
        let root = value(rng);
        let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.below(4))
            .map(|_| {
                let key = rng
                    .pick(&["INDEX", "LISTINDEX", "CONTROL", "LAYOUT"])
                    .as_bytes()
                    .to_vec();
                (key, value(rng))
            })
            .collect();
        let mut location = format!("{format}:").into_bytes();
        location.extend_from_slice(&escape(&root));
        for (k, v) in &keys {
            location.push(b':');
            location.extend_from_slice(k);
            location.push(b'=');
            location.extend_from_slice(&escape(v));
        }
        *input = show(&location);
        let parsed = MailLocation::parse(&location);
        assert_eq!(parsed.format.as_deref(), Some(format.as_bytes()));
        assert_eq!(parsed.root, root);
        assert_eq!(parsed.keys, keys);
    });
}

// ---------------------------------------------------------------------------
// The local record.

fn random_stamp(rng: &mut Rng) -> Stamp {
    let content_len = rng.below(80);
    Stamp {
        ino: match rng.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => rng.next(),
        },
        mtime_sec: match rng.below(5) {
            0 => 0,
            1 => i64::MIN,
            2 => i64::MAX,
            3 => -(rng.below(1 << 20) as i64),
            _ => rng.next() as i64,
        },
        mtime_nsec: match rng.below(3) {
            0 => 0,
            1 => 999_999_999,
            _ => (rng.next() % 1_000_000_000) as i64,
        },
        content: (0..content_len).map(|_| rng.next() as u8).collect(),
    }
}

/// What is written is read back exactly.
#[test]
fn records_round_trip() {
    for_all("records_round_trip", 30_000, |rng, input| {
        let stamp = random_stamp(rng);
        *input = format!("{stamp:?}");
        let encoded = stamp.encode();
        assert_eq!(Stamp::decode(&encoded), Ok(Some(stamp)));
    });
}

/// Any bytes, and every damage to a valid record (cut, byte changed, byte
/// inserted or removed): an answer, never a panic. A cut record never
/// decodes; what does decode is stable under a second round.
#[test]
fn record_decode_never_panics_and_rejects_cut_records() {
    for_all("record_decode", 40_000, |rng, input| {
        let valid = random_stamp(rng).encode();
        let data = match rng.below(5) {
            0 => rng.bytes_from(
                b"nfs-hostchange-record 1\nino mtime content 0123456789abcdef.-",
                120,
            ),
            1 => valid[..rng.below(valid.len())].to_vec(),
            2 => {
                let mut d = valid.clone();
                let at = rng.below(d.len());
                d[at] = rng.next() as u8;
                d
            }
            3 => {
                let mut d = valid.clone();
                let at = rng.below(d.len() + 1);
                d.insert(at, *rng.pick(&[&b'\n', &b' ', &b'0', &b'-', &b'.', &b'a']));
                d
            }
            _ => {
                let mut d = valid.clone();
                d.remove(rng.below(d.len()));
                d
            }
        };
        *input = show(&data);
        let decoded = Stamp::decode(&data);
        if data.len() < valid.len() && valid.starts_with(&data) && !data.is_empty() {
            assert!(decoded.is_err(), "a cut record decoded: {decoded:?}");
        }
        if let Ok(Some(stamp)) = &decoded {
            assert_eq!(Stamp::decode(&stamp.encode()), Ok(Some(stamp.clone())));
        }
    });
}

// ---------------------------------------------------------------------------
// The settings file.

const SETTINGS_FRAGMENTS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"#",
    b" ",
    b"\t",
    b"=",
    b" = ",
    b"\"",
    b"mail_location",
    b"mail_uid",
    b"nfs_hostchange_migration",
    b"nfs_hostchange_hostname",
    b"nfs_hostchange_log",
    b"mail_path",
    b"mail_index_path",
    b"mailbox_list_index_prefix",
    b"mail_driver",
    b"dovecot_config_version",
    b"2.4.0",
    b"2.3",
    b"yes",
    b"no",
    b"maybe",
    b"syslog",
    b"stderr",
    b"dovecot",
    b"maildir:~/Maildir:LISTINDEX=/l/%u/x",
    b"%{user}",
    b"backend-a",
    b"two words",
    b"\xff",
    b"\0",
    b"unknown_key",
];

/// Any text: an answer, never a panic; every problem names the file and a
/// line that exists.
#[test]
fn settings_parse_never_panics_and_names_real_lines() {
    let file = Path::new("/etc/dovecot/nfs-hostchange.conf");
    for_all("settings_parse", 30_000, |rng, input| {
        let text = rng.mix(SETTINGS_FRAGMENTS, 30);
        *input = show(&text);
        let loaded = settings::parse(&text, file);
        let lines = text.split(|&b| b == b'\n').count();
        for problem in loaded.errors.iter().chain(&loaded.warnings) {
            assert_eq!(problem.file, file);
            assert!(
                (1..=lines).contains(&problem.line),
                "line {} of {lines}: {problem}",
                problem.line
            );
        }
        assert!(loaded.errors.len() + loaded.warnings.len() <= lines);
    });
}

/// Valid lines in any order, with comments, blanks, CRLF, quotes and
/// unknown keys: exactly the predicted warnings and errors, on the
/// predicted lines (an unknown key warns; a known key set again is an
/// error naming the first line).
#[test]
fn settings_parse_predicts_duplicates_and_unknown_keys() {
    let file = Path::new("/x.conf");
    let good: &[(&str, &[&str])] = &[
        (
            "mail_location",
            &[
                "maildir:~/Maildir:LISTINDEX=/dev/shm/l/%2.256Nu/%u/dovecot.list.index",
                "mdbox:/srv/%u",
            ],
        ),
        ("nfs_hostchange_migration", &["yes", "no", "YES", "0"]),
        ("nfs_hostchange_hostname", &["backend-a", "b.example.com"]),
        ("nfs_hostchange_log", &["syslog", "dovecot", "stderr"]),
        ("mail_uid", &["vmail", "5000"]),
    ];
    for_all("settings_parse_predicts", 20_000, |rng, input| {
        let mut text = String::new();
        let mut first: Vec<(&str, usize)> = Vec::new();
        let mut want_errors = Vec::new();
        let mut want_warnings = Vec::new();
        let n = rng.below(12);
        for line in 1..=n {
            let eol = if rng.chance(20) { "\r\n" } else { "\n" };
            match rng.below(6) {
                0 => text.push_str(&format!("# comment = {line}{eol}")),
                1 => text.push_str(&format!("{}{eol}", rng.pick(&["", "  ", "\t"]))),
                2 => {
                    text.push_str(&format!("unknown_{line} = x{eol}"));
                    want_warnings.push(line);
                }
                _ => {
                    let (key, values) = good[rng.below(good.len())];
                    let value = values[rng.below(values.len())];
                    let quoted = if rng.chance(30) {
                        format!("\"{value}\"")
                    } else {
                        value.to_string()
                    };
                    let space = rng.pick(&["", " ", "\t"]);
                    text.push_str(&format!("{space}{key}{space}={space}{quoted}{eol}"));
                    match first.iter().find(|(k, _)| *k == key) {
                        Some(&(_, at)) => want_errors.push((line, at)),
                        None => first.push((key, line)),
                    }
                }
            }
        }
        *input = format!("{text:?}");
        let loaded = settings::parse(text.as_bytes(), file);
        let errors: Vec<usize> = loaded.errors.iter().map(|e| e.line).collect();
        assert_eq!(
            errors,
            want_errors.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            "errors: {:?}",
            loaded.errors
        );
        for (error, (_, at)) in loaded.errors.iter().zip(&want_errors) {
            assert!(
                error.message.contains(&format!("first on line {at}")),
                "{error}"
            );
        }
        let warnings: Vec<usize> = loaded.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warnings, want_warnings, "warnings: {:?}", loaded.warnings);
        // The first value of each key is the one kept.
        if let Some(&(_, line)) = first.iter().find(|(k, _)| *k == "mail_location") {
            assert_eq!(
                loaded.settings.mail_location_origin,
                format!("{} line {line}", file.display())
            );
        }
    });
}
