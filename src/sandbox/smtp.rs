//! The simulated mail server: the email crate's real in-process SMTP server
//! ([`lifeboat_email::sink::SmtpSink`]) behind a small lock-step SMTP relay on 127.0.0.1.
//!
//! Why a relay in front of the sink: the sink can refuse at a stage of the conversation, but
//! for every recipient alike; `reject_recipient` must refuse one mailbox and take the others.
//! The relay passes each client line to the sink and each reply back (the sink offers no
//! `PIPELINING`, so client and server take strict turns), answers `RCPT TO` for the rejected
//! mailbox itself with `550 5.1.1`, and notes when and what the sink accepted (the sink's
//! `250 … queued as N` names the message, so the record is exact).
//!
//! The other modes are the sink's own configured replies at `MAIL FROM`:
//!
//! | mode | reply | the email channel's class |
//! |---|---|---|
//! | `transient` | `451 4.7.500 Server busy. Please try again later from [127.0.0.1].` | retry |
//! | `throttle` | `450 4.2.1 Peak SMTP relay limit exceeded for this customer.` | throttled |
//! | `restrict` | `421-4.7.28 Gmail has detected an unusual rate of mail …` `421 4.7.28 … temporarily rate limited.` | channel_restricted |
//! | `ban` | `550 5.1.8 Access denied, bad outbound sender` (Microsoft's answer for an account blocked for spam) | channel_banned |
//! | `reject_recipient` | `550 5.1.1 The email account that you tried to reach does not exist.` for that mailbox | recipient_unreachable |

use std::io;
use std::sync::Arc;

use chrono::Utc;
use lifeboat_channel::ChannelKind;
use lifeboat_email::sink::{SmtpSink, Stage};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::providers::{same_address, Mode, Received, Simulated};

const TRANSIENT: &str = "451 4.7.500 Server busy. Please try again later from [127.0.0.1].";
const THROTTLE: &str = "450 4.2.1 Peak SMTP relay limit exceeded for this customer.";
const RESTRICT: &str = "421-4.7.28 Gmail has detected an unusual rate of mail originating from your SPF domain [sandbox.lifeboat.test]. To protect our users from spam,\r\n421 4.7.28 mail sent from your domain has been temporarily rate limited.";
const BAN: &str = "550 5.1.8 Access denied, bad outbound sender";
const UNKNOWN_USER: &str = "550 5.1.1 The email account that you tried to reach does not exist.";

/// What the mail server answers in `mode`, in one line.
pub fn describe(mode: &Mode) -> String {
    let reply = match mode {
        Mode::Accept => return "accepts every message".into(),
        Mode::Transient => TRANSIENT,
        Mode::Throttle => THROTTLE,
        Mode::Restrict => RESTRICT,
        Mode::Ban => BAN,
        Mode::RejectRecipient { address } => {
            return format!("RCPT TO <{address}>: {UNKNOWN_USER}; accepts others")
        }
    };
    format!("MAIL FROM: {}", reply.replace("\r\n", " "))
}

/// The simulated mail server.
pub struct Email {
    pub sim: Arc<Simulated>,
    sink: SmtpSink,
}

