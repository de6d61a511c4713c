//! Turns teloxide's [`RequestError`] into Lifeboat's [`Answer`] (sends) and [`Health`] (`getMe`).
//!
//! # Classification table
//!
//! teloxide parses Telegram's error answer `{"ok":false,"error_code":N,"description":"...",
//! "parameters":{...}}` from the **description text** (it drops `error_code` and the HTTP
//! status); `parameters` wins over the description. This module maps the result:
//!
//! | teloxide error | Telegram answer | class | `code` |
//! |---|---|---|---|
//! | `RetryAfter(n)` | 429 `Too Many Requests: retry after n` + `parameters.retry_after` | `Throttled { retry_after: n, scope: Channel }` | `retry_after` |
//! | `Unknown("Too Many Requests: retry after n")` (no `parameters`) | 429 | `Throttled { n, Channel }` | `too_many_requests` |
//! | `Network` (connect refused, reset, DNS, TLS, reqwest timeout) | — | `Transient` | `network` / `timeout` |
//! | `Io` | — | `Transient` | `io` |
//! | `InvalidJson` (HTML 502 page, empty body, proxy error page) | any | `Transient` | `invalid_json` |
//! | our own `tokio::time::timeout` elapsed | — | `Transient` (see [`Answer::timeout`]) | `timeout` |
//! | `MigrateToChatId(id)` | 400 + `parameters.migrate_to_chat_id` | `RecipientUnreachable { opt_out: None }` (detail names the new id) | `migrate_to_chat_id` |
//! | `Api(BotBlocked)` | 403 `Forbidden: bot was blocked by the user` | `RecipientUnreachable { opt_out: Some(Blocked) }` | `bot_blocked` |
//! | `Api(UserDeactivated)`, `ChatNotFound`, `UserNotFound`, `BotKicked`, `BotKickedFromSupergroup`, `BotKickedFromChannel`, `CantInitiateConversation`, `CantTalkWithBots`, `GroupDeactivated`, `NotEnoughRightsToPostMessages` | 403 / 400 | `RecipientUnreachable { opt_out: None }` | the variant: `user_deactivated`, `chat_not_found`, ... |
//! | `Unknown` starting with `Forbidden: bot can't initiate conversation`, `Forbidden: bot was kicked`, `Forbidden: bot can't send messages to bots`, `Forbidden: bot is not a member`, `Forbidden: the group chat was deleted`, `Bad Request: PEER_ID_INVALID` | 403 / 400 | `RecipientUnreachable { opt_out: None }` | `forbidden` / `bad_request` |
//! | `Api(InvalidToken)` | 401 `Unauthorized` / 404 `Not Found` | `ConfigError` | `invalid_token` |
//! | `Api(MessageIsTooLong)`, `MessageTextIsEmpty`, `CantParseEntities(_)` | 400 | `Rejected` | `message_is_too_long`, `message_text_is_empty`, `cant_parse_entities` |
//! | `Unknown` that looks like a server error (`Internal Server Error`, `Bad Gateway`, `Service Unavailable`, `Gateway Timeout`) | 5xx | `Transient` | `internal_server_error`, `bad_gateway`, ... |
//! | any other `Unknown` or `Api` variant | 4xx | `Rejected` | the variant, or the description's status words (`bad_request`), else `unknown` |
//!
//! `code` is always a short stable slug for dashboards and alerts; `detail` keeps Telegram's
//! sentence.
//!
//! **There is no bot-ban signal in the Bot API**: a bot that Telegram deletes or whose token is
//! revoked answers 401 `Unauthorized`, which is `ConfigError` (out of rotation until an admin
//! acts) — the nearest thing to `ChannelBanned`. Nothing here returns `ChannelRestricted` or
//! `ChannelBanned`; persistent large `retry_after` values are the dispatcher's call.
//!
//! **5xx**: teloxide sleeps 10 s after any 5xx reply before it reads the body, and then only
//! sees the body: a JSON error becomes `Unknown(description)`, an HTML page `InvalidJson`. The
//! status code itself is lost. We never wait for that: every call runs under the channel's own
//! timeout, so with the default 10 s timeout a 5xx normally ends as `timeout`
//! (`Transient`); with a longer timeout the description rules above still make it
//! `Transient`. Either way the class is right; only the provider's words may be lost.
//!
//! **Token**: reqwest's errors print the request URL, which holds the bot token. teloxide
//! already rewrites it (`/bottoken:redacted/SendMessage` for a BotFather-shaped token with a
//! 35+ character secret, otherwise it drops the URL), and every `code` and `detail` built here
//! also passes through [`scrub`], so a token that slips past teloxide (or that Telegram echoes
//! in a description) is masked as `***`.

