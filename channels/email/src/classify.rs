//! Turning an SMTP failure into a [`Class`].
//!
//! lettre tells a 4xx from a 5xx reply but does not parse the RFC 3463 enhanced status code
//! (`5.1.1`) that follows it, and it puts every reply line, joined with spaces, in the error's
//! `source()`. So the reply code comes from [`lettre::transport::smtp::Error::status`], the
//! enhanced code is parsed here from the start of the reply text ([`parse_enhanced_code`]), and
//! a few ambiguous codes (above all the catch-all `5.7.1`) are told apart by words in the text.
//!
//! # Classification table
//!
//! Rules are tried top to bottom; the first that matches wins. `e` is the enhanced code, which
//! counts only when its class agrees with the reply code (RFC 2034: `550 4.7.1` has none).
//! "words" are matched case-insensitively anywhere in the reply text.
//!
//! | reply | enhanced / words | class | example |
//! |---|---|---|---|
//! | 530, 534, 535, 538 | any | `config_error` | `535 5.7.8 Authentication credentials invalid`, `530 5.7.0 Authentication required` |
//! | 4xx | `4.7.28` | `channel_restricted` | `421-4.7.28 Gmail has detected an unusual rate of mail originating from your SPF domain … temporarily rate limited` |
//! | 421 | `4.7.0`, `4.7.1` or none, with "rate limited", "unsolicited" or "user complaints" | `channel_restricted` | `421-4.7.0 … unusual rate of unsolicited mail … temporarily rate limited` |
//! | 4xx | `4.2.1` with "relay limit" | `throttled` (channel) | `450 4.2.1 Peak SMTP relay limit exceeded for this customer.` |
//! | 4xx | `4.2.1`, `4.2.2` | `recipient_unreachable` | `450 4.2.1 The user you are trying to contact is receiving email too quickly`, `452 4.2.2 The recipient's inbox is out of storage space.` |
//! | 4xx | anything else (`4.4.x`, `451 4.7.500`–`699`, `421 4.3.2`, `451 4.7.0`, greylisting `450 4.7.1` / `450 4.2.0`, none) | `retry` (transient) | `451 4.7.500 Server busy. Please try again later` |
//! | 5xx | `5.1.1`, `5.1.2`, `5.1.3`, `5.1.6`, `5.1.10`, `5.2.1`, `5.2.2`, `5.4.1` | `recipient_unreachable` | `550 5.1.1 The email account that you tried to reach does not exist.` |
//! | 5xx | `5.1.8` with "bad outbound sender" | `channel_banned` | `550 5.1.8 Access denied, bad outbound sender` (Microsoft: account blocked for spam, admin must unblock) |
//! | 5xx | `5.1.7`, `5.1.8` (bad sender address) | `config_error` | `553 5.1.8 Sender address rejected: Domain not found` |
//! | 5xx | `5.4.5` | `channel_restricted` | `550 5.4.5 Daily user sending limit exceeded.` |
//! | 5xx | `5.7.8`, `5.7.11`, `5.7.26`, `5.7.27`, `5.7.57`, `5.7.509`, `5.7.515` | `config_error` | `550-5.7.26 This mail has been blocked because the sender is unauthenticated` (SPF/DKIM/DMARC or AUTH: fix DNS or credentials) |
//! | 5xx | `5.7.705` | `channel_banned` | `550 5.7.705 Access denied, tenant has exceeded threshold` |
//! | 5xx | `5.7.28`, `5.7.350`, `5.7.511`, `5.7.606`–`5.7.649`, `5.7.708` | `channel_restricted` | `550 5.7.606 Access denied, banned sending IP [x]`, `550 5.7.511 Access denied, banned sender` |
//! | 5xx | `5.7.0`, `5.7.1` or none, with "gcdp" and "policy" | `recipient_unreachable` | `550 5.7.1 This message violates example.com email policy. - gcdp <id> - gsmtp` (the recipient's domain refuses it) |
//! | 5xx | `5.7.0`, `5.7.1` or none, with "unsolicited", "blocked", "block list", "blocklist", "blacklist", "spamhaus" or "dnsbl" | `channel_restricted` | `550-5.7.1 … unusual rate of unsolicited mail … has been blocked`, `554 5.7.1 Service unavailable; Client host [x] blocked using Spamhaus` |
//! | 5xx | no enhanced code, with "user unknown", "unknown user", "no such user" or "mailbox not found" | `recipient_unreachable` | `550 No such user here` |
//! | 5xx | anything else, including a bare `5.7.1` | `rejected` | `550 5.7.1 Delivery not authorized, message refused` |
//!
//! Failures without a reply:
//!
//! | lettre error | class | code |
//! |---|---|---|
//! | timeout (`is_timeout`), and the channel's own timeout around the whole send | `retry` | `timeout` |
//! | refused connection, DNS failure, reset (lettre's `Connection` / `Network` kinds, which are neither transient nor permanent in lettre) | `retry` | `connection` / `network` |
//! | server closed the connection mid-reply (`incomplete response`) | `retry` | `connection_closed` |
//! | TLS failure (`is_tls`: bad certificate, no STARTTLS, handshake) | `config_error` | `tls` |
//! | reply that doesn't parse as SMTP (`is_response`) | `config_error` | `response` |
//! | client error (`is_client`: no common AUTH mechanism, …) | `config_error` | `client` |
//! | client error about a non-ASCII address or body the server can't take (no `SMTPUTF8` / `8BITMIME`) | `rejected` | `client` |
//!
//! Restrictions by reputation (`5.7.606`–`649`, `5.7.511`, Spamhaus listings) are lifted by a
//! manual delisting, not by time. They are still `channel_restricted`, not `channel_banned`:
//! the channel rests for its cooldown and one real notification then probes it, so a delisting
//! brings email back without an admin having to remember to re-enable it, while a listing that
//! persists keeps doubling the cooldown.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use lifeboat_channel::{Answer, Class, ThrottleScope};

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Parses the enhanced status code at the start of a reply text, as the regex
/// `^([245])\.(\d{1,3})\.(\d{1,3})` followed by a non-digit or the end (leading spaces ignored).
pub fn parse_enhanced_code(text: &str) -> Option<EnhancedCode> {
    let bytes = text.trim_start().as_bytes();
    let class = match bytes.first()? {
        b @ (b'2' | b'4' | b'5') => b - b'0',
        _ => return None,
    };
    if bytes.get(1) != Some(&b'.') {
        return None;
    }
    let (subject, rest) = number(&bytes[2..])?;
    if rest.first() != Some(&b'.') {
        return None;
    }
    let (detail, rest) = number(&rest[1..])?;
    if rest.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(EnhancedCode {
        class,
        subject,
        detail,
    })
}

