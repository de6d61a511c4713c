//! Turns LINE's answer to a push into one [`Answer`].
//!
//! LINE has no machine-readable error codes: the class comes from the HTTP status plus the
//! `message` of the `ErrorResponse` body (and, for 400s, the `details[].property` paths). The
//! answer's `code` is always the HTTP status as text; its `detail` is LINE's `message` followed by
//! each `details[]` entry as `property: message`.
//!
//! | LINE answer | class | why |
//! |---|---|---|
//! | 200 `{"sentMessages":[{"id":..}]}` | `sent` (id = `sentMessages[0].id`) | accepted |
//! | 409 `The retry key is already accepted` | `sent` (id from `sentMessages`, else the `x-line-accepted-request-id` header) | an earlier attempt with the same `X-Line-Retry-Key` already delivered it |
//! | 5xx, timeout, refused / reset connection | `transient` | retry with the same retry key |
//! | 429 `You have reached your monthly limit.` | `channel_restricted`, `retry_after` = until the next month starts in Japan (UTC+9) | the free/target message quota resets monthly |
//! | 429 anything else (`The API rate limit has been exceeded. Try again later.`, concurrency limit) | `throttled`, scope channel, `retry_after` = `Retry-After` header or 1 s | LINE sends no `Retry-After`; its limits are per second |
//! | 400 `Failed to send messages` | `recipient_unreachable` | user id doesn't exist or isn't a friend |
//! | 404 | `recipient_unreachable` | no such user / not a friend / blocked |
//! | 400 `The request body has N error(s)` or `The property, X, in the request body is invalid`, every property inside `messages[..]` | `rejected` | this message's content (e.g. text over 5000 characters) |
//! | the same, every property is `to` | `recipient_unreachable` | this contact's LINE id is malformed; the channel is fine |
//! | the same, any other property or none; `could not be parsed as JSON`; 400 naming the retry key | `config_error` | the request we build is wrong: an admin must look |
//! | 401 `Authentication failed ...` | `config_error` | token wrong, expired or revoked |
//! | 403 (`Access to this API is not available for your account`) | `channel_banned` | plan or account not entitled: until an admin fixes it |
//! | 413, 415 | `rejected` | this message is too large / not acceptable |
//! | 409 without the retry-key message, 410, any other 4xx | `rejected` | unknown: fall over for this notification only |
//! | any other 5xx | `transient` | |
//!
//! A push to a user who blocked the account answers 200 and is silently not delivered; the
//! `unfollow` webhook is the only signal for that, and it is handled outside this crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifeboat_channel::{Answer, Class, ThrottleScope};

use crate::request::{ErrorResponse, PushMessageResponse};

/// How long to pause the channel after a rate-limit 429 that names no `Retry-After`. LINE's
/// limits are counted per second (2,000 requests/s for push), so a second is enough.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

/// Longest `detail` kept from a provider answer.
const MAX_DETAIL: usize = 1000;

/// Japan Standard Time is UTC+9 all year (no daylight saving).
const JST_OFFSET_SECS: i64 = 9 * 3600;

/// The parts of an HTTP answer that classification looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpReply<'a> {
    pub status: u16,
    /// `Retry-After` in seconds, if LINE (or a proxy in front of it) sent one.
    pub retry_after: Option<Duration>,
    /// `x-line-accepted-request-id` (set on a 409).
    pub accepted_request_id: Option<&'a str>,
    /// `x-line-request-id` (set on every answer).
    pub request_id: Option<&'a str>,
    pub body: &'a str,
}

/// Classifies LINE's answer to a push. `now` is used for the monthly-limit reset time.
pub fn classify_push(reply: &HttpReply<'_>, now: SystemTime) -> Answer {
    let status = reply.status;
    let code = status.to_string();

    if (200..300).contains(&status) {
        return match serde_json::from_str::<PushMessageResponse>(reply.body) {
            Ok(ok) if !ok.sent_messages.is_empty() => Answer::sent(ok.sent_messages[0].id.clone()),
            // Accepted all the same: a retry would only be answered 409. Keep what we have.
            _ => Answer {
                class: Class::Sent,
                code: Some(code),
                detail: Some(format!(
                    "accepted, but the body had no sentMessages: {}",
                    snippet(reply.body)
                )),
                message_id: reply.request_id.map(str::to_string),
                signal: None,
            },
        };
    }

    let error: Option<ErrorResponse> = serde_json::from_str(reply.body).ok();
    let detail = match &error {
        Some(e) => describe(e),
        None if reply.body.trim().is_empty() => format!("HTTP {status} with an empty body"),
        None => snippet(reply.body),
    };
    let message = error
        .as_ref()
        .map(|e| e.message.to_ascii_lowercase())
        .unwrap_or_default();

    let class = match status {
        409 => {
            let e = error.clone().unwrap_or_default();
            let id = e
                .sent_messages
                .first()
                .map(|m| m.id.clone())
                .or_else(|| reply.accepted_request_id.map(str::to_string));
            if message.contains("retry key is already accepted") || !e.sent_messages.is_empty() {
                return Answer {
                    class: Class::Sent,
                    code: Some(code),
                    detail: Some(format!("{detail} (delivered by an earlier attempt)")),
                    message_id: id,
                    signal: None,
                };
            }
            Class::Rejected
        }
        429 if message.contains("monthly limit") => Class::ChannelRestricted {
            retry_after: Some(until_next_month_jst(now)),
        },
        429 => Class::Throttled {
            retry_after: Some(reply.retry_after.unwrap_or(DEFAULT_THROTTLE)),
            scope: ThrottleScope::Channel,
        },
        400 => classify_400(&message, error.as_ref()),
        401 => Class::ConfigError,
        403 => Class::ChannelBanned,
        404 => Class::RecipientUnreachable { opt_out: None },
        413 | 415 => Class::Rejected,
        500..=599 => Class::Transient {
            retry_after: reply.retry_after,
        },
        _ => Class::Rejected,
    };
    Answer::failed(class, code, detail)
}