use std::time::Duration;

use lifeboat_channel::{error_chain, redact, Answer, Class, Health, OptOut, ThrottleScope};
use teloxide::{ApiError, RequestError};

/// Descriptions of a Bot API (or proxy) server failure: retry, don't fall over for good.
const SERVER_ERRORS: [&str; 4] = [
    "internal server error",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
];

/// `Unknown` descriptions that mean "this recipient can't be reached by this bot".
const UNREACHABLE_PREFIXES: [&str; 6] = [
    "Forbidden: bot can't initiate conversation",
    "Forbidden: bot was kicked",
    "Forbidden: bot can't send messages to bots",
    "Forbidden: bot is not a member",
    "Forbidden: the group chat was deleted",
    "Bad Request: PEER_ID_INVALID",
];

/// Classifies a failed `sendMessage`. `token` is the bot token, removed from every text.
pub fn classify(error: &RequestError, token: &str) -> Answer {
    match error {
        RequestError::RetryAfter(secs) => Answer::failed(
            Class::Throttled {
                retry_after: Some(secs.duration()),
                scope: ThrottleScope::Channel,
            },
            "retry_after",
            format!("Too Many Requests: retry after {}", secs.seconds()),
        ),
        RequestError::MigrateToChatId(id) => Answer::failed(
            Class::RecipientUnreachable { opt_out: None },
            "migrate_to_chat_id",
            format!(
                "the group was migrated to a supergroup; its new chat id is {}",
                id.0
            ),
        ),
        RequestError::Network(e) => {
            let code = if e.is_timeout() { "timeout" } else { "network" };
            Answer::failed(transient(), code, scrub(&error_chain(&**e), token))
        }
        RequestError::Io(e) => Answer::failed(transient(), "io", scrub(&error_chain(&**e), token)),
        RequestError::InvalidJson { raw, .. } => Answer::failed(
            transient(),
            "invalid_json",
            scrub(&invalid_json_detail(raw), token),
        ),
        RequestError::Api(api) => classify_api(api, token),
    }
}

fn classify_api(api: &ApiError, token: &str) -> Answer {
    let description = description(api);
    let class = match api {
        ApiError::BotBlocked => Class::RecipientUnreachable {
            opt_out: Some(OptOut::Blocked),
        },
        ApiError::UserDeactivated
        | ApiError::ChatNotFound
        | ApiError::UserNotFound
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel
        | ApiError::CantInitiateConversation
        | ApiError::CantTalkWithBots
        | ApiError::GroupDeactivated
        | ApiError::NotEnoughRightsToPostMessages => Class::RecipientUnreachable { opt_out: None },
        ApiError::InvalidToken => Class::ConfigError,
        ApiError::MessageIsTooLong
        | ApiError::MessageTextIsEmpty
        | ApiError::CantParseEntities(_) => Class::Rejected,
        ApiError::Unknown(text) => classify_unknown(text),
        _ => Class::Rejected,
    };
    Answer::failed(
        class,
        api_code(api, &description),
        scrub(&description, token),
    )
}

