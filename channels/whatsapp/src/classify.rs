//! Turns a Graph API answer into a [`Class`]: the only thing the dispatcher acts on.
//!
//! Meta asks integrators to build on the numeric `code` (and the `error_data.details` text),
//! not on titles, subcodes (gone since v16.0) or HTTP statuses, so the class comes from the
//! code. The HTTP status only decides for codes this table doesn't know and for bodies that
//! aren't Graph errors at all.
//!
//! | class | Graph error codes |
//! |---|---|
//! | transient (retry same channel) | HTTP 5xx, timeouts, connection errors; `1`, `2`, `131000`, `131016`, `133004`, `131057` |
//! | throttled, whole channel | `130429` (throughput), `4` (app call rate), `80007` (WABA rate), `133016` (register rate); an unknown code or non-Graph body with HTTP 429 |
//! | throttled, this recipient only | `131056` (business/consumer pair rate limit) |
//! | recipient unreachable | `131026`, `131049`, `130472`, `131021`, `130497` (country restriction, per recipient); `131050` with opt-out `stopped_marketing`; `100` when the text says the recipient is not a WhatsApp user |
//! | rejected (this message can't go this way) | `131047` (24 h window closed), `131051`, `131053`, `132001` (template does not exist), `132015` (template paused), `132016` (template disabled), `132068`, `132069` |
//! | channel restricted (cooldown) | `368` (policy block), `131048` (spam rate limit) |
//! | channel banned (until an admin) | `131031` (account locked), `131042` (payment), `133007`, `1031` |
//! | config error (disabled) | `0`, `190`, `3`, `10`, `200`–`299`, `33`, `100` (otherwise), `131005`, `131008`, `131009`, `131030`, `131045`, `131058`, `132000`, `132002`–`132012`, `133010` |
//! | anything else | transient with HTTP 5xx, throttled with HTTP 429, rejected otherwise |
//!
//! Some answers also carry a [`Signal`] ([`signal_for_code`]) about something narrower than
//! the channel, so the gateway stops asking where the answer would be the same:
//! `132015` → the template is paused, `132016` and `132001` → the template is disabled (or
//! gone), `131049` → Meta holds this person's marketing for about a day. A missing or
//! disabled template is this template's problem, not the channel's configuration: the channel
//! stays in rotation for every other template and for free-form text.
//!
//! `Retry-After` (seconds) is kept on transient, throttled and restricted answers; without it,
//! the `estimated_time_to_regain_access` of `x-business-use-case-usage` (minutes) is used.

use std::time::Duration;

use lifeboat_channel::{Answer, Class, OptOut, Signal, ThrottleScope};
use serde::Deserialize;
use serde_json::Value;

/// The `error` object of a Graph API error body.
#[derive(Debug, Clone, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "code_as_i64")]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_data: Option<ErrorData>,
}

/// `error.error_data`: Meta's stable, human-readable explanation is in `details`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorData {
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GraphError,
}

/// Accepts the code as a JSON number or a numeric string.
fn code_as_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

impl GraphError {
    /// `message` and `error_data.details`, joined, for `Answer.detail`.
    pub fn detail(&self) -> String {
        let message = self.message.as_deref().unwrap_or("").trim();
        let details = self
            .error_data
            .as_ref()
            .and_then(|d| d.details.as_deref())
            .unwrap_or("")
            .trim();
        match (message.is_empty(), details.is_empty()) {
            (false, false) if message != details => format!("{message}: {details}"),
            (false, _) => message.to_string(),
            (true, false) => details.to_string(),
            (true, true) => "no message".to_string(),
        }
    }
}

/// Parses a Graph API error body (`{"error": {...}}`), if it is one.
pub fn parse_graph_error(body: &[u8]) -> Option<GraphError> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

/// The class of a Graph error `code`.
///
/// `http_status` is `None` for errors that arrive in a status webhook; `text` is the error's
/// message and details (only consulted for code `100`); `retry_after` comes from a
/// `Retry-After` header.
pub fn class_for_code(
    code: i64,
    http_status: Option<u16>,
    text: &str,
    retry_after: Option<Duration>,
) -> Class {
    let throttled = |scope| Class::Throttled { retry_after, scope };
    match code {
        1 | 2 | 131000 | 131016 | 133004 | 131057 => Class::Transient { retry_after },
        130429 | 4 | 80007 | 133016 => throttled(ThrottleScope::Channel),
        131056 => throttled(ThrottleScope::Recipient),
        131026 | 131049 | 130472 | 131021 | 130497 => Class::RecipientUnreachable { opt_out: None },
        131050 => Class::RecipientUnreachable {
            opt_out: Some(OptOut::StoppedMarketing),
        },
        100 if says_not_a_whatsapp_user(text) => Class::RecipientUnreachable { opt_out: None },
        131047 | 131051 | 131053 | 132001 | 132015 | 132016 | 132068 | 132069 => Class::Rejected,
        368 | 131048 => Class::ChannelRestricted { retry_after },
        131031 | 131042 | 133007 | 1031 => Class::ChannelBanned,
        0
        | 3
        | 10
        | 33
        | 100
        | 190
        | 200..=299
        | 131005
        | 131008
        | 131009
        | 131030
        | 131045
        | 131058
        | 132000
        | 132002..=132012
        | 133010 => Class::ConfigError,
        _ => class_for_status(http_status.unwrap_or(400), retry_after),
    }
}

