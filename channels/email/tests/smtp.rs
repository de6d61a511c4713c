//! The email channel against a real SMTP conversation over TCP on 127.0.0.1 with the sink.

use std::time::Duration;

use lifeboat_channel::{Answer, Category, Channel, Class, Health, OutboundMessage, ThrottleScope};
use lifeboat_email::sink::{SmtpSink, Stage};
use lifeboat_email::{EmailChannel, EmailConfig};

const PASSWORD: &str = "s3cret-Pa55word";
const TIMEOUT: Duration = Duration::from_secs(5);

fn config(addr: std::net::SocketAddr, credentials: Option<(&str, &str)>) -> EmailConfig {
    let mut json = serde_json::json!({
        "smtp_host": addr.ip().to_string(),
        "smtp_port": addr.port(),
        "tls": "none",
        "from": "Acme <notify@acme.example>",
    });
    if let Some((user, pass)) = credentials {
        json["username"] = user.into();
        json["password"] = pass.into();
    }
    serde_json::from_value(json).unwrap()
}

fn channel(sink: &SmtpSink) -> EmailChannel {
    EmailChannel::new(config(sink.addr(), None), TIMEOUT).unwrap()
}

fn message(to: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: "ntf_1".into(),
        category: Category::Marketing,
        to: to.into(),
        text: "Your order 42 has shipped.".into(),
        subject: Some("Order 42 shipped".into()),
        html: None,
        whatsapp_template: None,
        retry_key: "c0ffee".into(),
        headers: vec![],
    }
}

const RESTRICTED: Class = Class::ChannelRestricted { retry_after: None };
const UNREACHABLE: Class = Class::RecipientUnreachable { opt_out: None };
const TRANSIENT: Class = Class::Transient { retry_after: None };

#[tokio::test]
async fn plain_message_arrives_with_envelope_and_headers() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let answer = channel(&sink).send(&message("bob@example.com")).await;
    assert_eq!(answer.class, Class::Sent, "{answer:?}");
    let id = answer.message_id.clone().unwrap();
    assert!(
        id.starts_with('<') && id.ends_with("@acme.example>"),
        "{id}"
    );

    let mails = sink.received();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "notify@acme.example");
    assert_eq!(mail.rcpt_to, vec!["bob@example.com".to_string()]);
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Acme <notify@acme.example>")
    );
    assert_eq!(mail.header("To").as_deref(), Some("bob@example.com"));
    assert_eq!(mail.header("Subject").as_deref(), Some("Order 42 shipped"));
    assert_eq!(mail.header("Message-ID"), Some(id));
    let date = mail.header("Date").unwrap();
    chrono::DateTime::parse_from_rfc2822(&date).unwrap();
    assert!(mail
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(!mail.data.contains("multipart"));
    assert!(mail.data.contains("Your order 42 has shipped."));
}

#[tokio::test]
async fn html_makes_multipart_alternative_and_extra_headers_arrive_intact() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let unsubscribe = "<https://acme.example/unsubscribe?u=opaque-token-1234567890abcdef>, <mailto:unsubscribe+opaque@acme.example?subject=unsubscribe>";
    let mut m = message("bob@example.com");
    m.html = Some("<p>Your order <b>42</b> has shipped.</p>".into());
    m.headers = vec![
        ("List-Unsubscribe".into(), unsubscribe.into()),
        (
            "List-Unsubscribe-Post".into(),
            "List-Unsubscribe=One-Click".into(),
        ),
    ];
    let answer = channel(&sink).send(&m).await;
    assert_eq!(answer.class, Class::Sent, "{answer:?}");

    let mail = &sink.received()[0];
    assert_eq!(
        mail.header("List-Unsubscribe").as_deref(),
        Some(unsubscribe)
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let content_type = mail.header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let plain = mail
        .data
        .find("Content-Type: text/plain")
        .expect("plain part");
    let html = mail
        .data
        .find("Content-Type: text/html")
        .expect("html part");
    assert!(plain < html, "text/plain comes first");
    assert!(mail.data.contains("Your order 42 has shipped."));
    assert!(mail.data.contains("<b>42</b>"));
}

