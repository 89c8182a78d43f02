//! A minimal IMAP4rev1 client for driving Dovecot in tests: just enough for
//! LOGIN, LIST, CREATE, APPEND, STATUS and LOGOUT. Every read has a timeout,
//! so a hung server fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long to wait for any line from the server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    /// The server greeting.
    pub greeting: String,
}

/// The server's answer to one command.
#[derive(Debug)]
pub struct Response {
    /// Untagged (`* ...`) and continuation lines, without CRLF.
    pub untagged: Vec<String>,
    /// The tagged completion line, without the tag.
    pub completion: String,
}

impl ImapClient {
    /// Connects to 127.0.0.1:`port` and reads the greeting.
    pub fn connect(port: u16) -> Result<ImapClient, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut client = ImapClient {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
            greeting: String::new(),
        };
        let greeting = client.read_line()?;
        if !greeting.starts_with("* OK") {
            return Err(format!("unexpected greeting: {greeting}"));
        }
        client.greeting = greeting;
        Ok(client)
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.ok(&format!("LOGIN {} {}", quote(user), quote(password)))
            .map(drop)
    }

    /// `LIST "" "*"`: the names of all mailboxes, in the server's order.
    pub fn list(&mut self) -> Result<Vec<String>, String> {
        let response = self.ok("LIST \"\" \"*\"")?;
        response
            .untagged
            .iter()
            .filter(|l| l.starts_with("* LIST "))
            .map(|l| parse_list_name(l))
            .collect()
    }

    pub fn create(&mut self, mailbox: &str) -> Result<(), String> {
        self.ok(&format!("CREATE {}", quote(mailbox))).map(drop)
    }

    /// APPENDs `message` (CRLF line ends are added) to `mailbox`, sent as a
    /// synchronising literal.
    pub fn append(&mut self, mailbox: &str, message: &str) -> Result<(), String> {
        let body = message.replace("\r\n", "\n").replace('\n', "\r\n");
        let tag = self.tag();
        self.send(&format!(
            "{tag} APPEND {} {{{}}}",
            quote(mailbox),
            body.len()
        ))?;
        let line = self.read_line()?;
        if !line.starts_with('+') {
            return Err(format!("APPEND: no continuation, got: {line}"));
        }
        self.writer
            .write_all(body.as_bytes())
            .and_then(|()| self.writer.write_all(b"\r\n"))
            .map_err(|e| format!("sending APPEND literal: {e}"))?;
        self.completion(&tag, "APPEND").map(drop)
    }

    /// `STATUS mailbox (MESSAGES)`.
    pub fn status_messages(&mut self, mailbox: &str) -> Result<u32, String> {
        let response = self.ok(&format!("STATUS {} (MESSAGES)", quote(mailbox)))?;
        let line = response
            .untagged
            .iter()
            .find(|l| l.starts_with("* STATUS "))
            .ok_or("STATUS: no untagged STATUS line")?;
        let rest = line
            .split("(MESSAGES ")
            .nth(1)
            .ok_or_else(|| format!("STATUS: no MESSAGES in: {line}"))?;
        rest.trim_end_matches(')')
            .trim()
            .parse()
            .map_err(|e| format!("STATUS: bad MESSAGES in {line}: {e}"))
    }

    pub fn logout(mut self) -> Result<(), String> {
        self.ok("LOGOUT").map(drop)
    }

    /// Sends one command and returns the response if it completed with OK.
    pub fn ok(&mut self, command: &str) -> Result<Response, String> {
        let tag = self.tag();
        self.send(&format!("{tag} {command}"))?;
        let verb = command.split(' ').next().unwrap_or(command).to_string();
        self.completion(&tag, &verb)
    }

    fn completion(&mut self, tag: &str, verb: &str) -> Result<Response, String> {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line()?;
            if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                if rest.starts_with("OK") {
                    return Ok(Response {
                        untagged,
                        completion: rest.to_string(),
                    });
                }
                return Err(format!("{verb} failed: {rest}"));
            }
            if line.contains('{') && line.ends_with('}') {
                return Err(format!(
                    "{verb}: literals in responses are not supported: {line}"
                ));
            }
            untagged.push(line);
        }
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("sending {line:?}: {e}"))
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("connection closed by server".to_string()),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => Err(format!("reading from server: {e}")),
        }
    }
}

/// Quotes an IMAP string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The mailbox name of a `* LIST (flags) "sep" name` line (quoted or atom).
fn parse_list_name(line: &str) -> Result<String, String> {
    let bad = || format!("cannot parse LIST line: {line}");
    let after_flags = line.split_once(") ").ok_or_else(bad)?.1;
    // The separator: a quoted character or NIL.
    let name = if let Some(rest) = after_flags.strip_prefix("NIL ") {
        rest
    } else {
        let rest = after_flags.strip_prefix('"').ok_or_else(bad)?;
        let rest = rest.strip_prefix('\\').unwrap_or(rest);
        let mut chars = rest.chars();
        chars.next().ok_or_else(bad)?;
        chars.as_str().strip_prefix("\" ").ok_or_else(bad)?
    };
    match name.strip_prefix('"') {
        None => Ok(name.to_string()),
        Some(quoted) => {
            let inner = quoted.strip_suffix('"').ok_or_else(bad)?;
            Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
        }
    }
}
