//! A POP3 login check (USER, PASS, STAT, QUIT) with read timeouts.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::imap::READ_TIMEOUT;

/// Logs in on 127.0.0.1:`port` and returns the STAT reply (`+OK n size`).
pub fn pop3_login(port: u16, user: &str, password: &str) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut exchange = |command: Option<&str>| -> Result<String, String> {
        if let Some(command) = command {
            writer
                .write_all(format!("{command}\r\n").as_bytes())
                .map_err(|e| format!("sending {command}: {e}"))?;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("connection closed by server".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading from server: {e}")),
        }
        let line = line.trim_end().to_string();
        if line.starts_with("+OK") {
            Ok(line)
        } else {
            let what = command.map_or("greeting", |c| c.split(' ').next().unwrap_or(c));
            Err(format!("{what}: {line}"))
        }
    };
    exchange(None)?;
    exchange(Some(&format!("USER {user}")))?;
    exchange(Some(&format!("PASS {password}")))?;
    let stat = exchange(Some("STAT"))?;
    exchange(Some("QUIT"))?;
    Ok(stat)
}