#[tokio::test]
async fn missing_subject_gets_a_default() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let mut m = message("bob@example.com");
    m.subject = None;
    assert_eq!(channel(&sink).send(&m).await.class, Class::Sent);
    assert_eq!(
        sink.received()[0].header("Subject").as_deref(),
        Some("Your order 42 has shipped.")
    );
}

#[tokio::test]
async fn dot_lines_survive_stuffing() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let mut m = message("bob@example.com");
    m.text = "line one\n.\n..two dots\nend".into();
    assert_eq!(channel(&sink).send(&m).await.class, Class::Sent);
    let data = &sink.received()[0].data;
    assert!(data.contains("\r\n.\r\n..two dots\r\n"), "{data}");
}

#[tokio::test]
async fn invalid_recipient_is_rejected_without_smtp() {
    // A closed port: if the channel tried SMTP, the answer would be a transient connection error.
    let addr = closed_port();
    let ch = EmailChannel::new(config(addr, None), TIMEOUT).unwrap();
    let answer = ch.send(&message("not an address")).await;
    assert_eq!(answer.class, Class::Rejected, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("invalid_address"));
}

#[tokio::test]
async fn auth_with_right_credentials_sends() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.require_auth("notify", PASSWORD);
    let ch = EmailChannel::new(config(sink.addr(), Some(("notify", PASSWORD))), TIMEOUT).unwrap();
    assert!(!format!("{ch:?}").contains(PASSWORD));
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, Class::Sent, "{answer:?}");
    assert_eq!(sink.received().len(), 1);
    assert!(ch.health().await.is_ok());
}

