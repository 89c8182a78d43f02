//! Dovecot 2.4 variable expansion, `%{variable | filter | filter ...}`, as
//! done by `src/lib-var-expand/` in Dovecot 2.4: the subset that mail path
//! templates use.
//!
//! Outside `%{...}` every byte is literal: a `%` not followed by `{` stays a
//! `%` (so Dovecot 2.3's `%u` is the two characters `%u` here), and `%%{`
//! stands for a literal `%{`. Inside, an expression is a pipeline: its first
//! element names a variable (or, when no variable has that name, a filter),
//! and every `| filter` transforms the value. A filter may take arguments,
//! `substr(0, 8)`, and may be followed by one arithmetic step, `% 256`.
//!
//! Variables: `user`, `username`, `domain`, `home`, `uid`, `gid`,
//! `local_ip`, `remote_ip`. Filters: `lower`, `upper`, `username`,
//! `domain`, `md5`, `sha1`, `sha256` (each with `rounds=` and `salt=`),
//! `substr(offset[, length])`, `hex[(width)]`, `hexlify[(width)]`,
//! `reverse`, `literal(value)`, and the arithmetic steps `+ - * / %`.
//!
//! Hashes produce binary values, as in Dovecot: `% N` on a binary value
//! reads its last (at most) 8 bytes as a big-endian number, and a value
//! still binary at the end of the pipeline is written as lower-case hex. So
//! `%{user | md5 | substr(0, 8) % 256 | hex(2)}` is 2.3's `%2.256Nu`.
//!
//! Where Dovecot would log and go on, this module refuses instead: an
//! unknown variable, filter or character, or a variable with no value, is
//! an error, since a path built from it is not one this program should
//! touch. Providers (`%{env:NAME}`...), `default`, `if` and the other
//! filters of Dovecot are not supported and are reported as such.

use std::fmt;

use md5::{Digest, Md5};

use crate::varexpand::Vars;

/// Dovecot's `MAX_PROGRAM_SIZE`: the longest template it compiles.
const TEMPLATE_MAX: usize = 8192;

/// The filters this module knows, for messages.
const FILTERS: &str =
    "lower, upper, username, domain, md5, sha1, sha256, substr, hex, hexlify, reverse, literal";

/// Why a template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// The template is not well formed. Holds the byte offset and a reason.
    Syntax {
        /// Byte offset in the template where reading stopped.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },
    /// A variable this program does not know, e.g. `%{foo}` or `%{env:X}`.
    UnknownVariable(String),
    /// A known variable without a value (e.g. `home` with no HOME).
    MissingValue(String),
    /// A filter Dovecot has but this program does not implement, or none
    /// at all.
    UnsupportedFilter(String),
    /// A filter refused its input or its arguments, as Dovecot's would.
    Filter {
        /// The filter's name.
        filter: String,
        /// Why, lowercase.
        reason: String,
    },
    /// The template is longer than Dovecot accepts.
    TooLong,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Syntax { offset, reason } => {
                write!(f, "malformed template at byte {offset}: {reason}")
            }
            ExpandError::UnknownVariable(name) => write!(f, "unknown variable %{{{name}}}"),
            ExpandError::MissingValue(name) => {
                write!(
                    f,
                    "%{{{name}}} needs {}, which is not set",
                    value_source(name)
                )
            }
            ExpandError::UnsupportedFilter(name) => write!(
                f,
                "filter {name:?} is not supported by nfs-hostchange (it knows {FILTERS})"
            ),
            ExpandError::Filter { filter, reason } => write!(f, "{filter}: {reason}"),
            ExpandError::TooLong => write!(f, "template longer than {TEMPLATE_MAX} bytes"),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Where the value of a variable named in a `MissingValue` error comes from.
fn value_source(name: &str) -> &'static str {
    match name {
        "home" => "HOME",
        "uid" => "the user's uid",
        "gid" => "the user's gid",
        "local_ip" => "LOCAL_IP",
        "remote_ip" => "IP",
        _ => "a value",
    }
}

/// Expands every `%{...}` in `template`.
///
/// # Errors
///
/// The first syntax error, unknown name or failing filter, left to right.
pub fn expand(template: &[u8], vars: &Vars<'_>) -> Result<Vec<u8>, ExpandError> {
    if template.len() > TEMPLATE_MAX {
        return Err(ExpandError::TooLong);
    }
    let mut out = Vec::with_capacity(template.len() + vars.user.len());
    let mut pos = 0;
    while pos < template.len() {
        match next_percent(template, pos) {
            None => {
                out.extend_from_slice(&template[pos..]);
                break;
            }
            Some((literal_end, Percent::Escaped)) => {
                out.extend_from_slice(&template[pos..literal_end]);
                out.extend_from_slice(b"%{");
                pos = literal_end + 3;
            }
            Some((start, Percent::Expression)) => {
                out.extend_from_slice(&template[pos..start]);
                let (pipeline, end) = Parser::new(template, start + 2).pipeline()?;
                out.extend_from_slice(&run(&pipeline, vars)?);
                pos = end;
            }
        }
    }
    Ok(out)
}

/// The byte offset of the first `%{` that starts an expression (not the
/// escape `%%{`), or None: callers use it to find a template's static part.
#[must_use]
pub fn first_variable(template: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        match next_percent(template, pos)? {
            (start, Percent::Expression) => return Some(start),
            (start, Percent::Escaped) => pos = start + 3,
        }
    }
}