/// What a Graph error `code` says about the template or the recipient's marketing, beyond
/// its class (the module's table).
pub fn signal_for_code(code: i64) -> Option<Signal> {
    match code {
        132015 => Some(Signal::TemplatePaused),
        132016 | 132001 => Some(Signal::TemplateDisabled),
        131049 => Some(Signal::RecipientMarketingHeld),
        _ => None,
    }
}

/// The class of an answer that carries no known code: 5xx is transient, 429 throttles the
/// channel, everything else rejects this message.
pub fn class_for_status(status: u16, retry_after: Option<Duration>) -> Class {
    match status {
        500..=599 => Class::Transient { retry_after },
        429 => Class::Throttled {
            retry_after,
            scope: ThrottleScope::Channel,
        },
        _ => Class::Rejected,
    }
}

/// Whether a code `100` error's words say the recipient has no WhatsApp account
/// (e.g. "Recipient is not a valid WhatsApp user").
fn says_not_a_whatsapp_user(text: &str) -> bool {
    let text = text.to_lowercase();
    [
        "not a valid whatsapp",
        "not a whatsapp",
        "not a registered whatsapp",
        "not registered on whatsapp",
        "not on whatsapp",
        "isn't on whatsapp",
        "does not have whatsapp",
        "doesn't have whatsapp",
        "does not have a whatsapp",
        "doesn't have a whatsapp",
        "no whatsapp account",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Classifies a non-2xx answer from `POST /messages` (or any Graph call).
pub fn classify_failure(status: u16, body: &[u8], retry_after: Option<Duration>) -> Answer {
    let Some(error) = parse_graph_error(body) else {
        return Answer::failed(
            class_for_status(status, retry_after),
            status.to_string(),
            format!("HTTP {status}: {}", snippet(body)),
        );
    };
    let detail = error.detail();
    match error.code {
        Some(code) => Answer::failed(
            class_for_code(code, Some(status), &detail, retry_after),
            code.to_string(),
            detail,
        )
        .with_signal(signal_for_code(code)),
        None => Answer::failed(
            class_for_status(status, retry_after),
            status.to_string(),
            format!("HTTP {status}: {detail}"),
        ),
    }
}

/// The start of a body that isn't a Graph error (an HTML error page, a proxy's words).
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "empty body".to_string();
    }
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// `estimated_time_to_regain_access` (minutes) from the `x-business-use-case-usage` header
/// Graph sends with call-rate throttles (`{"<waba id>": [{"type": "whatsapp", ...,
/// "estimated_time_to_regain_access": 5}]}`); the longest wait named, if any is above zero.
pub fn parse_business_use_case_usage(value: &str) -> Option<Duration> {
    let usage: Value = serde_json::from_str(value).ok()?;
    usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access")?.as_u64())
        .filter(|minutes| *minutes > 0)
        .max()
        .map(|minutes| Duration::from_secs(minutes * 60))
}

/// `Retry-After` in seconds (the only form Graph and its proxies send).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: i64, status: u16) -> Class {
        class_for_code(code, Some(status), "", None)
    }

    /// Every WhatsApp code that the table above lists gets its class.
    #[test]
    fn every_listed_code_has_its_class() {
        for code in [1, 2, 131000, 131016, 133004, 131057] {
            assert_eq!(
                class(code, 400),
                Class::Transient { retry_after: None },
                "{code}"
            );
        }
        for code in [130429, 4, 80007, 133016] {
            assert_eq!(
                class(code, 400),
                Class::Throttled {
                    retry_after: None,
                    scope: ThrottleScope::Channel
                },
                "{code}"
            );
        }
        assert_eq!(
            class(131056, 400),
            Class::Throttled {
                retry_after: None,
                scope: ThrottleScope::Recipient
            }
        );
        for code in [131026, 131049, 130472, 131021, 130497] {
            assert_eq!(
                class(code, 400),
                Class::RecipientUnreachable { opt_out: None },
                "{code}"
            );
        }
        assert_eq!(
            class(131050, 400),
            Class::RecipientUnreachable {
                opt_out: Some(OptOut::StoppedMarketing)
            }
        );
        for code in [
            131047, 131051, 131053, 132001, 132015, 132016, 132068, 132069,
        ] {
            assert_eq!(class(code, 400), Class::Rejected, "{code}");
        }
        for code in [368, 131048] {
            assert_eq!(
                class(code, 403),
                Class::ChannelRestricted { retry_after: None },
                "{code}"
            );
        }
        for code in [131031, 131042, 133007, 1031] {
            assert_eq!(class(code, 403), Class::ChannelBanned, "{code}");
        }
        for code in [
            0, 3, 10, 33, 100, 190, 200, 250, 299, 131005, 131008, 131009, 131030, 131045, 131058,
            132000, 132005, 132007, 132012, 133010,
        ] {
            assert_eq!(class(code, 400), Class::ConfigError, "{code}");
        }
        // A config code stays a config code even behind a 5xx (code 3 was seen with 500).
        assert_eq!(class(3, 500), Class::ConfigError);
    }

    #[test]
    fn template_and_marketing_answers_carry_their_signal() {
        let answer = |code: u64| {
            classify_failure(
                400,
                format!(r#"{{"error":{{"message":"x","code":{code}}}}}"#).as_bytes(),
                None,
            )
        };
        let paused = answer(132015);
        assert_eq!(
            (paused.class, paused.signal),
            (Class::Rejected, Some(Signal::TemplatePaused))
        );
        for code in [132016, 132001] {
            let a = answer(code);
            assert_eq!(
                (a.class, a.signal),
                (Class::Rejected, Some(Signal::TemplateDisabled)),
                "{code}: the template's problem, not the channel's config"
            );
        }
        let held = answer(131049);
        assert_eq!(
            (held.class, held.signal),
            (
                Class::RecipientUnreachable { opt_out: None },
                Some(Signal::RecipientMarketingHeld)
            )
        );
        assert_eq!(answer(131050).signal, None);
        assert_eq!(answer(132000).class, Class::ConfigError);
    }

    #[test]
    fn unknown_codes_follow_the_http_status() {
        assert_eq!(class(999_999, 400), Class::Rejected);
        assert_eq!(class(999_999, 503), Class::Transient { retry_after: None });
        assert_eq!(
            class(999_999, 429),
            Class::Throttled {
                retry_after: None,
                scope: ThrottleScope::Channel
            }
        );
        assert_eq!(
            class_for_code(999_999, None, "", None),
            Class::Rejected,
            "a webhook error without a status"
        );
    }

    #[test]
    fn code_100_is_a_recipient_only_when_it_says_so() {
        let unreachable = Class::RecipientUnreachable { opt_out: None };
        assert_eq!(
            class_for_code(
                100,
                Some(400),
                "Recipient is not a valid WhatsApp user",
                None
            ),
            unreachable
        );
        assert_eq!(
            class_for_code(
                100,
                Some(400),
                "(#100) Invalid parameter: phone number is not on WhatsApp",
                None
            ),
            unreachable
        );
        assert_eq!(
            class_for_code(
                100,
                Some(400),
                "(#100) Invalid parameter: Unexpected key \"foo\" on param \"template\"",
                None
            ),
            Class::ConfigError
        );
    }

    #[test]
    fn retry_after_is_kept_where_it_means_something() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            class_for_code(130429, Some(429), "", after),
            Class::Throttled {
                retry_after: after,
                scope: ThrottleScope::Channel
            }
        );
        assert_eq!(
            class_for_code(368, Some(403), "", after),
            Class::ChannelRestricted { retry_after: after }
        );
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            parse_business_use_case_usage(
                r#"{"102290129340398":[{"type":"whatsapp","call_count":100,"total_cputime":3,"total_time":4,"estimated_time_to_regain_access":5},{"type":"management","estimated_time_to_regain_access":0}]}"#
            ),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_business_use_case_usage(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#),
            None
        );
        assert_eq!(parse_business_use_case_usage("garbage"), None);
    }

    #[test]
    fn bodies_that_are_not_graph_errors() {
        let a = classify_failure(502, b"<html><body>Bad Gateway</body></html>", None);
        assert_eq!(a.class, Class::Transient { retry_after: None });
        assert_eq!(a.code.as_deref(), Some("502"));
        assert!(a.detail.unwrap().contains("Bad Gateway"));

        let a = classify_failure(400, b"nope", None);
        assert_eq!(a.class, Class::Rejected);
        assert_eq!(a.code.as_deref(), Some("400"));

        let a = classify_failure(400, br#"{"error":{"message":"odd","code":"190"}}"#, None);
        assert_eq!(a.class, Class::ConfigError);
        assert_eq!(a.code.as_deref(), Some("190"));

        let a = classify_failure(404, br#"{"error":{"message":"no code"}}"#, None);
        assert_eq!(a.class, Class::Rejected);
        assert_eq!(a.detail.as_deref(), Some("HTTP 404: no code"));
    }
}
