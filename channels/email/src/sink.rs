//! A small, real SMTP server on tokio that keeps what it receives in memory.
//!
//! It is the other end of the email channel in this crate's tests and in the gateway's sandbox
//! mode: nothing leaves the machine, yet the channel goes through a complete SMTP conversation
//! over TCP (greeting, `EHLO`, `AUTH`, `MAIL`, `RCPT`, `DATA`, `QUIT`), so what the sink stores is
//! exactly what a real server would have received.
//!
//! By default it accepts everything. It can instead answer a configured reply — one line or
//! several, like `"421-4.7.0 line one\r\n421 4.7.0 line two"` — at one [`Stage`], require
//! `AUTH PLAIN` / `AUTH LOGIN` with given credentials, and delay every reply (for timeouts).
//!
//! It speaks plain SMTP only: no `STARTTLS`, no implicit TLS. A channel pointed at it needs
//! `tls = "none"`, so the `starttls` and `tls` modes are not exercised by the tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lifeboat_email::sink::{SmtpSink, Stage};
//!
//! let sink = SmtpSink::start("127.0.0.1:0").await?;
//! sink.reply_at(Stage::RcptTo, "550 5.1.1 user unknown");
//! // ... point an `EmailChannel` with `tls = "none"` at `sink.addr()` ...
//! assert!(sink.received().is_empty());
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

/// The name the sink gives itself in its greeting and `EHLO` reply.
const HOSTNAME: &str = "lifeboat-sink";
/// Longest command or message line read at once, in bytes.
const MAX_LINE: u64 = 64 * 1024;
/// Largest message stored; a bigger one gets `552 5.3.4`.
pub const MAX_MESSAGE_BYTES: usize = 25 * 1024 * 1024;

/// One message the sink accepted (answered `250` at the end of `DATA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The `MAIL FROM` path, without angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// The `RCPT TO` paths, without angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The message as sent between `DATA` and the final `.`, dot-unstuffed, lines ending in CRLF.
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header named `name` (case-insensitive), unfolded; `None` when the
    /// header section has no such field.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((field, rest)) = line.split_once(':') {
                if field.eq_ignore_ascii_case(name) {
                    value = Some(rest.trim_start().to_string());
                }
            }
        }
        value.map(|v| v.trim_end().to_string())
    }
}

/// Where in the conversation a configured reply replaces the normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The greeting sent when a client connects (instead of `220`).
    Greeting,
    /// The answer to `MAIL FROM`.
    MailFrom,
    /// The answer to every `RCPT TO`.
    RcptTo,
    /// The answer after the message's final `.` (the message is then not stored).
    DataEnd,
}

#[derive(Clone, Default)]
struct Behaviour {
    reply: Option<(Stage, String)>,
    auth: Option<(String, String)>,
    delay: Duration,
}