/// One to three digits at the start of `bytes`, and what follows them.
fn number(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let len = bytes
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if len == 0 || len > 3 {
        return None;
    }
    let value = bytes[..len]
        .iter()
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    Some((value, &bytes[len..]))
}

const RESTRICTING_4XX_WORDS: &[&str] = &["rate limited", "unsolicited", "user complaints"];
const RESTRICTING_5XX_WORDS: &[&str] = &[
    "unsolicited",
    "blocked",
    "block list",
    "blocklist",
    "blacklist",
    "spamhaus",
    "dnsbl",
];
const UNKNOWN_USER_WORDS: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "mailbox not found",
];

/// Classifies a negative SMTP reply: the three-digit `reply_code`, its enhanced code if any,
/// and the reply text. See the [module documentation](self) for the table.
pub fn classify_reply(reply_code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Class {
    let lower = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let severity = reply_code / 100;
    let e = enhanced
        .filter(|e| u16::from(e.class) == severity)
        .map(|e| (e.subject, e.detail));
    let generic_7 = matches!(e, None | Some((7, 0)) | Some((7, 1)));

    if matches!(reply_code, 530 | 534 | 535 | 538) {
        return Class::ConfigError;
    }
    let restricted = Class::ChannelRestricted { retry_after: None };
    let unreachable = Class::RecipientUnreachable { opt_out: None };
    match severity {
        4 => match e {
            Some((7, 28)) => restricted,
            _ if reply_code == 421 && generic_7 && has(RESTRICTING_4XX_WORDS) => restricted,
            Some((2, 1)) if has(&["relay limit"]) => Class::Throttled {
                retry_after: None,
                scope: ThrottleScope::Channel,
            },
            Some((2, 1)) | Some((2, 2)) => unreachable,
            _ => Class::Transient { retry_after: None },
        },
        5 => match e {
            Some((1, 1 | 2 | 3 | 6 | 10)) | Some((2, 1 | 2)) | Some((4, 1)) => unreachable,
            Some((1, 8)) if has(&["bad outbound sender"]) => Class::ChannelBanned,
            Some((1, 7 | 8)) => Class::ConfigError,
            Some((4, 5)) => restricted,
            Some((7, 8 | 11 | 26 | 27 | 57 | 509 | 515)) => Class::ConfigError,
            Some((7, 705)) => Class::ChannelBanned,
            Some((7, 28 | 350 | 511 | 606..=649 | 708)) => restricted,
            _ if generic_7 && has(&["gcdp"]) && has(&["policy"]) => unreachable,
            _ if generic_7 && has(RESTRICTING_5XX_WORDS) => restricted,
            None if has(UNKNOWN_USER_WORDS) => unreachable,
            _ => Class::Rejected,
        },
        // lettre reports only 4xx and 5xx replies as errors.
        _ => Class::Transient { retry_after: None },
    }
}

/// The reply's words for `detail`, without the enhanced code that `code` already carries: each
/// line of a (multi-line) reply loses its leading copy of it, and the lines are joined with a
/// space. `5.1.8 Access denied` with code `550 5.1.8` becomes `Access denied`.
pub(crate) fn reply_words(text: &str, enhanced: Option<EnhancedCode>) -> String {
    let Some(e) = enhanced else {
        return text.trim().to_string();
    };
    let prefix = e.to_string();
    let words = text
        .lines()
        .map(|line| {
            let line = line.trim();
            line.strip_prefix(&prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
                .unwrap_or(line)
                .trim()
        })
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if words.is_empty() {
        text.trim().to_string()
    } else {
        words
    }
}

/// Classifies any error lettre returns for a send or a connection test. `timeout` is the
/// channel's timeout (lettre applies it to the TCP connect). `detail` may still need redacting.
pub(crate) fn classify_error(err: &lettre::transport::smtp::Error, timeout: Duration) -> Answer {
    let source = err.source().map(|s| s.to_string()).unwrap_or_default();
    if let Some(status) = err.status() {
        let reply_code = u16::from(status);
        let enhanced =
            parse_enhanced_code(&source).filter(|e| u16::from(e.class) == reply_code / 100);
        let code = match enhanced {
            Some(e) => format!("{reply_code} {e}"),
            None => reply_code.to_string(),
        };
        let class = classify_reply(reply_code, enhanced, &source);
        return Answer::failed(class, code, reply_words(&source, enhanced));
    }
    let transient = Class::Transient { retry_after: None };
    if err.is_timeout() {
        return Answer::timeout(timeout);
    }
    let (class, code) = if err.is_tls() {
        (Class::ConfigError, "tls")
    } else if err.is_client() {
        if source.to_ascii_lowercase().contains("non-ascii") {
            (Class::Rejected, "client")
        } else {
            (Class::ConfigError, "client")
        }
    } else if err.is_response() {
        if source == "incomplete response" {
            (transient, "connection_closed")
        } else {
            (Class::ConfigError, "response")
        }
    } else if err.is_transport_shutdown() {
        (transient, "transport_shutdown")
    } else if err.to_string().starts_with("network") {
        (transient, "network")
    } else {
        (transient, "connection")
    };
    Answer::failed(class, code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    #[test]
    fn detail_does_not_repeat_the_enhanced_code() {
        let e = ec(5, 1, 8);
        assert_eq!(
            reply_words("5.1.8 Access denied, bad outbound sender", e),
            "Access denied, bad outbound sender"
        );
        assert_eq!(
            reply_words("5.7.1 first line\n5.7.1 second line", ec(5, 7, 1)),
            "first line second line"
        );
        // Only a leading copy of the same code goes; other text stays as it is.
        assert_eq!(reply_words("5.1.80 odd", e), "5.1.80 odd");
        assert_eq!(reply_words("Access denied 5.1.8", e), "Access denied 5.1.8");
        assert_eq!(reply_words("5.1.8", e), "5.1.8");
        assert_eq!(reply_words(" plain words ", None), "plain words");
    }

    #[test]
    fn parses_enhanced_codes() {
        assert_eq!(parse_enhanced_code("5.1.1 user unknown"), ec(5, 1, 1));
        assert_eq!(parse_enhanced_code("  4.7.500 Server busy"), ec(4, 7, 500));
        assert_eq!(parse_enhanced_code("2.0.0"), ec(2, 0, 0));
        assert_eq!(parse_enhanced_code("5.7.26\tx"), ec(5, 7, 26));
        assert_eq!(parse_enhanced_code("5.7.1,"), ec(5, 7, 1));
        for bad in [
            "",
            "3.1.1 x",
            "5.1 x",
            "5..1 x",
            "5.1.1234 x",
            "5.1234.1 x",
            "x 5.1.1",
            "550 5.1.1",
            "5.a.1",
        ] {
            assert_eq!(parse_enhanced_code(bad), None, "{bad:?}");
        }
    }

    /// Classifies a whole reply as a server would send it, e.g. `"550 5.1.1 text"`.
    fn class_of(reply: &str) -> Class {
        let code: u16 = reply[..3].parse().unwrap();
        let text = &reply[4..];
        classify_reply(code, parse_enhanced_code(text), text)
    }

    const RESTRICTED: Class = Class::ChannelRestricted { retry_after: None };
    const UNREACHABLE: Class = Class::RecipientUnreachable { opt_out: None };
    const TRANSIENT: Class = Class::Transient { retry_after: None };

    #[test]
    fn mapping_table() {
        let cases: &[(&str, Class)] = &[
            // transient
            ("421 4.3.2 System not accepting network messages", TRANSIENT),
            ("451 4.7.0 Temporary server error. Please try again later.", TRANSIENT),
            ("450 4.7.1 Greylisted, please try again later", TRANSIENT),
            ("450 4.2.0 Greylisted", TRANSIENT),
            ("451 4.4.1 No answer from host", TRANSIENT),
            ("447 4.4.7 Delivery time expired", TRANSIENT),
            ("451 4.7.500 Server busy. Please try again later from [1.2.3.4]. (AS77712344)", TRANSIENT),
            ("451 4.7.650 The mail server [1.2.3.4] has been temporarily rate limited", TRANSIENT),
            ("421 Service not available", TRANSIENT),
            ("452 4.3.1 Insufficient system storage", TRANSIENT),
            ("421 4.7.0 Try again later, closing connection.", TRANSIENT),
            // recipient
            ("550 5.1.1 The email account that you tried to reach does not exist.", UNREACHABLE),
            ("550 5.1.2 Bad destination system address", UNREACHABLE),
            ("556 5.1.10 Recipient address has null MX", UNREACHABLE),
            ("550 5.2.1 The email account that you tried to reach is disabled.", UNREACHABLE),
            ("552 5.2.2 The email account that you tried to reach is over quota.", UNREACHABLE),
            ("452 4.2.2 The recipient's inbox is out of storage space.", UNREACHABLE),
            ("450 4.2.1 The user you are trying to contact is receiving email too quickly. Please resend your message at a later time.", UNREACHABLE),
            ("550 5.4.1 [bob@example.com]: Recipient address rejected: Access denied", UNREACHABLE),
            ("550 5.7.1 This message violates example.com email policy. - gcdp abc123 - gsmtp", UNREACHABLE),
            ("550 No such user here", UNREACHABLE),
            // channel restricted
            ("421 4.7.28 Gmail has detected an unusual rate of mail originating from your SPF domain [acme.example]. Mail sent from your domain has been temporarily rate limited.", RESTRICTED),
            ("421 4.7.0 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", RESTRICTED),
            ("550 5.7.1 [1.2.3.4] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", RESTRICTED),
            ("550 5.7.1 Unfortunately, messages from [1.2.3.4] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", RESTRICTED),
            ("550 5.7.1 Service unavailable, Client host [1.2.3.4] blocked using Spamhaus. (AS16012611)", RESTRICTED),
            ("554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked", RESTRICTED),
            ("550 5.7.350 Remote server returned message detected as spam", RESTRICTED),
            ("550 5.7.606 Access denied, banned sending IP [1.2.3.4]. To request removal from this list please visit https://sender.office.com/", RESTRICTED),
            ("550 5.7.649 Access denied, banned sending IP [1.2.3.4].", RESTRICTED),
            ("550 5.7.511 Access denied, banned sender[1.2.3.4]. To request removal forward this message to delist@messaging.microsoft.com", RESTRICTED),
            ("550 5.4.5 Daily user sending limit exceeded.", RESTRICTED),
            ("554 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org", RESTRICTED),
            // throttled
            ("450 4.2.1 Peak SMTP relay limit exceeded for this customer.", Class::Throttled { retry_after: None, scope: ThrottleScope::Channel }),
            // banned
            ("550 5.7.705 Access denied, tenant has exceeded threshold", Class::ChannelBanned),
            ("550 5.1.8 Access denied, bad outbound sender", Class::ChannelBanned),
            // config
            ("550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", Class::ConfigError),
            ("550 5.7.27 SPF check failed", Class::ConfigError),
            ("550 5.7.509 Access denied, sending domain acme.example does not pass DMARC verification and has a DMARC policy of reject.", Class::ConfigError),
            ("550 5.7.515 Access denied, sending domain does not meet the required authentication level.", Class::ConfigError),
            ("535 5.7.8 Username and Password not accepted.", Class::ConfigError),
            ("530 5.7.0 Authentication required", Class::ConfigError),
            ("535 Authentication failed", Class::ConfigError),
            ("553 5.1.8 Sender address rejected: Domain not found", Class::ConfigError),
            // rejected
            ("550 5.7.1 Delivery not authorized, message refused", Class::Rejected),
            ("554 5.7.9 Message not accepted for policy reasons.", Class::Rejected),
            ("552 5.3.4 Message size exceeds fixed maximum message size", Class::Rejected),
            ("550 Requested action not taken", Class::Rejected),
            ("554 5.6.0 Message content rejected", Class::Rejected),
        ];
        for (reply, class) in cases {
            assert_eq!(&class_of(reply), class, "{reply}");
        }
    }

    #[test]
    fn enhanced_code_must_agree_with_the_reply() {
        // `550 4.2.1` is malformed: the enhanced code is ignored, so this is a plain 5xx.
        assert_eq!(class_of("550 4.2.1 odd"), Class::Rejected);
        assert_eq!(class_of("450 5.1.1 odd"), TRANSIENT);
    }
}