impl Email {
    /// Starts the sink and the relay; the relay's port is the one to configure.
    pub async fn start() -> io::Result<(Arc<Email>, u16)> {
        let sink = SmtpSink::start("127.0.0.1:0").await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let sim = Arc::new(Simulated::new(
            ChannelKind::Email,
            format!("smtp://127.0.0.1:{port}"),
        ));
        let email = Arc::new(Email { sim, sink });
        let relay = email.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        let relay = relay.clone();
                        tokio::spawn(async move {
                            if let Err(e) = relay.converse(client).await {
                                tracing::debug!(error = %e, "sandbox smtp relay: connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sandbox smtp relay: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok((email, port))
    }

    /// Sets the mode on the provider state and the matching sink reply.
    pub fn set_mode(&self, mode: Mode) {
        match &mode {
            Mode::Accept | Mode::RejectRecipient { .. } => self.sink.accept_all(),
            Mode::Transient => self.sink.reply_at(Stage::MailFrom, TRANSIENT),
            Mode::Throttle => self.sink.reply_at(Stage::MailFrom, THROTTLE),
            Mode::Restrict => self.sink.reply_at(Stage::MailFrom, RESTRICT),
            Mode::Ban => self.sink.reply_at(Stage::MailFrom, BAN),
        }
        self.sim.set_mode(mode);
    }

    /// Forgets what was received (here and in the sink).
    pub fn clear_received(&self) {
        self.sim.clear_received();
        self.sink.clear_received();
    }

    /// Relays one SMTP conversation between `client` and the sink.
    async fn converse(&self, client: TcpStream) -> io::Result<()> {
        let server = TcpStream::connect(self.sink.addr()).await?;
        let (client_read, mut client_write) = client.into_split();
        let (server_read, mut server_write) = server.into_split();
        let mut client_read = BufReader::new(client_read);
        let mut server_read = BufReader::new(server_read);

        let greeting = read_reply(&mut server_read).await?;
        client_write.write_all(greeting.as_bytes()).await?;
        let mut rcpt: Vec<String> = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if client_read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("RCPT TO:") {
                let path = mailbox(&line[8..]);
                let rejected = match self.sim.mode() {
                    Mode::RejectRecipient { address } => {
                        same_address(ChannelKind::Email, &address, &path)
                    }
                    _ => false,
                };
                if rejected {
                    self.sim.refuse(format!("to {path}: {UNKNOWN_USER}"));
                    client_write
                        .write_all(format!("{UNKNOWN_USER}\r\n").as_bytes())
                        .await?;
                    continue;
                }
                rcpt.push(path);
            }
            if upper.starts_with("MAIL FROM:") || upper.starts_with("RSET") {
                rcpt.clear();
            }
            server_write.write_all(line.as_bytes()).await?;
            let reply = read_reply(&mut server_read).await?;
            if upper.starts_with("MAIL FROM:") && reply.starts_with(['4', '5']) {
                self.sim.refuse(format!(
                    "MAIL FROM: {}",
                    reply.trim_end().replace("\r\n", " ")
                ));
            }
            let data = upper.trim_end() == "DATA" && reply.starts_with("354");
            client_write.write_all(reply.as_bytes()).await?;
            if reply.starts_with("421") || reply.starts_with("221") {
                return Ok(());
            }
            if data {
                // The message, line by line, up to the lone dot; then the sink's verdict.
                loop {
                    line.clear();
                    if client_read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    server_write.write_all(line.as_bytes()).await?;
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                let reply = read_reply(&mut server_read).await?;
                if reply.starts_with("250") {
                    self.record_accepted(&reply, std::mem::take(&mut rcpt));
                }
                client_write.write_all(reply.as_bytes()).await?;
            }
        }
    }

    /// Records the message the sink just stored; its reply names it (`queued as N`).
    fn record_accepted(&self, reply: &str, rcpt: Vec<String>) {
        let n: Option<usize> = reply
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok());
        let mail = n
            .filter(|n| *n >= 1)
            .and_then(|n| self.sink.received().get(n - 1).cloned());
        let (subject, text, request, message_id) = match &mail {
            Some(m) => {
                let body = m.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                (
                    m.header("Subject"),
                    body.trim_end().to_string(),
                    json!({"mail_from": m.mail_from, "rcpt_to": m.rcpt_to, "data": m.data}),
                    m.header("Message-ID"),
                )
            }
            None => (None, String::new(), json!({"rcpt_to": rcpt}), None),
        };
        self.sim.record(Received {
            at: Utc::now(),
            to: mail
                .as_ref()
                .map(|m| m.rcpt_to.join(", "))
                .unwrap_or_else(|| rcpt.join(", ")),
            text,
            message_id: message_id
                .unwrap_or_else(|| format!("queued as {}", n.unwrap_or_default())),
            subject,
            request,
        });
    }
}

/// The mailbox in `<a@b> SIZE=1`, without brackets and parameters.
fn mailbox(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => arg[start + 1..end].to_string(),
        _ => arg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Reads one whole SMTP reply (every `NNN-` line and the final `NNN ` line).
async fn read_reply<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> io::Result<String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            if reply.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(reply);
        }
        let last = line.as_bytes().get(3) != Some(&b'-');
        reply.push_str(&line);
        if last {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mailboxes() {
        assert_eq!(mailbox("<ana@example.com> NOTIFY=NEVER"), "ana@example.com");
        assert_eq!(mailbox(" ana@example.com"), "ana@example.com");
    }
}