/// Writes `text` so that [`expand`] gives it back unchanged: every `%{`
/// becomes `%%{`. (A lone `%` needs no escape in 2.4.)
#[must_use]
pub fn escape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for (i, &b) in text.iter().enumerate() {
        if b == b'%' && text.get(i + 1) == Some(&b'{') {
            out.push(b'%');
        }
        out.push(b);
    }
    out
}

/// Whether `template` holds a `%` sequence that Dovecot 2.3 would expand
/// (`%u`, `%2.256Nu`, `%{user}` aside) and 2.4 leaves as literal text: a
/// likely leftover of a conversion. Returns the sequence.
#[must_use]
pub fn old_style_variable(template: &[u8]) -> Option<String> {
    let mut pos = 0;
    while let Some(rel) = template[pos..].iter().position(|&b| b == b'%') {
        let start = pos + rel;
        let rest = &template[start + 1..];
        if rest.starts_with(b"{") || rest.starts_with(b"%{") {
            pos = start + 2;
            continue;
        }
        // `%[-][0]digits[.[0][-]digits]modifiers letter`, as in 2.3.
        let spec_len = rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.'))
            .count();
        let modifiers = rest[spec_len..]
            .iter()
            .take_while(|b| b"LUEXRHNMDT".contains(b))
            .count();
        let key = rest.get(spec_len + modifiers).copied();
        if matches!(key, Some(b'u' | b'n' | b'd' | b'h' | b'i' | b'l' | b'r')) {
            let end = start + 1 + spec_len + modifiers + 1;
            return Some(String::from_utf8_lossy(&template[start..end]).into_owned());
        }
        pos = start + 1;
    }
    None
}

/// What a `%` at some offset starts.
enum Percent {
    /// `%%{`: a literal `%{`.
    Escaped,
    /// `%{`: an expression.
    Expression,
}

/// Finds the next `%%{` or `%{` at or after `from`, reading as Dovecot's
/// lexer does (the longest match first, so `%%%{` is `%` then `%%{`).
fn next_percent(t: &[u8], from: usize) -> Option<(usize, Percent)> {
    let mut pos = from;
    while let Some(rel) = t[pos..].iter().position(|&b| b == b'%') {
        let at = pos + rel;
        if t[at..].starts_with(b"%%{") {
            return Some((at, Percent::Escaped));
        }
        if t[at..].starts_with(b"%{") {
            return Some((at, Percent::Expression));
        }
        pos = at + 1;
    }
    None
}

// ---------------------------------------------------------------------------
// Parsing

/// An arithmetic operator, numbered as Dovecot's
/// `enum var_expand_statement_operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Plus,
    Minus,
    Star,
    Slash,
    Modulo,
}

/// A token inside `%{...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(Vec<u8>),
    Number(Vec<u8>),
    Str(Vec<u8>),
    Pipe,
    Open,
    Close,
    Comma,
    Equals,
    Op(Op),
    End,
}

/// A filter argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(Vec<u8>),
    Int(i64),
    /// A variable's name, looked up when the filter runs.
    Var(Vec<u8>),
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    name: Vec<u8>,
    /// Positional arguments, in order.
    args: Vec<Value>,
    /// Named arguments (`rounds=2`), keys lower-cased.
    named: Vec<(String, Value)>,
    /// Set for an arithmetic step: the operator (`args` holds the operand).
    op: Option<Op>,
}

/// Reads one `%{...}` expression.
struct Parser<'t> {
    t: &'t [u8],
    pos: usize,
    /// Offset of the current token, for messages.
    token_at: usize,
}