#[tokio::test]
async fn auth_with_wrong_credentials_is_a_config_error() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.require_auth("notify", "the-right-one");
    let ch = EmailChannel::new(config(sink.addr(), Some(("notify", PASSWORD))), TIMEOUT).unwrap();
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, Class::ConfigError, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("535 5.7.8"));
    assert!(!format!("{answer:?}").contains(PASSWORD));
    assert!(sink.received().is_empty());

    match ch.health().await {
        Health::ConfigError(words) => {
            assert!(words.contains("535"), "{words}");
            assert!(!words.contains(PASSWORD));
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn no_credentials_when_auth_is_required_is_a_config_error() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.require_auth("notify", PASSWORD);
    let answer = channel(&sink).send(&message("bob@example.com")).await;
    assert_eq!(answer.class, Class::ConfigError, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("530 5.7.0"));
}

/// Sends one message with `reply` configured at `stage` and returns the answer.
async fn answer_for(stage: Stage, reply: &str) -> Answer {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.reply_at(stage, reply);
    let answer = channel(&sink).send(&message("bob@example.com")).await;
    assert!(sink.received().is_empty(), "nothing stored for {reply:?}");
    answer
}

#[tokio::test]
async fn every_class_from_real_reply_lines() {
    let cases: &[(Stage, &str, Class, &str)] = &[
        // recipient
        (
            Stage::RcptTo,
            "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550-5.1.1 double-checking the recipient's email address for typos or\r\n550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp",
            UNREACHABLE,
            "550 5.1.1",
        ),
        (
            Stage::RcptTo,
            "452 4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
            UNREACHABLE,
            "452 4.2.2",
        ),
        (
            Stage::RcptTo,
            "450 4.2.1 The user you are trying to contact is receiving email too quickly. Please resend your message at a later time.",
            UNREACHABLE,
            "450 4.2.1",
        ),
        (
            Stage::RcptTo,
            "550 5.4.1 [bob@example.com]: Recipient address rejected: Access denied",
            UNREACHABLE,
            "550 5.4.1",
        ),
        (
            Stage::DataEnd,
            "550 5.7.1 This message violates example.com email policy. - gcdp 1a2b3c - gsmtp",
            UNREACHABLE,
            "550 5.7.1",
        ),
        // channel restricted
        (
            Stage::DataEnd,
            "550-5.7.1 [203.0.113.7] Our system has detected an unusual rate of\r\n550-5.7.1 unsolicited mail originating from your IP address. To protect our\r\n550-5.7.1 users from spam, mail sent from your IP address has been blocked.\r\n550 5.7.1 https://support.google.com/mail/?p=UnsolicitedIPError - gsmtp",
            RESTRICTED,
            "550 5.7.1",
        ),
        (
            Stage::MailFrom,
            "421-4.7.28 Gmail has detected an unusual rate of mail originating from your SPF domain\r\n421-4.7.28 [acme.example]. To protect our users from spam, mail sent from your domain\r\n421 4.7.28 has been temporarily rate limited. - gsmtp",
            RESTRICTED,
            "421 4.7.28",
        ),
        (
            Stage::Greeting,
            "421-4.7.0 [203.0.113.7] Our system has detected an unusual rate of\r\n421-4.7.0 unsolicited mail originating from your IP address. To protect our\r\n421-4.7.0 users from spam, mail sent from your IP address has been temporarily\r\n421 4.7.0 rate limited. - gsmtp",
            RESTRICTED,
            "421 4.7.0",
        ),
        (
            Stage::Greeting,
            "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org",
            RESTRICTED,
            "554 5.7.1",
        ),
        (
            Stage::MailFrom,
            "550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from this list please visit https://sender.office.com/ and follow the directions.",
            RESTRICTED,
            "550 5.7.606",
        ),
        (
            Stage::MailFrom,
            "550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list, forward this message to delist@messaging.microsoft.com.",
            RESTRICTED,
            "550 5.7.511",
        ),
        (
            Stage::DataEnd,
            "550 5.7.350 Remote server returned message detected as spam",
            RESTRICTED,
            "550 5.7.350",
        ),
        // config
        (
            Stage::DataEnd,
            "550-5.7.26 This mail has been blocked because the sender is unauthenticated.\r\n550-5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.\r\n550 5.7.26 Authentication results: DKIM = did not pass SPF [acme.example] with ip: [203.0.113.7] = did not pass - gsmtp",
            Class::ConfigError,
            "550 5.7.26",
        ),
        (
            Stage::DataEnd,
            "550 5.7.509 Access denied, sending domain acme.example does not pass DMARC verification and has a DMARC policy of reject.",
            Class::ConfigError,
            "550 5.7.509",
        ),
        // transient
        (
            Stage::MailFrom,
            "451 4.7.500 Server busy. Please try again later from [203.0.113.7]. (AS77712344)",
            TRANSIENT,
            "451 4.7.500",
        ),
        (
            Stage::RcptTo,
            "450 4.7.1 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
            TRANSIENT,
            "450 4.7.1",
        ),
        (Stage::Greeting, "421 4.3.2 System not accepting network messages", TRANSIENT, "421 4.3.2"),
        (Stage::Greeting, "421 Service not available, closing transmission channel", TRANSIENT, "421"),
        // throttled
        (
            Stage::RcptTo,
            "450 4.2.1 Peak SMTP relay limit exceeded for this customer.",
            Class::Throttled { retry_after: None, scope: ThrottleScope::Channel },
            "450 4.2.1",
        ),
        // banned
        (
            Stage::MailFrom,
            "550 5.7.705 Access denied, tenant has exceeded threshold",
            Class::ChannelBanned,
            "550 5.7.705",
        ),
        // rejected: a bare 5.7.1 without telling words
        (
            Stage::DataEnd,
            "550 5.7.1 Delivery not authorized, message refused",
            Class::Rejected,
            "550 5.7.1",
        ),
        (
            Stage::DataEnd,
            "552 5.3.4 Message size exceeds fixed maximum message size",
            Class::Rejected,
            "552 5.3.4",
        ),
    ];
    for (stage, reply, class, code) in cases {
        let answer = answer_for(*stage, reply).await;
        assert_eq!(&answer.class, class, "{reply}: {answer:?}");
        assert_eq!(answer.code.as_deref(), Some(*code), "{reply}");
        assert!(answer.message_id.is_none());
        let detail = answer.detail.unwrap();
        assert!(!detail.is_empty());
        assert!(
            reply.contains(detail.split(' ').nth(1).unwrap()),
            "{detail}"
        );
        // The code is not repeated in the words: `550 5.1.8` + `Access denied, ...`.
        if let Some(enhanced) = code.split(' ').nth(1) {
            assert!(!detail.starts_with(enhanced), "{code} / {detail}");
        }
    }
}

#[tokio::test]
async fn multi_line_words_are_seen_across_lines() {
    let answer = answer_for(
        Stage::DataEnd,
        "550-5.7.1 [203.0.113.7] Our system has detected that this message is\r\n550-5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail,\r\n550 5.7.1 this message has been blocked. - gsmtp",
    )
    .await;
    assert_eq!(answer.class, RESTRICTED);
    let detail = answer.detail.unwrap();
    assert!(detail.contains("likely unsolicited mail"), "{detail}");
}

#[tokio::test]
async fn unparsable_reply_is_a_config_error() {
    let answer = answer_for(Stage::Greeting, "hello, I am not SMTP").await;
    assert_eq!(answer.class, Class::ConfigError, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("response"));
}

#[tokio::test]
async fn timeout_is_transient() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    sink.delay_replies(Duration::from_secs(3));
    let timeout = Duration::from_millis(300);
    let ch = EmailChannel::new(config(sink.addr(), None), timeout).unwrap();
    let started = std::time::Instant::now();
    let answer = ch.send(&message("bob@example.com")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(answer.class, TRANSIENT, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("timeout"));

    let started = std::time::Instant::now();
    assert!(matches!(ch.health().await, Health::Unreachable(_)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A port nobody listens on: bind, note the port, drop the listener.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let ch = EmailChannel::new(config(closed_port(), None), TIMEOUT).unwrap();
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, TRANSIENT, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("connection"));
    match ch.health().await {
        Health::Unreachable(words) => assert!(words.contains("connection"), "{words}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn server_gone_before_connecting_is_transient() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let ch = channel(&sink);
    sink.shutdown().await;
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, TRANSIENT, "{answer:?}");
}

#[tokio::test]
async fn server_closing_mid_conversation_is_transient() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    // A server that greets, answers EHLO, then hangs up on MAIL FROM.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 hello\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("EHLO") {
                w.write_all(b"250 hello\r\n").await.unwrap();
            } else {
                break;
            }
        }
    });
    let ch = EmailChannel::new(config(addr, None), TIMEOUT).unwrap();
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, TRANSIENT, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some("connection_closed"));
}