impl Behaviour {
    fn reply_for(&self, stage: Stage) -> Option<&str> {
        match &self.reply {
            Some((s, reply)) if *s == stage => Some(reply),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    behaviour: Mutex<Behaviour>,
}

impl Shared {
    fn behaviour(&self) -> MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn mails(&self) -> MutexGuard<'_, Vec<ReceivedMail>> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running SMTP sink. Serves any number of connections at once until it is dropped or
/// [`shut down`](SmtpSink::shutdown).
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SmtpSink {
    /// Binds `addr` (use port 0 for any free port) and starts serving. Must be called inside
    /// a tokio runtime.
    pub async fn start(addr: impl ToSocketAddrs) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(SmtpSink { addr, shared, task })
    }

    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.mails().clone()
    }

    /// Forgets the messages received so far.
    pub fn clear_received(&self) {
        self.shared.mails().clear();
    }

    /// From now on, answer `reply` at `stage` instead of the normal reply. `reply` is one or more
    /// complete reply lines separated by `\r\n` or `\n` (e.g. `"421-4.7.0 one\r\n421 4.7.0 two"`).
    /// After a `421` reply the sink closes the connection, as RFC 5321 asks. Replaces any earlier
    /// configured reply.
    pub fn reply_at(&self, stage: Stage, reply: impl Into<String>) {
        self.shared.behaviour().reply = Some((stage, reply.into()));
    }

    /// From now on, accept everything (undoes [`reply_at`](SmtpSink::reply_at)).
    pub fn accept_all(&self) {
        self.shared.behaviour().reply = None;
    }

    /// From now on, refuse `MAIL FROM` with `530 5.7.0` until the client authenticated with
    /// these credentials (`AUTH PLAIN` or `AUTH LOGIN`); wrong ones get `535 5.7.8`.
    /// Without this, `AUTH` is still offered and any credentials are accepted.
    pub fn require_auth(&self, username: impl Into<String>, password: impl Into<String>) {
        self.shared.behaviour().auth = Some((username.into(), password.into()));
    }

    /// From now on, wait `delay` before every reply, the greeting included (zero: no delay).
    pub fn delay_replies(&self, delay: Duration) {
        self.shared.behaviour().delay = delay;
    }

    /// Stops listening and closes every open connection.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "smtp sink: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// One SMTP conversation.
struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    line: Vec<u8>,
}

/// What to do after a reply.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

impl Session {
    /// Writes `reply` (one or more lines) after the configured delay. `421` closes.
    async fn reply(&mut self, reply: &str) -> io::Result<Next> {
        let delay = self.shared.behaviour().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut out = String::with_capacity(reply.len() + 2);
        for line in reply.lines() {
            out.push_str(line);
            out.push_str("\r\n");
        }
        self.writer.write_all(out.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(if reply.starts_with("421") {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// Reads one line (up to [`MAX_LINE`] bytes) into `self.line`; `false` at end of stream.
    async fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)
            .await?;
        Ok(n > 0)
    }

    /// The current line as text, without its line ending.
    fn line_text(&self) -> String {
        String::from_utf8_lossy(&self.line)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// Reads the message after `354` up to the lone `.`; `None` if it was too big.
    async fn read_data(&mut self) -> io::Result<Option<String>> {
        let mut data = Vec::new();
        let mut too_big = false;
        let mut at_line_start = true;
        loop {
            if !self.read_line().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut chunk = &self.line[..];
            if at_line_start {
                if chunk == b".\r\n" || chunk == b".\n" {
                    break;
                }
                if chunk.starts_with(b".") {
                    chunk = &chunk[1..];
                }
            }
            at_line_start = chunk.ends_with(b"\n");
            if data.len() + chunk.len() > MAX_MESSAGE_BYTES {
                too_big = true;
            } else {
                data.extend_from_slice(chunk);
            }
        }
        Ok((!too_big).then(|| String::from_utf8_lossy(&data).into_owned()))
    }

    /// A configured reply for `stage`, if any.
    fn configured(&self, stage: Stage) -> Option<String> {
        self.shared.behaviour().reply_for(stage).map(str::to_string)
    }

    /// Reads one `AUTH` response line and base64-decodes it.
    async fn read_auth_response(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.read_line().await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(base64_decode(self.line_text().trim()))
    }

    /// Runs `AUTH <arg>`; returns the credentials the client gave, or `None` (reply sent).
    async fn auth(&mut self, arg: &str) -> io::Result<Option<(String, String)>> {
        let mut parts = arg.split_whitespace();
        let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(|s| s.to_string());
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => base64_decode(&i),
                    None => {
                        self.reply("334 ").await?;
                        self.read_auth_response().await?
                    }
                };
                // authzid \0 authcid \0 password
                let fields: Option<Vec<String>> = response.map(|r| {
                    r.split(|b| *b == 0)
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect()
                });
                match fields.as_deref() {
                    Some([_, user, pass]) => Ok(Some((user.clone(), pass.clone()))),
                    _ => {
                        self.reply("501 5.5.2 Cannot decode AUTH PLAIN response")
                            .await?;
                        Ok(None)
                    }
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => base64_decode(&i),
                    None => {
                        self.reply("334 VXNlcm5hbWU6").await?; // "Username:"
                        self.read_auth_response().await?
                    }
                };
                self.reply("334 UGFzc3dvcmQ6").await?; // "Password:"
                let pass = self.read_auth_response().await?;
                match (user, pass) {
                    (Some(u), Some(p)) => Ok(Some((text(u), text(p)))),
                    _ => {
                        self.reply("501 5.5.2 Cannot decode AUTH LOGIN response")
                            .await?;
                        Ok(None)
                    }
                }
            }
            _ => {
                self.reply("504 5.5.4 Unrecognized authentication type")
                    .await?;
                Ok(None)
            }
        }
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (reader, writer) = stream.into_split();
    let mut session = Session {
        reader: BufReader::new(reader),
        writer,
        shared,
        line: Vec::new(),
    };
    if let Err(e) = converse(&mut session).await {
        tracing::debug!(error = %e, "smtp sink: connection ended");
    }
    let _ = session.writer.shutdown().await;
}

async fn converse(s: &mut Session) -> io::Result<()> {
    match s.configured(Stage::Greeting) {
        Some(reply) => {
            s.reply(&reply).await?;
            if reply.starts_with(['4', '5']) {
                return Ok(());
            }
        }
        None => {
            s.reply(&format!("220 {HOSTNAME} ESMTP ready")).await?;
        }
    }

    let mut authenticated = false;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    loop {
        if !s.read_line().await? {
            return Ok(());
        }
        let line = s.line_text();
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        let next = match verb.as_str() {
            "EHLO" => {
                let reply = format!(
                    "250-{HOSTNAME} greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                     250-SIZE {MAX_MESSAGE_BYTES}\r\n250 AUTH PLAIN LOGIN"
                );
                s.reply(&reply).await?
            }
            "HELO" => s.reply(&format!("250 {HOSTNAME}")).await?,
            "AUTH" if authenticated => s.reply("503 5.5.1 Already authenticated").await?,
            "AUTH" => match s.auth(&arg).await? {
                None => Next::Continue,
                Some((user, pass)) => {
                    let expected = s.shared.behaviour().auth.clone();
                    if expected.is_none_or(|(u, p)| u == user && p == pass) {
                        authenticated = true;
                        s.reply("235 2.7.0 Authentication successful").await?
                    } else {
                        s.reply("535 5.7.8 Authentication credentials invalid")
                            .await?
                    }
                }
            },
            "MAIL" => {
                let auth_required = s.shared.behaviour().auth.is_some();
                if auth_required && !authenticated {
                    s.reply("530 5.7.0 Authentication required").await?
                } else if let Some(reply) = s.configured(Stage::MailFrom) {
                    s.reply(&reply).await?
                } else if let Some(path) = path_after(&arg, "FROM:") {
                    mail_from = Some(path);
                    rcpt_to.clear();
                    s.reply("250 2.1.0 Ok").await?
                } else {
                    s.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await?
                }
            }
            "RCPT" => {
                if mail_from.is_none() {
                    s.reply("503 5.5.1 Need MAIL before RCPT").await?
                } else if let Some(reply) = s.configured(Stage::RcptTo) {
                    s.reply(&reply).await?
                } else if let Some(path) = path_after(&arg, "TO:") {
                    rcpt_to.push(path);
                    s.reply("250 2.1.5 Ok").await?
                } else {
                    s.reply("501 5.5.4 Syntax: RCPT TO:<address>").await?
                }
            }
            "DATA" => {
                if mail_from.is_none() || rcpt_to.is_empty() {
                    s.reply("503 5.5.1 Need MAIL and RCPT before DATA").await?
                } else {
                    s.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                    let data = s.read_data().await?;
                    let from = mail_from.take().unwrap_or_default();
                    let to = std::mem::take(&mut rcpt_to);
                    match (data, s.configured(Stage::DataEnd)) {
                        (None, _) => {
                            s.reply("552 5.3.4 Message size exceeds fixed limit")
                                .await?
                        }
                        (Some(_), Some(reply)) => s.reply(&reply).await?,
                        (Some(data), None) => {
                            let n = {
                                let mut mails = s.shared.mails();
                                mails.push(ReceivedMail {
                                    mail_from: from,
                                    rcpt_to: to,
                                    data,
                                });
                                mails.len()
                            };
                            s.reply(&format!("250 2.0.0 Ok: queued as {n}")).await?
                        }
                    }
                }
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                s.reply("250 2.0.0 Ok").await?
            }
            "NOOP" => s.reply("250 2.0.0 Ok").await?,
            "VRFY" => s.reply("252 2.5.0 Cannot VRFY user").await?,
            "QUIT" => {
                s.reply("221 2.0.0 Bye").await?;
                Next::Close
            }
            _ => s.reply("500 5.5.2 Command not recognized").await?,
        };
        if next == Next::Close {
            return Ok(());
        }
    }
}

/// The path in `FROM:<a@b> SIZE=1` (after `prefix`), without brackets and parameters.
fn path_after(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

/// Decodes standard base64 (padding optional); `None` if it isn't base64. `=` alone is empty.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.bytes() {
        bits = (bits << 6) | value(c)?;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("VXNlcm5hbWU6").unwrap(), b"Username:");
        assert_eq!(base64_decode("AHVzZXIAcGFzcw==").unwrap(), b"\0user\0pass");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert_eq!(base64_decode("=").unwrap(), b"");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            path_after("FROM:<a@b.example> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(path_after("to:<x@y>", "TO:").as_deref(), Some("x@y"));
        assert_eq!(path_after("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_after("FROM:a@b", "FROM:"), None);
        assert_eq!(path_after("x", "FROM:"), None);
    }

    #[test]
    fn reads_headers() {
        let mail = ReceivedMail {
            mail_from: String::new(),
            rcpt_to: vec![],
            data: "Subject: a\r\nList-Unsubscribe: <https://x/u>,\r\n <mailto:u@x>\r\nX: y\r\n\r\nSubject: body\r\n".into(),
        };
        assert_eq!(mail.header("subject").as_deref(), Some("a"));
        assert_eq!(
            mail.header("List-Unsubscribe").as_deref(),
            Some("<https://x/u>, <mailto:u@x>")
        );
        assert_eq!(mail.header("x").as_deref(), Some("y"));
        assert_eq!(mail.header("missing"), None);
    }
}