impl<'t> Parser<'t> {
    fn new(t: &'t [u8], pos: usize) -> Self {
        Parser {
            t,
            pos,
            token_at: pos,
        }
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, ExpandError> {
        Err(ExpandError::Syntax {
            offset: self.token_at,
            reason: reason.into(),
        })
    }

    /// `filter ('|' filter)* '}'`; returns the statements and the offset
    /// just past the closing brace.
    fn pipeline(mut self) -> Result<(Vec<Statement>, usize), ExpandError> {
        let mut statements = Vec::new();
        loop {
            let name = match self.next()? {
                Token::Name(name) => name,
                Token::End | Token::Pipe => return self.error("empty expression"),
                _ => return self.error("expected a variable or filter name"),
            };
            let mut token = self.next()?;
            let mut statement = Statement {
                name,
                args: Vec::new(),
                named: Vec::new(),
                op: None,
            };
            if token == Token::Open {
                self.arguments(&mut statement)?;
                token = self.next()?;
            }
            statements.push(statement);
            if let Token::Op(op) = token {
                let operand = match self.next()? {
                    Token::Name(name) => Value::Var(name),
                    Token::Number(digits) => Value::Int(self.number(&digits, false)?),
                    Token::Op(Op::Minus) => match self.next()? {
                        Token::Number(digits) => Value::Int(self.number(&digits, true)?),
                        _ => return self.error("expected a number after '-'"),
                    },
                    _ => return self.error("expected a number after an operator"),
                };
                statements.push(Statement {
                    name: b"calculate".to_vec(),
                    args: vec![operand],
                    named: Vec::new(),
                    op: Some(op),
                });
                token = self.next()?;
            }
            match token {
                Token::Pipe => continue,
                Token::End => return Ok((statements, self.pos)),
                _ => return self.error("expected '|' or '}'"),
            }
        }
    }

    /// `arg (',' arg)* ')'`, after the opening parenthesis.
    fn arguments(&mut self, statement: &mut Statement) -> Result<(), ExpandError> {
        loop {
            let token = self.next()?;
            let value = match token {
                Token::Str(s) => Value::Str(s),
                Token::Number(digits) => Value::Int(self.number(&digits, false)?),
                Token::Op(Op::Minus) => match self.next()? {
                    Token::Number(digits) => Value::Int(self.number(&digits, true)?),
                    _ => return self.error("expected a number after '-'"),
                },
                Token::Name(name) => {
                    let save = (self.pos, self.token_at);
                    if self.next()? == Token::Equals {
                        let value = match self.next()? {
                            Token::Str(s) => Value::Str(s),
                            Token::Name(n) => Value::Var(n),
                            Token::Number(digits) => Value::Int(self.number(&digits, false)?),
                            Token::Op(Op::Minus) => match self.next()? {
                                Token::Number(digits) => Value::Int(self.number(&digits, true)?),
                                _ => return self.error("expected a number after '-'"),
                            },
                            _ => return self.error("expected a value after '='"),
                        };
                        let key = String::from_utf8_lossy(&name).to_ascii_lowercase();
                        statement.named.push((key, value));
                        match self.next()? {
                            Token::Comma => continue,
                            Token::Close => return Ok(()),
                            _ => return self.error("expected ',' or ')'"),
                        }
                    }
                    (self.pos, self.token_at) = save;
                    Value::Var(name)
                }
                _ => return self.error("expected an argument"),
            };
            statement.args.push(value);
            match self.next()? {
                Token::Comma => {}
                Token::Close => return Ok(()),
                _ => return self.error("expected ',' or ')'"),
            }
        }
    }

    /// Dovecot's `str_to_intmax` on the digits, with the sign.
    fn number(&self, digits: &[u8], negative: bool) -> Result<i64, ExpandError> {
        let mut n: i64 = 0;
        for &d in digits {
            n = match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i64::from(d - b'0')))
            {
                Some(n) => n,
                None => return self.error("number too large"),
            };
        }
        if n > i64::from(crate::varexpand::NUMBER_MAX) {
            return self.error("number too large");
        }
        Ok(if negative { -n } else { n })
    }

    /// The next token; the end of the template inside an expression is an
    /// error.
    fn next(&mut self) -> Result<Token, ExpandError> {
        while matches!(self.t.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.token_at = self.pos;
        let Some(&b) = self.t.get(self.pos) else {
            return self.error("unterminated %{");
        };
        self.pos += 1;
        let token = match b {
            b'}' => Token::End,
            b'|' => Token::Pipe,
            b'(' => Token::Open,
            b')' => Token::Close,
            b',' => Token::Comma,
            b'=' => Token::Equals,
            b'+' => Token::Op(Op::Plus),
            b'-' => Token::Op(Op::Minus),
            b'*' => Token::Op(Op::Star),
            b'/' => Token::Op(Op::Slash),
            b'%' => Token::Op(Op::Modulo),
            b'\'' | b'"' => Token::Str(self.string(b)?),
            b'0'..=b'9' => {
                let start = self.pos - 1;
                while self.t.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                Token::Number(self.t[start..self.pos].to_vec())
            }
            b if b.is_ascii_alphabetic() || b >= 0x80 => {
                let start = self.pos - 1;
                while self.t.get(self.pos).is_some_and(|&c| {
                    c.is_ascii_alphanumeric() || c >= 0x80 || b"_/;:.-".contains(&c)
                }) {
                    self.pos += 1;
                }
                let name = &self.t[start..self.pos];
                if std::str::from_utf8(name).is_err() {
                    return self.error("invalid UTF-8 in a name");
                }
                Token::Name(name.to_vec())
            }
            _ => return self.error(format!("unexpected character {:?}", b as char)),
        };
        Ok(token)
    }

    /// A quoted string after its opening `quote`, with Dovecot's escapes:
    /// `\\ \' \" \t \r \n`, `\xHH` and up to three octal digits.
    fn string(&mut self, quote: u8) -> Result<Vec<u8>, ExpandError> {
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.t.get(self.pos) else {
                return self.error("unterminated string");
            };
            self.pos += 1;
            if b == quote {
                break;
            }
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let Some(&e) = self.t.get(self.pos) else {
                return self.error("unterminated string");
            };
            self.pos += 1;
            let c = match e {
                b'\\' => b'\\',
                b'\'' => b'\'',
                b'"' => b'"',
                b't' => b'\t',
                b'r' => b'\r',
                b'n' => b'\n',
                b'x' => {
                    let hex = self
                        .t
                        .get(self.pos..self.pos + 2)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                    let Some(hex) = hex else {
                        return self.error("invalid character escape");
                    };
                    self.pos += 2;
                    let text = std::str::from_utf8(hex).unwrap_or("0");
                    u8::from_str_radix(text, 16).unwrap_or(0)
                }
                b'0'..=b'9' => {
                    let start = self.pos - 1;
                    while self.pos < start + 3
                        && self.t.get(self.pos).is_some_and(u8::is_ascii_digit)
                    {
                        self.pos += 1;
                    }
                    let digits = &self.t[start..self.pos];
                    let value = digits.iter().try_fold(0u32, |n, &d| {
                        (d < b'8').then(|| n * 8 + u32::from(d - b'0'))
                    });
                    match value.and_then(|v| u8::try_from(v).ok()) {
                        Some(c) => c,
                        None => return self.error("invalid character escape"),
                    }
                }
                _ => return self.error("invalid character escape"),
            };
            out.push(c);
        }
        if std::str::from_utf8(&out).is_err() {
            return self.error("invalid UTF-8 in a string");
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Running

/// The value passed along a pipeline (Dovecot's `transfer`).
struct State {
    value: Option<Vec<u8>>,
    /// Set by the hashes: the value is raw bytes.
    binary: bool,
}

/// Runs one pipeline and returns what it appends.
fn run(pipeline: &[Statement], vars: &Vars<'_>) -> Result<Vec<u8>, ExpandError> {
    let mut state = State {
        value: None,
        binary: false,
    };
    for (i, statement) in pipeline.iter().enumerate() {
        // The first name is a variable if one has that name, else a filter
        // (Dovecot prefers variables: `%{domain}` is the variable).
        if i == 0 && statement.op.is_none() {
            if let Some(value) = variable(&statement.name, vars) {
                state.value = Some(value?.to_vec());
                continue;
            }
            if !is_filter(&statement.name) {
                let name = String::from_utf8_lossy(&statement.name).into_owned();
                return Err(ExpandError::UnknownVariable(name));
            }
        }
        apply(statement, &mut state, vars)?;
    }
    // Every step leaves a value or fails, and a pipeline has one step at
    // least: the value is there.
    let value = state.value.unwrap_or_default();
    Ok(if state.binary {
        crate::record::hex(&value).into_bytes()
    } else {
        value
    })
}

/// The value of a variable; `None` when there is no such variable.
fn variable<'a>(name: &[u8], vars: &Vars<'a>) -> Option<Result<&'a [u8], ExpandError>> {
    let value = match name {
        b"user" => Some(vars.user),
        b"username" => Some(username(vars.user)),
        b"domain" => Some(domain(vars.user)),
        b"home" => vars.home,
        b"uid" => vars.uid,
        b"gid" => vars.gid,
        b"local_ip" => vars.local_ip,
        b"remote_ip" => vars.remote_ip,
        _ => return None,
    };
    let name = String::from_utf8_lossy(name);
    Some(value.ok_or_else(|| ExpandError::MissingValue(name.into_owned())))
}

