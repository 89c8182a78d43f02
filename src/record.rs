//! The host stamp on NFS (INDEX/.lasthost) and the local record of it
//! (LISTINDEX/.lasthost).
//!
//! INDEX/.lasthost holds one line, `<host> <token>`, and is always replaced
//! by a rename, so every write makes a new inode. The local record keeps
//! what this backend last wrote or saw there: inode, mtime with nanoseconds,
//! and content. The local list index is current only while all three agree.

use std::fmt;

/// The first line of a record file; the number is the format version.
const RECORD_MAGIC: &str = "nfs-hostchange-record 1";

/// The most bytes of INDEX/.lasthost that are read. A host name of at most
/// 255 bytes and a token fit; anything longer is treated as a change.
pub const STAMP_MAX: usize = 512;

/// What INDEX/.lasthost was when it was last looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Its inode number.
    pub ino: u64,
    /// Its mtime, seconds.
    pub mtime_sec: i64,
    /// Its mtime, nanoseconds.
    pub mtime_nsec: i64,
    /// Its content.
    pub content: Vec<u8>,
}

impl Stamp {
    /// The host that wrote the stamp: its first word.
    pub fn host(&self) -> String {
        let word = self
            .content
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or_default();
        crate::log::printable(word, 255)
    }

    /// Encodes the stamp as a local record file.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{RECORD_MAGIC}\nino {}\nmtime {}.{:09}\ncontent {}\n",
            self.ino,
            self.mtime_sec,
            self.mtime_nsec,
            hex(&self.content)
        )
        .into_bytes()
    }

    /// Decodes a local record file. An empty file is no record; anything
    /// that is not exactly the format is an error (and so not a match).
    pub fn decode(data: &[u8]) -> Result<Option<Stamp>, RecordError> {
        if data.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(data).map_err(|_| RecordError("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or(RecordError("truncated (no final newline)"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(RECORD_MAGIC) {
            return Err(RecordError("unknown format"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(RecordError("missing field"))
        };
        let ino = field("ino")?;
        if ino.is_empty() || !ino.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RecordError("bad inode"));
        }
        let ino = ino.parse::<u64>().map_err(|_| RecordError("bad inode"))?;
        let (sec, nsec) = field("mtime")?
            .split_once('.')
            .ok_or(RecordError("bad mtime"))?;
        let content = unhex(field("content")?).ok_or(RecordError("bad content"))?;
        if lines.next().is_some() {
            return Err(RecordError("trailing data"));
        }
        let mtime_sec = parse_int(sec).ok_or(RecordError("bad mtime"))?;
        if nsec.len() != 9 || !nsec.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RecordError("bad mtime"));
        }
        let mtime_nsec = parse_int(nsec).ok_or(RecordError("bad mtime"))?;
        Ok(Some(Stamp {
            ino,
            mtime_sec,
            mtime_nsec,
            content,
        }))
    }
}

/// Why a record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordError(pub &'static str);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt host record: {}", self.0)
    }
}

impl std::error::Error for RecordError {}

/// A plain decimal integer, optionally negative; no `+`, no spaces.
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The content of a new INDEX/.lasthost: host name, a random token.
pub fn new_stamp_content(host: &str, token: &[u8]) -> Vec<u8> {
    format!("{host} {}\n", hex(token)).into_bytes()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn sample() -> Stamp {
        Stamp {
            ino: 1234567,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 5,
            content: b"backend-b 00ff\n".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let text = s.encode();
        assert_eq!(
            String::from_utf8(text.clone()).expect("utf8"),
            "nfs-hostchange-record 1\nino 1234567\nmtime 1700000000.000000005\n\
             content 6261636b656e642d6220303066660a\n"
        );
        assert_eq!(Stamp::decode(&text), Ok(Some(s)));
    }

    #[test]
    fn negative_mtime_round_trips() {
        let s = Stamp {
            mtime_sec: -3,
            content: Vec::new(),
            ..sample()
        };
        assert_eq!(Stamp::decode(&s.encode()), Ok(Some(s)));
    }

    #[test]
    fn empty_is_no_record() {
        assert_eq!(Stamp::decode(b""), Ok(None));
    }

    #[rstest]
    #[case::garbage(&b"hello"[..])]
    #[case::other_version(&b"nfs-hostchange-record 2\nino 1\nmtime 1.000000000\ncontent \n"[..])]
    #[case::truncated(&b"nfs-hostchange-record 1\nino 1\nmtime 1.0000"[..])]
    #[case::no_newline(&b"nfs-hostchange-record 1\nino 1\nmtime 1.000000000\ncontent 00"[..])]
    #[case::bad_ino(&b"nfs-hostchange-record 1\nino x\nmtime 1.000000000\ncontent \n"[..])]
    #[case::plus_ino(&b"nfs-hostchange-record 1\nino +1\nmtime 1.000000000\ncontent \n"[..])]
    #[case::short_nsec(&b"nfs-hostchange-record 1\nino 1\nmtime 1.5\ncontent \n"[..])]
    #[case::odd_hex(&b"nfs-hostchange-record 1\nino 1\nmtime 1.000000000\ncontent 0\n"[..])]
    #[case::upper_hex(&b"nfs-hostchange-record 1\nino 1\nmtime 1.000000000\ncontent AA\n"[..])]
    #[case::extra(&b"nfs-hostchange-record 1\nino 1\nmtime 1.000000000\ncontent \nx\n"[..])]
    #[case::missing(&b"nfs-hostchange-record 1\nino 1\ncontent \n"[..])]
    #[case::binary(&b"\xff\xfe"[..])]
    #[case::nul(&b"\0\0\0\0"[..])]
    fn corrupt_records_are_errors(#[case] data: &[u8]) {
        assert!(
            Stamp::decode(data).is_err(),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }

    #[test]
    fn every_truncation_of_a_record_is_rejected() {
        let full = sample().encode();
        for len in 1..full.len() {
            assert!(
                Stamp::decode(&full[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn host_is_the_first_word() {
        let mut s = sample();
        assert_eq!(s.host(), "backend-b");
        s.content = b"\n".to_vec();
        assert_eq!(s.host(), "");
    }

    #[test]
    fn new_content() {
        assert_eq!(new_stamp_content("a", &[1, 0xab]), b"a 01ab\n");
    }
}