fn classify_400(message: &str, error: Option<&ErrorResponse>) -> Class {
    if message.contains("failed to send messages") {
        return Class::RecipientUnreachable { opt_out: None };
    }
    if message.contains("retry key") {
        // X-Line-Retry-Key on an endpoint that doesn't take it, or a malformed key.
        return Class::ConfigError;
    }
    let mut properties: Vec<String> = error
        .map(|e| {
            e.details
                .iter()
                .filter_map(|d| d.property.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(p) = property_in_message(message) {
        properties.push(p);
    }
    if !properties.is_empty() {
        if properties.iter().all(|p| inside_messages(p)) {
            return Class::Rejected;
        }
        if properties.iter().all(|p| p == "to") {
            return Class::RecipientUnreachable { opt_out: None };
        }
    }
    // `The request body has N error(s)` about other properties, JSON that didn't parse, or a
    // 400 we don't know: the request itself is wrong for this account.
    Class::ConfigError
}

/// `The property, XXX, in the request body is invalid (line: 1, column: 2)` → `XXX`.
fn property_in_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("the property, ")?;
    let end = rest.find(", in the request body")?;
    let p = rest[..end]
        .trim()
        .trim_matches(|c| c == '\'' || c == '"' || c == '`');
    (!p.is_empty()).then(|| p.to_string())
}

/// Whether a `details[].property` path points into the content of a message
/// (`messages[0].text`), as opposed to the request's envelope (`to`, `messages` itself).
fn inside_messages(property: &str) -> bool {
    property.starts_with("messages[") || property.starts_with("messages.")
}

/// `message` plus each `details[]` entry as `property: message`.
fn describe(e: &ErrorResponse) -> String {
    let mut out = e.message.clone();
    let details: Vec<String> = e
        .details
        .iter()
        .map(|d| match (&d.property, &d.message) {
            (Some(p), Some(m)) => format!("{p}: {m}"),
            (Some(p), None) => p.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    if !details.is_empty() {
        out.push_str(" (");
        out.push_str(&details.join("; "));
        out.push(')');
    }
    truncate(out)
}

/// A non-JSON body (a proxy's HTML page), whitespace collapsed and cut short.
fn snippet(body: &str) -> String {
    truncate(body.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Time from `now` until 00:00 on the 1st of the next month in Japan (UTC+9), when LINE's
/// monthly message quota starts over.
pub fn until_next_month_jst(now: SystemTime) -> Duration {
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let local_days = (now_secs + JST_OFFSET_SECS).div_euclid(86_400);
    let (year, month, _) = civil_from_days(local_days);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let reset_secs = days_from_civil(next_year, next_month, 1) * 86_400 - JST_OFFSET_SECS;
    Duration::from_secs((reset_secs - now_secs).max(0) as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of a UTC date and time.
    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    }

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn wait_from(now: i64) -> i64 {
        until_next_month_jst(at(now)).as_secs() as i64
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-1, 0, 59, 11_016, 19_782, 20_000, 40_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        // 2026-05-15T00:00:00Z is 1778803200.
        assert_eq!(utc(2026, 5, 15, 0, 0, 0), 1_778_803_200);
    }

    #[test]
    fn monthly_reset_is_midnight_of_the_1st_in_japan() {
        // Mid-month: 2026-05-15 00:00Z → 2026-06-01 00:00 JST = 2026-05-31 15:00Z.
        let now = utc(2026, 5, 15, 0, 0, 0);
        assert_eq!(now + wait_from(now), utc(2026, 5, 31, 15, 0, 0));

        // Still May 31 in Japan (23:59:59 JST): one second left.
        let now = utc(2026, 5, 31, 14, 59, 59);
        assert_eq!(wait_from(now), 1);

        // It is already June 1 in Japan, though still May 31 in UTC: the next reset is July 1 JST.
        let now = utc(2026, 5, 31, 15, 0, 0);
        assert_eq!(now + wait_from(now), utc(2026, 6, 30, 15, 0, 0));

        // December rolls over into January of the next year.
        let now = utc(2026, 12, 20, 12, 0, 0);
        assert_eq!(now + wait_from(now), utc(2026, 12, 31, 15, 0, 0));

        // February of a leap year.
        let now = utc(2028, 2, 10, 0, 0, 0);
        assert_eq!(now + wait_from(now), utc(2028, 2, 29, 15, 0, 0));
        // ... and of a common year.
        let now = utc(2027, 2, 10, 0, 0, 0);
        assert_eq!(now + wait_from(now), utc(2027, 2, 28, 15, 0, 0));
    }

    fn reply(status: u16, body: &str) -> HttpReply<'_> {
        HttpReply {
            status,
            body,
            ..HttpReply::default()
        }
    }

    fn class_of(status: u16, body: &str) -> Class {
        classify_push(&reply(status, body), SystemTime::now()).class
    }

    #[test]
    fn detail_keeps_message_and_details() {
        let a = classify_push(
            &reply(
                400,
                r#"{"message":"The request body has 1 error(s)","details":[{"message":"Length must be between 0 and 5000","property":"messages[0].text"}]}"#,
            ),
            SystemTime::now(),
        );
        assert_eq!(a.class, Class::Rejected);
        assert_eq!(a.code.as_deref(), Some("400"));
        assert_eq!(
            a.detail.as_deref(),
            Some("The request body has 1 error(s) (messages[0].text: Length must be between 0 and 5000)")
        );
    }

    #[test]
    fn request_body_errors() {
        let body_err = |props: &[&str]| {
            let details: Vec<String> = props
                .iter()
                .map(|p| format!(r#"{{"message":"invalid","property":"{p}"}}"#))
                .collect();
            format!(
                r#"{{"message":"The request body has {} error(s)","details":[{}]}}"#,
                props.len(),
                details.join(",")
            )
        };
        assert_eq!(
            class_of(400, &body_err(&["messages[0].text"])),
            Class::Rejected
        );
        assert_eq!(
            class_of(
                400,
                &body_err(&["messages[0].text", "messages[0].emojis[0].index"])
            ),
            Class::Rejected
        );
        assert_eq!(
            class_of(
                400,
                &body_err(&["messages[0].text", "notificationDisabled"])
            ),
            Class::ConfigError
        );
        assert_eq!(class_of(400, &body_err(&["messages"])), Class::ConfigError);
        assert_eq!(class_of(400, &body_err(&[])), Class::ConfigError);
        assert_eq!(
            class_of(400, &body_err(&["to"])),
            Class::RecipientUnreachable { opt_out: None }
        );
        assert_eq!(
            class_of(
                400,
                r#"{"message":"The property, 'to', in the request body is invalid (line: -, column: -)"}"#
            ),
            Class::RecipientUnreachable { opt_out: None }
        );
        assert_eq!(
            class_of(
                400,
                r#"{"message":"The property, messages[0].type, in the request body is invalid (line: 1, column: 40)"}"#
            ),
            Class::Rejected
        );
        assert_eq!(
            class_of(
                400,
                r#"{"message":"The request body could not be parsed as JSON (line: 1, column: 2)"}"#
            ),
            Class::ConfigError
        );
        assert_eq!(
            class_of(
                400,
                r#"{"message":"The retry key is not supported for this API"}"#
            ),
            Class::ConfigError
        );
    }

    #[test]
    fn other_statuses() {
        assert_eq!(class_of(410, r#"{"message":"Gone"}"#), Class::Rejected);
        assert_eq!(class_of(409, r#"{"message":"Conflict"}"#), Class::Rejected);
        assert_eq!(
            class_of(502, "<html>Bad Gateway</html>"),
            Class::Transient { retry_after: None }
        );
        assert_eq!(class_of(418, ""), Class::Rejected);
        let a = classify_push(&reply(503, ""), SystemTime::now());
        assert_eq!(a.detail.as_deref(), Some("HTTP 503 with an empty body"));
    }

    #[test]
    fn ok_without_sent_messages_is_still_sent() {
        let r = HttpReply {
            status: 200,
            body: "{}",
            request_id: Some("req-1"),
            ..HttpReply::default()
        };
        let a = classify_push(&r, SystemTime::now());
        assert_eq!(a.class, Class::Sent);
        assert_eq!(a.message_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn long_details_are_cut() {
        let long = "x".repeat(5000);
        let a = classify_push(&reply(500, &long), SystemTime::now());
        assert!(a.detail.unwrap().len() <= MAX_DETAIL + 3);
    }
}