/// The part of a user name before the first `@` (all of it without one).
fn username(user: &[u8]) -> &[u8] {
    user.split(|&b| b == b'@').next().unwrap_or(user)
}

/// The part of a user name after the first `@` (empty without one).
fn domain(user: &[u8]) -> &[u8] {
    match user.iter().position(|&b| b == b'@') {
        Some(at) => &user[at + 1..],
        None => &[],
    }
}

fn is_filter(name: &[u8]) -> bool {
    matches!(
        name,
        b"lower"
            | b"upper"
            | b"username"
            | b"domain"
            | b"md5"
            | b"sha1"
            | b"sha256"
            | b"substr"
            | b"hex"
            | b"hexlify"
            | b"reverse"
            | b"literal"
            | b"calculate"
    )
}

/// Runs one filter on the state.
fn apply(s: &Statement, state: &mut State, vars: &Vars<'_>) -> Result<(), ExpandError> {
    let name = String::from_utf8_lossy(&s.name).into_owned();
    let fail = |reason: &str| ExpandError::Filter {
        filter: name.clone(),
        reason: reason.to_string(),
    };
    let no_params = || {
        if s.args.is_empty() && s.named.is_empty() {
            Ok(())
        } else {
            Err(fail("takes no parameters"))
        }
    };
    let no_named = || match s.named.first() {
        Some((key, _)) => Err(fail(&format!("unsupported key {key:?}"))),
        None => Ok(()),
    };
    let number = |value: &Value| -> Result<i64, ExpandError> {
        match value {
            Value::Int(n) => Ok(*n),
            Value::Var(v) => {
                let text = variable(v, vars).ok_or_else(|| {
                    ExpandError::UnknownVariable(String::from_utf8_lossy(v).into_owned())
                })??;
                parse_intmax(text).ok_or_else(|| fail("parameter is not a number"))
            }
            Value::Str(_) => Err(fail("parameter must be a number")),
        }
    };
    let string = |value: &Value| -> Result<Vec<u8>, ExpandError> {
        match value {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            Value::Var(v) => Ok(variable(v, vars)
                .ok_or_else(|| {
                    ExpandError::UnknownVariable(String::from_utf8_lossy(v).into_owned())
                })??
                .to_vec()),
        }
    };
    let input = |state: &mut State, what: &str| -> Result<Vec<u8>, ExpandError> {
        state
            .value
            .take()
            .ok_or_else(|| fail(&format!("no value to {what}")))
    };

    match s.name.as_slice() {
        b"lower" | b"upper" => {
            no_params()?;
            let mut value = input(state, &name)?;
            if s.name == b"lower" {
                value.make_ascii_lowercase();
            } else {
                value.make_ascii_uppercase();
            }
            state.value = Some(value);
        }
        b"username" | b"domain" => {
            no_params()?;
            let value = input(state, &format!("get {name} from"))?;
            let part = if s.name == b"username" {
                username(&value)
            } else {
                domain(&value)
            };
            state.value = Some(part.to_vec());
            state.binary = false;
        }
        b"reverse" => {
            no_params()?;
            let mut value = input(state, "reverse")?;
            value.reverse();
            state.value = Some(value);
        }
        b"literal" => {
            no_named()?;
            let [value] = s.args.as_slice() else {
                return Err(fail("takes exactly one parameter"));
            };
            state.value = Some(string(value)?);
            state.binary = false;
        }
        b"md5" | b"sha1" | b"sha256" => {
            if !s.args.is_empty() {
                return Err(fail("too many positional parameters"));
            }
            let mut rounds = 1;
            let mut salt = Vec::new();
            for (key, value) in &s.named {
                match key.as_str() {
                    "rounds" => rounds = number(value)?,
                    "salt" => salt = string(value)?,
                    _ => return Err(fail(&format!("unsupported key {key:?}"))),
                }
            }
            let mut value = input(state, &name)?;
            for _ in 0..rounds {
                value = match s.name.as_slice() {
                    b"md5" => digest::<Md5>(&salt, &value),
                    b"sha1" => digest::<sha1::Sha1>(&salt, &value),
                    _ => digest::<sha2::Sha256>(&salt, &value),
                };
            }
            state.value = Some(value);
            state.binary = true;
        }
        b"substr" => {
            no_named()?;
            let (off, len) = match s.args.as_slice() {
                [off] => (number(off)?, None),
                [off, len] => (number(off)?, Some(number(len)?)),
                [] => return Err(fail("missing offset parameter")),
                _ => return Err(fail("too many positional parameters")),
            };
            let value = input(state, "substring")?;
            let part = substr(&value, off, len).map_err(fail)?;
            state.value = Some(part.to_vec());
        }
        b"hex" => {
            no_named()?;
            let width = match s.args.as_slice() {
                [] => 0,
                [width] => number(width)?,
                _ => return Err(fail("too many positional parameters")),
            };
            let value = input(state, "hex")?;
            let n = crate::varexpand::parse_ullong(&value)
                .ok_or_else(|| fail("input is not a number"))?;
            state.value = Some(fit(format!("{n:x}").into_bytes(), width));
        }
        b"hexlify" => {
            no_named()?;
            let width = match s.args.as_slice() {
                [] => 0,
                [width] => number(width)?,
                _ => return Err(fail("too many positional parameters")),
            };
            if width < 0 {
                return Err(fail("width must be positive"));
            }
            let value = input(state, "hexlify")?;
            let mut hex = crate::record::hex(&value).into_bytes();
            let width = usize::try_from(width).unwrap_or(usize::MAX);
            if width != 0 && hex.len() < width {
                let mut padded = vec![b'0'; width - hex.len()];
                padded.extend_from_slice(&hex);
                hex = padded;
            } else if width != 0 {
                hex.truncate(width);
            }
            state.value = Some(hex);
            state.binary = false;
        }
        b"calculate" => {
            let (Some(op), [operand]) = (s.op, s.args.as_slice()) else {
                return Err(fail("needs an operator and a number"));
            };
            let right = number(operand)?;
            let value = input(state, "calculate")?;
            let result = calculate(op, &value, state.binary, right).map_err(fail)?;
            if state.binary && op == Op::Modulo {
                state.binary = false;
            }
            state.value = Some(result.into_bytes());
        }
        _ => return Err(ExpandError::UnsupportedFilter(name)),
    }
    Ok(())
}

