//! Request extractors that answer in the API's error shape: a JSON body (415 for another
//! content type, 413 past the body limit, 400 for broken JSON, 422 naming the member for a
//! well-formed body with a wrong member) and the path and query parameters.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid_json(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, telling broken JSON (400) from a wrong member (422 with the member's path).
///
/// The body must be one JSON object and nothing after it: serde would take an array as the
/// object's members in order, and stop reading after the first value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b) if *b != b'{') {
        return Err(ApiError::invalid_json(
            "the body must be a JSON object ({...})",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(value) => {
            return match de.end() {
                Ok(()) => Ok(value),
                Err(e) => Err(ApiError::invalid_json(format!(
                    "the body must hold one JSON object and nothing after it ({e})"
                ))),
            };
        }
        Err(err) => err,
    };
    // Broken JSON first (even after a wrong member), then what is wrong with a member.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::invalid_json(e.to_string()));
    }
    let err = if err.inner().classify() == serde_json::error::Category::Data {
        err
    } else {
        // serde_json reports some wrong types as syntax (a number where an enum's string is
        // expected: "expected value"). The body is well-formed, so it is a wrong member: read
        // it again from the parsed value, which names it.
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(value) => value,
            Err(e) => return Err(ApiError::invalid_json(e.to_string())),
        };
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(value) => return Ok(value),
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." { String::new() } else { path };
                return Err(ApiError::validation(field, err.into_inner().to_string()));
            }
        }
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let field = if path == "." { String::new() } else { path };
    let message = strip_position(&inner.to_string());
    if field.is_empty() {
        // A missing member: serde names it in the message.
        let named = missing_field(&message).unwrap_or_default();
        Err(ApiError::validation(named, message))
    } else {
        Err(ApiError::validation(field, message))
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Query parameters parsed into `T`; a bad one is a 422 naming it.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rejection) => Err(ApiError::validation("query", rejection.body_text())),
        }
    }
}

/// A page size from the query string: `default` when absent, otherwise a number from 1 to
/// `max` (422 naming `limit` for anything else).
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::validation(
                "limit",
                format!("must be a number from 1 to {max}"),
            )),
        },
    }
}

/// Whether `text` is a UUID in its canonical hyphenated lower-case form (the ids and cursors
/// the API hands out): anything else would silently page from an arbitrary place.
pub fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|u| u.hyphenated().to_string() == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn tells_broken_json_from_wrong_members() {
        assert_eq!(
            parse_json::<Body>(b"{\"name\": ").unwrap_err().code,
            "invalid_json"
        );
        let e = parse_json::<Body>(br#"{"name": "a", "count": "x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("validation_failed", Some("count"))
        );
        let e = parse_json::<Body>(br#"{"count": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_json::<Body>(br#"{"name": "a", "colour": 1}"#).unwrap_err();
        assert_eq!(e.code, "validation_failed");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct WithEnum {
        status: Status,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Status {
        Granted,
    }

    #[test]
    fn one_object_and_nothing_after_it() {
        for body in [
            &br#"{"name": "a"} trailing"#[..],
            br#"{"name": "a"}{"name": "b"}"#,
            br#"{"name": "a"}]]]"#,
            br#"["a", 1]"#,
            b"  [\"a\"]",
        ] {
            let e = parse_json::<Body>(body).unwrap_err();
            assert_eq!(e.code, "invalid_json", "{}", String::from_utf8_lossy(body));
        }
        assert!(parse_json::<Body>(b" {\"name\": \"a\"}\n ").is_ok());
    }

    #[test]
    fn a_number_for_an_enum_names_the_member() {
        let e = parse_json::<WithEnum>(br#"{"status": 5}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("validation_failed", Some("status"))
        );
        assert!(parse_json::<WithEnum>(br#"{"status": "granted"}"#).is_ok());
    }
}
