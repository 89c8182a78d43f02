//! Pieces shared by the operators' commands' argument parsing.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Matches the option `--NAME` in `word`, written `--NAME VALUE` or
/// `--NAME=VALUE`. `None` when `word` is not that option; otherwise its
/// value, from `word` itself or the next of `rest` (an error when there is
/// none).
pub fn option_value<'a>(
    word: &[u8],
    name: &str,
    rest: &mut impl Iterator<Item = &'a OsString>,
) -> Option<Result<OsString, String>> {
    let option = word.strip_prefix(b"--")?.strip_prefix(name.as_bytes())?;
    match option {
        [] => Some(
            rest.next()
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value")),
        ),
        [b'=', value @ ..] => Some(Ok(OsStr::from_bytes(value).to_os_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn both_forms_and_the_missing_value() {
        let rest = words(&["/etc/x.conf", "more"]);
        let mut it = rest.iter();
        assert_eq!(
            option_value(b"--config", "config", &mut it),
            Some(Ok(OsString::from("/etc/x.conf")))
        );
        assert_eq!(it.next(), Some(&OsString::from("more")));
        let mut none = [].iter();
        assert_eq!(
            option_value(b"--config=/a=b", "config", &mut none),
            Some(Ok(OsString::from("/a=b")))
        );
        assert_eq!(
            option_value(b"--config", "config", &mut none),
            Some(Err("--config needs a value".to_string()))
        );
        assert_eq!(option_value(b"--configx", "config", &mut none), None);
        assert_eq!(option_value(b"--home", "config", &mut none), None);
        assert_eq!(option_value(b"-config", "config", &mut none), None);
    }
}