/// `rounds` of `D(salt || value)`, each round hashing the last digest.
fn digest<D: Digest>(salt: &[u8], value: &[u8]) -> Vec<u8> {
    let mut hasher = D::new();
    hasher.update(salt);
    hasher.update(value);
    hasher.finalize().to_vec()
}

/// Dovecot's `substr(offset[, length])`: a negative offset counts from the
/// end, a negative length leaves that many bytes off the end, and anything
/// out of bounds is an error.
fn substr(value: &[u8], off: i64, len: Option<i64>) -> Result<&[u8], &'static str> {
    let used = i64::try_from(value.len()).map_err(|_| "value too long")?;
    if off < -used || off > used {
        return Err("offset out of bounds");
    }
    let given_len = len.unwrap_or(used);
    if given_len < -used || given_len > used {
        return Err("length out of bounds");
    }
    if given_len == 0 {
        return Ok(&[]);
    }
    let off = if off < 0 { used + off } else { off };
    let len = match len {
        None => used - off,
        Some(len) if len < 0 => {
            let end = used + len;
            if end < off {
                return Err("length out of bounds");
            }
            end - off
        }
        Some(len) => len,
    };
    if len < 0 || len + off > used {
        return Err("length out of bounds");
    }
    // Both are within 0..=used here, so they fit usize.
    let (off, len) = (off as usize, len as usize);
    Ok(&value[off..off + len])
}

/// Dovecot's `hex(width)` padding: a positive width pads with `0` on the
/// left and keeps the last `width` digits; a negative one pads on the right
/// and keeps the first.
fn fit(mut digits: Vec<u8>, width: i64) -> Vec<u8> {
    let w = usize::try_from(width.unsigned_abs()).unwrap_or(usize::MAX);
    if width < 0 {
        digits.resize(w.max(digits.len()), b'0');
        digits.truncate(w);
    } else if width > 0 {
        if digits.len() < w {
            let mut padded = vec![b'0'; w - digits.len()];
            padded.extend_from_slice(&digits);
            digits = padded;
        }
        digits.drain(..digits.len() - w);
    }
    digits
}