/// A short, stable `code` for an API error (the sentence stays in `detail`): the teloxide
/// variant in snake case (`bot_blocked`, `chat_not_found`, `invalid_token`, ...), or, for a
/// description teloxide does not know, the status words it starts with (`bad_request`,
/// `forbidden`, `too_many_requests`, `internal_server_error`, ...); `unknown` otherwise.
pub fn api_code(api: &ApiError, description: &str) -> String {
    if !matches!(api, ApiError::Unknown(_)) {
        let debug = format!("{api:?}");
        let variant: String = debug
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        return snake_case(&variant);
    }
    let words = description.split(':').next().unwrap_or("").trim();
    if !words.is_empty()
        && words.split(' ').count() <= 4
        && words.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
    {
        words.to_ascii_lowercase().replace(' ', "_")
    } else {
        "unknown".to_string()
    }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn classify_unknown(text: &str) -> Class {
    if let Some(secs) = retry_after_in_text(text) {
        return Class::Throttled {
            retry_after: Some(Duration::from_secs(secs)),
            scope: ThrottleScope::Channel,
        };
    }
    if looks_like_server_error(text) {
        return transient();
    }
    if UNREACHABLE_PREFIXES.iter().any(|p| text.starts_with(p)) {
        return Class::RecipientUnreachable { opt_out: None };
    }
    Class::Rejected
}

/// The health of the bot from a failed `getMe`.
pub fn health(error: &RequestError, token: &str) -> Health {
    match error {
        RequestError::Api(ApiError::InvalidToken) => {
            Health::ConfigError("Telegram rejected the bot token (Unauthorized / Not Found)".into())
        }
        other => {
            let answer = classify(other, token);
            let code = answer.code.unwrap_or_default();
            let detail = answer.detail.unwrap_or_default();
            if code == detail {
                Health::Unreachable(detail)
            } else {
                Health::Unreachable(format!("{code}: {detail}"))
            }
        }
    }
}

/// Telegram's own words for an API error, as close to what it sent as teloxide lets us get.
fn description(api: &ApiError) -> String {
    match api {
        ApiError::Unknown(text) | ApiError::CantParseEntities(text) => text.clone(),
        ApiError::InvalidToken => "Unauthorized".to_string(),
        // Every other variant displays the exact description it was matched from.
        other => other.to_string(),
    }
}

/// Removes the bot token (plain, percent-encoded, and its secret half) from `text`.
pub fn scrub(text: &str, token: &str) -> String {
    let mut out = redact(text, token);
    let encoded = token.replace(':', "%3A");
    if encoded != token {
        out = redact(&out, &encoded);
        out = redact(&out, &token.replace(':', "%3a"));
    }
    if let Some((_, secret)) = token.split_once(':') {
        // The half after the colon is the actual secret; the bot id before it is public.
        if secret.len() >= 8 {
            out = redact(&out, secret);
        }
    }
    out
}

fn transient() -> Class {
    Class::Transient { retry_after: None }
}

fn looks_like_server_error(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    SERVER_ERRORS.iter().any(|s| lower.contains(s))
}

/// `Too Many Requests: retry after 7` without `parameters` (teloxide then gives `Unknown`).
fn retry_after_in_text(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("Too Many Requests: retry after ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
}

fn invalid_json_detail(raw: &str) -> String {
    if raw.trim().is_empty() {
        return "empty or non-JSON answer from the Bot API".to_string();
    }
    format!("non-JSON answer from the Bot API: {}", short(raw.trim()))
}

/// At most 200 characters, on a char boundary.
fn short(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use teloxide::types::{ChatId, Seconds};

    use super::*;

    const TOKEN: &str = "123456:AAE-secret_token-value";

    fn class(e: RequestError) -> Class {
        classify(&e, TOKEN).class
    }

    fn unknown(text: &str) -> RequestError {
        RequestError::Api(ApiError::Unknown(text.into()))
    }

    #[test]
    fn throttles_and_migrations() {
        assert_eq!(
            class(RequestError::RetryAfter(Seconds::from_seconds(7))),
            Class::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                scope: ThrottleScope::Channel
            }
        );
        assert_eq!(
            class(unknown("Too Many Requests: retry after 12")),
            Class::Throttled {
                retry_after: Some(Duration::from_secs(12)),
                scope: ThrottleScope::Channel
            }
        );
        let a = classify(&RequestError::MigrateToChatId(ChatId(-100123)), TOKEN);
        assert_eq!(a.class, Class::RecipientUnreachable { opt_out: None });
        assert!(a.detail.unwrap().contains("-100123"));
    }

    #[test]
    fn recipient_errors() {
        assert_eq!(
            class(RequestError::Api(ApiError::BotBlocked)),
            Class::RecipientUnreachable {
                opt_out: Some(OptOut::Blocked)
            }
        );
        for e in [
            ApiError::UserDeactivated,
            ApiError::ChatNotFound,
            ApiError::UserNotFound,
            ApiError::BotKicked,
            ApiError::BotKickedFromChannel,
            ApiError::BotKickedFromSupergroup,
            ApiError::CantInitiateConversation,
            ApiError::CantTalkWithBots,
            ApiError::GroupDeactivated,
        ] {
            assert_eq!(
                class(RequestError::Api(e.clone())),
                Class::RecipientUnreachable { opt_out: None },
                "{e:?}"
            );
        }
        for text in [
            "Forbidden: bot can't initiate conversation with a user",
            "Forbidden: bot was kicked from the group chat",
        ] {
            assert_eq!(
                class(unknown(text)),
                Class::RecipientUnreachable { opt_out: None },
                "{text}"
            );
        }
    }

    #[test]
    fn config_and_content_errors() {
        let a = classify(&RequestError::Api(ApiError::InvalidToken), TOKEN);
        assert_eq!(a.class, Class::ConfigError);
        assert_eq!(a.code.as_deref(), Some("invalid_token"));
        assert_eq!(a.detail.as_deref(), Some("Unauthorized"));
        for e in [
            ApiError::MessageIsTooLong,
            ApiError::MessageTextIsEmpty,
            ApiError::CantParseEntities("Bad Request: can't parse entities: x at 3".into()),
        ] {
            assert_eq!(
                class(RequestError::Api(e.clone())),
                Class::Rejected,
                "{e:?}"
            );
        }
        let a = classify(&RequestError::Api(ApiError::MessageIsTooLong), TOKEN);
        assert_eq!(
            a.detail.as_deref(),
            Some("Bad Request: message is too long")
        );
        assert_eq!(
            class(unknown("Bad Request: something new")),
            Class::Rejected
        );
    }

    #[test]
    fn codes_are_short_stable_slugs_and_the_sentence_stays_in_detail() {
        let cases: [(RequestError, &str, &str); 8] = [
            (
                RequestError::Api(ApiError::BotBlocked),
                "bot_blocked",
                "Forbidden: bot was blocked by the user",
            ),
            (
                RequestError::Api(ApiError::UserDeactivated),
                "user_deactivated",
                "Forbidden: user is deactivated",
            ),
            (
                RequestError::Api(ApiError::ChatNotFound),
                "chat_not_found",
                "Bad Request: chat not found",
            ),
            (
                RequestError::Api(ApiError::CantParseEntities(
                    "Bad Request: can't parse entities: x at 3".into(),
                )),
                "cant_parse_entities",
                "Bad Request: can't parse entities: x at 3",
            ),
            (
                unknown("Internal Server Error"),
                "internal_server_error",
                "Internal Server Error",
            ),
            (
                unknown("Too Many Requests: retry after 12"),
                "too_many_requests",
                "Too Many Requests: retry after 12",
            ),
            (
                unknown("Forbidden: bot was kicked from the group chat"),
                "forbidden",
                "Forbidden: bot was kicked from the group chat",
            ),
            (
                unknown("something odd happened here today"),
                "unknown",
                "something odd happened here today",
            ),
        ];
        for (error, code, detail) in cases {
            let a = classify(&error, TOKEN);
            assert_eq!(a.code.as_deref(), Some(code), "{error:?}");
            assert_eq!(a.detail.as_deref(), Some(detail), "{error:?}");
            assert_ne!(a.code, a.detail, "the code is not the sentence again");
        }
    }

    #[test]
    fn server_errors_are_transient() {
        for text in [
            "Internal Server Error",
            "Bad Gateway",
            "Service Unavailable",
            "Gateway Timeout",
            "Internal Server Error: restart",
        ] {
            assert_eq!(class(unknown(text)), transient(), "{text}");
        }
        let json_err = serde_json::from_str::<serde_json::Value>("<html>").unwrap_err();
        let a = classify(
            &RequestError::InvalidJson {
                source: Arc::new(json_err),
                raw: "<html><body>502 Bad Gateway</body></html>".into(),
            },
            TOKEN,
        );
        assert_eq!(a.class, transient());
        assert_eq!(a.code.as_deref(), Some("invalid_json"));
        let io = RequestError::Io(Arc::new(std::io::Error::other("disk")));
        assert_eq!(class(io), transient());
    }

    #[test]
    fn scrub_removes_every_form_of_the_token() {
        let text = format!(
            "a {TOKEN} b {} c {}",
            TOKEN.replace(':', "%3A"),
            "AAE-secret_token-value"
        );
        let out = scrub(&text, TOKEN);
        assert!(!out.contains("AAE-secret_token-value"), "{out}");
        assert_eq!(
            classify(&unknown(&format!("Bad Request: bot{TOKEN}")), TOKEN)
                .detail
                .unwrap(),
            "Bad Request: bot***"
        );
    }

    #[test]
    fn health_mapping() {
        assert!(matches!(
            health(&RequestError::Api(ApiError::InvalidToken), TOKEN),
            Health::ConfigError(_)
        ));
        assert!(matches!(
            health(&unknown("Internal Server Error"), TOKEN),
            Health::Unreachable(_)
        ));
    }
}
