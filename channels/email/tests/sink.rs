//! The sink's SMTP dialogue, driven by hand (the parts lettre doesn't use).

use std::time::Duration;

use lifeboat_email::sink::{SmtpSink, Stage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(sink: &SmtpSink) -> (Client, String) {
        let (r, writer) = TcpStream::connect(sink.addr()).await.unwrap().into_split();
        let mut client = Client {
            lines: BufReader::new(r).lines(),
            writer,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Reads one reply, all its lines joined with `\n`.
    async fn reply(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap_or_default();
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            out.push(line);
            if last {
                return out.join("\n");
            }
        }
    }

    async fn say(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn dialogue_with_auth_login() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.require_auth("user", "pass");
    let (mut c, greeting) = Client::connect(&sink).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.say("EHLO client.example").await;
    assert!(ehlo.contains("250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(c.say("HELO client.example").await.starts_with("250 "));
    assert!(c.say("NOOP").await.starts_with("250 "));
    assert!(c
        .say("MAIL FROM:<a@example.com>")
        .await
        .starts_with("530 5.7.0"));
    // AUTH LOGIN, wrong password first.
    assert_eq!(c.say("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.say("dXNlcg==").await, "334 UGFzc3dvcmQ6"); // "user"
    assert!(c.say("d3Jvbmc=").await.starts_with("535 5.7.8")); // "wrong"
    assert_eq!(c.say("AUTH LOGIN dXNlcg==").await, "334 UGFzc3dvcmQ6");
    assert!(c.say("cGFzcw==").await.starts_with("235 ")); // "pass"

    assert!(c.say("RCPT TO:<b@example.com>").await.starts_with("503"));
    assert!(c.say("MAIL FROM:<a@example.com>").await.starts_with("250"));
    assert!(c.say("RSET").await.starts_with("250"));
    assert!(c.say("DATA").await.starts_with("503"));
    assert!(c.say("MAIL FROM:<a@example.com>").await.starts_with("250"));
    assert!(c.say("RCPT TO:<b@example.com>").await.starts_with("250"));
    assert!(c.say("RCPT TO:<c@example.com>").await.starts_with("250"));
    assert!(c.say("DATA").await.starts_with("354"));
    assert!(c
        .say("Subject: hi\r\n\r\n..dot\r\nbody\r\n.")
        .await
        .starts_with("250"));
    assert!(c.say("BOGUS").await.starts_with("500"));
    assert!(c.say("QUIT").await.starts_with("221"));

    let mails = sink.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].mail_from, "a@example.com");
    assert_eq!(mails[0].rcpt_to, ["b@example.com", "c@example.com"]);
    assert_eq!(mails[0].data, "Subject: hi\r\n\r\n.dot\r\nbody\r\n");
    sink.clear_received();
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn auth_plain_and_configured_multi_line_reply() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.require_auth("user", "pass");
    sink.reply_at(Stage::MailFrom, "421-4.7.0 line one\r\n421 4.7.0 line two");
    let (mut c, _) = Client::connect(&sink).await;
    c.say("EHLO x").await;
    // "\0user\0pass"
    assert!(c
        .say("AUTH PLAIN AHVzZXIAcGFzcw==")
        .await
        .starts_with("235"));
    let reply = c.say("MAIL FROM:<a@example.com>").await;
    assert_eq!(reply, "421-4.7.0 line one\n421 4.7.0 line two");
    // 421 closes the connection.
    let closed = tokio::time::timeout(Duration::from_secs(5), c.lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, None);
}

#[tokio::test]
async fn without_required_auth_any_credentials_pass() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let (mut c, _) = Client::connect(&sink).await;
    c.say("EHLO x").await;
    assert!(c.say("AUTH PLAIN AGFueQBhbnk=").await.starts_with("235"));
}

#[tokio::test]
async fn dropping_the_sink_closes_it() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let addr = sink.addr();
    let (mut c, _) = Client::connect(&sink).await;
    drop(sink);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err());
    let next = tokio::time::timeout(Duration::from_secs(5), c.lines.next_line())
        .await
        .unwrap();
    assert!(matches!(next, Ok(None) | Err(_)));
}
