//! Building the mail for one [`OutboundMessage`]: headers, parts and the `Message-ID`.

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use lifeboat_channel::OutboundMessage;

/// The subject used when the message has none and its text has no usable first line.
pub const DEFAULT_SUBJECT: &str = "Notification";

/// Longest subject derived from the text's first line, in characters.
const DERIVED_SUBJECT_CHARS: usize = 78;

/// Headers the channel sets itself; `OutboundMessage::headers` may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
];

/// A mail ready to hand to the transport, with the `Message-ID` it carries.
pub(crate) struct BuiltMail {
    pub message: Message,
    /// `<uuid@from-domain>`, angle brackets included, exactly as in the header.
    pub message_id: String,
}

/// Why a message can't be turned into a mail. Every case is the message's fault: `rejected`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("`{0}` is not an email address")]
    InvalidRecipient(String),
    #[error("header `{0}` is not allowed: {1}")]
    InvalidHeader(String, &'static str),
    #[error("could not build the mail: {0}")]
    Build(#[from] lettre::error::Error),
}

impl BuildError {
    /// The short tag used as the answer's code.
    pub fn code(&self) -> &'static str {
        match self {
            BuildError::InvalidRecipient(_) => "invalid_address",
            BuildError::InvalidHeader(..) => "invalid_header",
            BuildError::Build(_) => "invalid_message",
        }
    }
}

/// Builds the mail: `From`, `To`, `Subject`, a fresh `Message-ID`, `Date`, the extra headers,
/// and a text/plain body, or multipart/alternative text + HTML when `html` is set.
pub(crate) fn build(from: &Mailbox, message: &OutboundMessage) -> Result<BuiltMail, BuildError> {
    let to: Mailbox = message
        .to
        .trim()
        .parse()
        .map_err(|_| BuildError::InvalidRecipient(message.to.clone()))?;

    let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), from.email.domain());
    let subject = match &message.subject {
        Some(subject) if !subject.trim().is_empty() => subject.clone(),
        _ => derived_subject(&message.text),
    };

    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(message_id.clone()))
        .date_now();
    for (name, value) in &message.headers {
        builder = builder.raw_header(extra_header(name, value)?);
    }

    let mail = match &message.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            html.clone(),
        ))?,
        None => builder.singlepart(SinglePart::plain(message.text.clone()))?,
    };
    Ok(BuiltMail {
        message: mail,
        message_id,
    })
}

/// The first non-empty line of the text, cut at 78 characters, or [`DEFAULT_SUBJECT`].
fn derived_subject(text: &str) -> String {
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return DEFAULT_SUBJECT.to_string();
    };
    if line.chars().count() <= DERIVED_SUBJECT_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(DERIVED_SUBJECT_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// One extra header. The name must be an RFC 5322 field name (printable ASCII, no `:`) and not
/// one the channel sets itself; the value is encoded by lettre (RFC 2047 for non-ASCII or
/// line breaks), so it can't inject other headers.
fn extra_header(name: &str, value: &str) -> Result<HeaderValue, BuildError> {
    let invalid = |why| BuildError::InvalidHeader(name.to_string(), why);
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(invalid("not a header field name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(invalid("the channel sets it itself"));
    }
    let name = HeaderName::new_from_ascii(name.to_string())
        .map_err(|_| invalid("not a header field name"))?;
    Ok(HeaderValue::new(name, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_channel::Category;

    fn outbound(to: &str) -> OutboundMessage {
        OutboundMessage {
            notification_id: "n1".into(),
            category: Category::Transactional,
            to: to.into(),
            text: "Your code is 123456\nsecond line".into(),
            subject: None,
            html: None,
            whatsapp_template: None,
            retry_key: "k".into(),
            headers: vec![],
        }
    }

    fn from() -> Mailbox {
        "Acme <notify@acme.example>".parse().unwrap()
    }

    fn formatted(mail: &BuiltMail) -> String {
        String::from_utf8(mail.message.formatted()).unwrap()
    }

    #[test]
    fn plain_message_has_the_headers() {
        let mail = build(&from(), &outbound("bob@example.com")).unwrap();
        let text = formatted(&mail);
        assert!(mail.message_id.starts_with('<'));
        assert!(mail.message_id.ends_with("@acme.example>"));
        assert!(text.contains(&format!("Message-ID: {}\r\n", mail.message_id)));
        assert!(text.contains("Subject: Your code is 123456\r\n"));
        assert!(text.contains("To: bob@example.com\r\n"));
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(text.contains("Date: "));
        assert!(!text.contains("multipart"));
    }

    #[test]
    fn html_makes_an_alternative() {
        let mut m = outbound("bob@example.com");
        m.html = Some("<p>hi</p>".into());
        m.subject = Some("Hello".into());
        let text = formatted(&build(&from(), &m).unwrap());
        assert!(text.contains("Subject: Hello\r\n"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("text/html"));
    }

    #[test]
    fn bad_recipient_and_headers_are_refused() {
        let err = build(&from(), &outbound("not an address")).err().unwrap();
        assert_eq!(err.code(), "invalid_address");

        for name in ["Bcc", "from", "X-Bad\r\nBcc", "Has Space", ""] {
            let mut m = outbound("bob@example.com");
            m.headers = vec![(name.into(), "x".into())];
            let err = build(&from(), &m).err().unwrap();
            assert_eq!(err.code(), "invalid_header", "{name:?}");
        }
    }

    #[test]
    fn header_values_cannot_inject() {
        let mut m = outbound("bob@example.com");
        m.headers = vec![("X-Note".into(), "a\r\nBcc: evil@example.com".into())];
        let text = formatted(&build(&from(), &m).unwrap());
        assert!(!text.contains("\r\nBcc:"));
    }

    #[test]
    fn derived_subjects() {
        assert_eq!(derived_subject(""), DEFAULT_SUBJECT);
        assert_eq!(derived_subject("\n  \n"), DEFAULT_SUBJECT);
        assert_eq!(derived_subject("\n hello \nworld"), "hello");
        let long = "é".repeat(200);
        let s = derived_subject(&long);
        assert_eq!(s.chars().count(), DERIVED_SUBJECT_CHARS);
        assert!(s.ends_with('…'));
    }
}