/// An arithmetic step (`calculate`). On a binary value, `%` reads its last
/// (at most) 8 bytes as a big-endian unsigned number; otherwise the value
/// must be a decimal number.
fn calculate(op: Op, value: &[u8], binary: bool, right: i64) -> Result<String, &'static str> {
    if binary && op == Op::Modulo {
        if right < 0 {
            return Err("binary modulo must be positive integer");
        }
        if right == 0 {
            return Err("modulo by zero");
        }
        let tail = &value[value.len().saturating_sub(8)..];
        let n = tail.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        return Ok((n % right.unsigned_abs()).to_string());
    }
    let left = parse_intmax(value).ok_or("input is not a number")?;
    let result = match op {
        Op::Plus => left.checked_add(right),
        Op::Minus => left.checked_sub(right),
        Op::Star => left.checked_mul(right),
        Op::Slash if right == 0 => return Err("division by zero"),
        Op::Slash => left.checked_div(right),
        Op::Modulo if right == 0 => return Err("modulo by zero"),
        Op::Modulo => left.checked_rem(right),
    };
    result.map(|n| n.to_string()).ok_or("result out of range")
}

/// Dovecot's `str_to_intmax`: an optional `-`, then only decimal digits.
fn parse_intmax(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let n = crate::varexpand::parse_ullong(digits)?;
    if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const TSV: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/dovecot-var-expand.tsv"
    );

    fn vars(user: &[u8]) -> Vars<'_> {
        Vars {
            user,
            home: Some(b"/home/u"),
            uid: Some(b"1001"),
            gid: Some(b"100"),
            local_ip: Some(b"192.0.2.1"),
            remote_ip: Some(b"198.51.100.7"),
        }
    }

    fn ok(template: &str, user: &str) -> String {
        let out = expand(template.as_bytes(), &vars(user.as_bytes()))
            .unwrap_or_else(|e| panic!("expand({template:?}, {user:?}): {e}"));
        String::from_utf8(out).expect("utf-8")
    }

    fn err(template: &str, user: &str) -> ExpandError {
        expand(template.as_bytes(), &vars(user.as_bytes())).expect_err(template)
    }

    /// The 2.4 spelling of each 2.3 column of the TSV file that has one
    /// (Dovecot's upgrade notes; `%H` has no 2.4 form).
    fn spelling_24(column: &str) -> Option<&'static str> {
        Some(match column {
            "%2.256Nu" => "%{user | md5 | substr(0, 8) % 256 | hex(2)}",
            "%256Nu" => "%{user | md5 | substr(0, 8) % 256 | hex}",
            "%1Mu" => "%{user | md5 | hexlify(1)}",
            "%2.1Mu" => "%{user | md5 | hexlify | substr(2,1)}",
            "%Lu" => "%{user | lower}",
            "%n" => "%{user | username}",
            "%d" => "%{user | domain}",
            "%Un" => "%{user | username | upper}",
            "%Ru" => "%{user | reverse}",
            "%8Mu" => "%{user | md5 | hexlify(8)}",
            "%3.1024Nu" => "%{user | md5 | substr(0, 8) % 1024 | hex(3)}",
            "%Mu" => "%{user | md5}",
            _ => return None,
        })
    }

    /// Every TSV cell that Dovecot 2.3 produced comes out the same from the
    /// 2.4 spelling of its template.
    #[test]
    fn tsv_expansions_in_24_syntax() {
        let data = std::fs::read(TSV).expect("read dovecot-var-expand.tsv");
        let mut lines = data
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"));
        let header: Vec<&[u8]> = lines
            .next()
            .expect("header")
            .split(|&b| b == b'\t')
            .collect();
        let mut checked = 0;
        let mut failures = Vec::new();
        for line in lines {
            let cells: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
            let user = cells[0];
            for (col, name) in header.iter().enumerate().skip(1) {
                let Some(template) = spelling_24(&String::from_utf8_lossy(name)) else {
                    continue;
                };
                let expected = cells.get(col).copied().unwrap_or_default();
                let got = expand(template.as_bytes(), &vars(user));
                if got.as_deref() != Ok(expected) {
                    failures.push(format!(
                        "{:?} {template}: expected {:?}, got {got:?}",
                        String::from_utf8_lossy(user),
                        String::from_utf8_lossy(expected)
                    ));
                }
                checked += 1;
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(checked, 15 * 12, "every user, every convertible column");
    }

    #[rstest]
    #[case::plain("/srv/mail", "/srv/mail")]
    #[case::lone_percent("100%/x", "100%/x")]
    #[case::old_syntax_is_literal("/l/%u/%2.256Nu", "/l/%u/%2.256Nu")]
    #[case::double_percent("%%", "%%")]
    #[case::escaped_brace("%%{user}", "%{user}")]
    #[case::percent_then_escape("%%%{user}", "%%{user}")]
    #[case::variable("/l/%{user}/x", "/l/bob@example.com/x")]
    #[case::spaces("%{ user }", "bob@example.com")]
    #[case::tabs("%{\tuser\t|\tupper }", "BOB@EXAMPLE.COM")]
    #[case::username_variable("%{username}", "bob")]
    #[case::domain_variable("%{domain}", "example.com")]
    #[case::home("%{home}/Maildir", "/home/u/Maildir")]
    #[case::uid_gid("%{uid}:%{gid}", "1001:100")]
    #[case::ips("%{local_ip} %{remote_ip}", "192.0.2.1 198.51.100.7")]
    #[case::literal("%{literal('a\\x41\\101\\t')}", "aAA\t")]
    #[case::literal_dq("%{literal(\"it's\")}", "it's")]
    #[case::literal_brace_in_string("%{literal('}')}x", "}x")]
    #[case::two_expressions("%{user | username}/%{user | domain}", "bob/example.com")]
    // MD5("a"), from RFC 1321's test suite, written as hex at the end.
    #[case::md5_hex("%{literal('a') | md5}", "0cc175b9c0f1b6a831c399e269772661")]
    fn expansions(#[case] template: &str, #[case] expected: &str) {
        assert_eq!(ok(template, "bob@example.com"), expected);
    }

    #[rstest]
    #[case::sha1("%{user | sha1}", "a")]
    #[case::sha256("%{user | sha256}", "a")]
    fn sha_digests(#[case] template: &str, #[case] user: &str) {
        let want = if template.contains("sha1") {
            // FIPS 180 test vector: SHA-1("a").
            "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
        } else {
            // SHA-256("a").
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        };
        assert_eq!(ok(template, user), want);
    }

    #[test]
    fn hash_rounds_and_salt() {
        let once = Md5::digest(b"pepperbob");
        let twice = Md5::digest(once);
        assert_eq!(
            ok("%{user | md5(salt='pepper')}", "bob"),
            crate::record::hex(&once)
        );
        let mut twice_salted = Md5::new();
        twice_salted.update(b"pepper");
        twice_salted.update(once);
        assert_eq!(
            ok("%{user | md5(rounds=2, salt='pepper')}", "bob"),
            crate::record::hex(&twice_salted.finalize())
        );
        assert_eq!(
            ok("%{user | md5(rounds=2)}", "pepperbob"),
            crate::record::hex(&twice)
        );
    }

    /// Directory hashing as the 2.4 documentation writes it.
    #[test]
    fn sha1_modulo_reads_the_last_eight_bytes() {
        let digest = sha1::Sha1::digest(b"bob");
        let mut last = [0u8; 8];
        last.copy_from_slice(&digest[12..20]);
        let want = format!("{:02x}", u64::from_be_bytes(last) % 256);
        assert_eq!(ok("%{ user | sha1 % 256 | hex(2)}", "bob"), want);
    }

    #[rstest]
    #[case::from_start("abcdef", "%{user | substr(0, 2)}", "ab")]
    #[case::offset_only("abcdef", "%{user | substr(2)}", "cdef")]
    #[case::negative_offset("abcdef", "%{user | substr(-2)}", "ef")]
    #[case::negative_length("abcdef", "%{user | substr(1, -2)}", "bcd")]
    #[case::zero_length("abcdef", "%{user | substr(3, 0)}", "")]
    #[case::whole("abcdef", "%{user | substr(0, 6)}", "abcdef")]
    #[case::hex_plain("255", "%{user | hex}", "ff")]
    #[case::hex_pad("10", "%{user | hex(4)}", "000a")]
    #[case::hex_keeps_last("4095", "%{user | hex(2)}", "ff")]
    #[case::hex_negative_width("10", "%{user | hex(-3)}", "a00")]
    #[case::hexlify("AB", "%{user | hexlify}", "4142")]
    #[case::hexlify_pad("A", "%{user | hexlify(4)}", "0041")]
    #[case::hexlify_cut("AB", "%{user | hexlify(3)}", "414")]
    #[case::reverse("abc", "%{user | reverse}", "cba")]
    #[case::lower("AbC@X.Org", "%{user | lower}", "abc@x.org")]
    #[case::upper("abc", "%{user | upper}", "ABC")]
    #[case::username_filter("a@b@c", "%{user | username}", "a")]
    #[case::domain_filter("a@b@c", "%{user | domain}", "b@c")]
    #[case::domain_none("abc", "%{user | domain}", "")]
    #[case::plus("40", "%{user + 2}", "42")]
    #[case::minus_negative("40", "%{user - -2}", "42")]
    #[case::times("21", "%{user * 2}", "42")]
    #[case::divide("85", "%{user / 2}", "42")]
    #[case::modulo("142", "%{user % 100}", "42")]
    #[case::negative_modulo("-7", "%{user % 3}", "-1")]
    fn filters(#[case] user: &str, #[case] template: &str, #[case] expected: &str) {
        assert_eq!(ok(template, user), expected);
    }

    #[test]
    fn variables_as_arguments() {
        let v = Vars {
            uid: Some(b"2"),
            ..vars(b"abcdef")
        };
        assert_eq!(
            expand(b"%{user | substr(uid)}", &v).as_deref(),
            Ok(&b"cdef"[..])
        );
        // The uid of vars() is 1001: out of bounds for six bytes, as in Dovecot.
        assert!(expand(b"%{user | substr(uid)}", &vars(b"abcdef")).is_err());
        assert_eq!(
            expand(b"%{user | md5(salt=user) | hexlify(4)}", &v).map(|h| h.len()),
            Ok(4)
        );
    }

    #[rstest]
    #[case::unknown_variable("%{foo}", ExpandError::UnknownVariable("foo".into()))]
    #[case::provider("%{env:HOME}", ExpandError::UnknownVariable("env:HOME".into()))]
    #[case::old_long_name("%{lip}", ExpandError::UnknownVariable("lip".into()))]
    #[case::unsupported_filter("%{user | base64}", ExpandError::UnsupportedFilter("base64".into()))]
    #[case::filter_no_input("%{lower}", ExpandError::Filter { filter: "lower".into(), reason: "no value to lower".into() })]
    #[case::hex_not_number("%{user | hex}", ExpandError::Filter { filter: "hex".into(), reason: "input is not a number".into() })]
    #[case::substr_out_of_bounds("%{user | substr(9)}", ExpandError::Filter { filter: "substr".into(), reason: "offset out of bounds".into() })]
    #[case::lower_with_args("%{user | lower(1)}", ExpandError::Filter { filter: "lower".into(), reason: "takes no parameters".into() })]
    #[case::modulo_zero("%{user | md5 % 0}", ExpandError::Filter { filter: "calculate".into(), reason: "modulo by zero".into() })]
    #[case::binary_modulo_negative("%{user | md5 % -1}", ExpandError::Filter { filter: "calculate".into(), reason: "binary modulo must be positive integer".into() })]
    #[case::arithmetic_on_text("%{user + 1}", ExpandError::Filter { filter: "calculate".into(), reason: "input is not a number".into() })]
    fn errors(#[case] template: &str, #[case] expected: ExpandError) {
        assert_eq!(err(template, "bob"), expected);
    }

    #[rstest]
    #[case::unterminated("/x/%{user")]
    #[case::unterminated_string("%{literal('x)}")]
    #[case::empty("%{}")]
    #[case::empty_filter("%{user | }")]
    #[case::two_operators("%{user | md5 % 2 % 3}")]
    #[case::stray_character("%{user ~ }")]
    #[case::missing_close_paren("%{user | substr(0, 1}")]
    #[case::bad_escape("%{literal('\\q')}")]
    #[case::number_too_large("%{user | substr(99999999999999999999)}")]
    fn syntax_errors(#[case] template: &str) {
        assert!(
            matches!(err(template, "bob"), ExpandError::Syntax { .. }),
            "{template}"
        );
    }

    #[test]
    fn missing_values_name_their_source() {
        let v = Vars {
            user: b"bob",
            home: None,
            uid: None,
            gid: None,
            local_ip: None,
            remote_ip: None,
        };
        let e = expand(b"%{home}/x", &v).expect_err("no home");
        assert_eq!(e, ExpandError::MissingValue("home".into()));
        assert_eq!(e.to_string(), "%{home} needs HOME, which is not set");
        assert!(expand(b"%{remote_ip}", &v).is_err());
    }

    #[test]
    fn too_long_template_is_refused() {
        let long = vec![b'a'; TEMPLATE_MAX + 1];
        assert_eq!(expand(&long, &vars(b"bob")), Err(ExpandError::TooLong));
    }

    #[rstest]
    #[case::none("/srv/idx", None)]
    #[case::first("%{user}", Some(0))]
    #[case::after_prefix("/l/%{user | md5}/x", Some(3))]
    #[case::escaped_only("/l/%%{user}", None)]
    #[case::after_escape("/l/%%{x}/%{user}", Some(9))]
    #[case::old_style_is_not_a_variable("/l/%u/x", None)]
    fn first_variable_offsets(#[case] template: &str, #[case] expected: Option<usize>) {
        assert_eq!(first_variable(template.as_bytes()), expected);
    }

    #[rstest]
    #[case::plain(b"/home/bob")]
    #[case::brace(b"/home/%{user}")]
    #[case::escaped_already(b"/h/%%{x}")]
    #[case::percent_end(b"/h/100%")]
    #[case::mixed(b"%%%{a}%{%")]
    fn escape_round_trips(#[case] text: &[u8]) {
        let template = escape(text);
        assert_eq!(expand(&template, &vars(b"bob")).as_deref(), Ok(text));
        assert_eq!(first_variable(&template), None);
    }

    #[rstest]
    #[case("/l/%u/x", Some("%u"))]
    #[case("/l/%2.256Nu/%u", Some("%2.256Nu"))]
    #[case("/l/%Ln", Some("%Ln"))]
    #[case("/l/%{user}/100%", None)]
    #[case("/l/%%{user}", None)]
    #[case("/l/50%off", None)]
    fn old_style_leftovers(#[case] template: &str, #[case] expected: Option<&str>) {
        assert_eq!(old_style_variable(template.as_bytes()).as_deref(), expected);
    }

    #[test]
    fn non_utf8_user_bytes_pass_through() {
        let user: &[u8] = b"J\xf6rg@Ex\xe4mple.org";
        assert_eq!(
            expand(b"%{user | lower}", &vars(user)).as_deref(),
            Ok(&b"j\xf6rg@ex\xe4mple.org"[..])
        );
        assert_eq!(
            expand(b"%{user | username}", &vars(user)).as_deref(),
            Ok(&b"J\xf6rg"[..])
        );
    }
}