#[tokio::test]
async fn health_ok_names_the_server() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let health = channel(&sink).health().await;
    assert_eq!(health, Health::Ok(format!("smtp {}", sink.addr())));
}

#[tokio::test]
async fn sink_serves_connections_concurrently_and_recovers() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    let ch = std::sync::Arc::new(channel(&sink));
    let sends = (0..8).map(|i| {
        let ch = ch.clone();
        tokio::spawn(async move { ch.send(&message(&format!("user{i}@example.com"))).await })
    });
    for send in sends {
        assert_eq!(send.await.unwrap().class, Class::Sent);
    }
    assert_eq!(sink.received().len(), 8);

    sink.reply_at(Stage::RcptTo, "550 5.1.1 user unknown");
    assert_eq!(ch.send(&message("x@example.com")).await.class, UNREACHABLE);
    sink.accept_all();
    assert_eq!(ch.send(&message("x@example.com")).await.class, Class::Sent);
    assert_eq!(sink.received().len(), 9);
}

#[tokio::test]
async fn password_never_in_debug_or_answers() {
    let sink = SmtpSink::start("127.0.0.1:0").await.unwrap();
    // A server that echoes the password back in its reply.
    sink.reply_at(Stage::DataEnd, format!("554 5.6.0 rejected {PASSWORD}"));
    let cfg = config(sink.addr(), Some(("notify", PASSWORD)));
    assert!(!format!("{cfg:?}").contains(PASSWORD));
    let ch = EmailChannel::new(cfg, TIMEOUT).unwrap();
    assert!(!format!("{ch:?}").contains(PASSWORD));
    let answer = ch.send(&message("bob@example.com")).await;
    assert_eq!(answer.class, Class::Rejected);
    assert!(!format!("{answer:?}").contains(PASSWORD), "{answer:?}");
    assert!(answer.detail.unwrap().contains("***"));

    let mut bad = config(sink.addr(), Some(("notify", PASSWORD)));
    bad.from = "nonsense".into();
    let err = EmailChannel::new(bad, TIMEOUT).unwrap_err();
    assert_eq!(err.key, "from");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
}
