//! Ids and addresses, parsed once where they come in (the HTTP edge) so that code past it
//! holds a value that is known to be well formed: "parse, don't validate".
//!
//! Each type is a `String` underneath and (de)serialises as that plain string, so JSON
//! bodies and stored records look exactly as before; deserialising runs the check, so a
//! request member with a bad value is a 422 `validation_failed` naming the member (the
//! extractor in `api/extract.rs` puts the serde path in `field`). The error message is fit
//! for that answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value is not a valid id or address: a message fit for a 422 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(value: String) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map_err(InvalidValue)?;
                Ok($name(value))
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(value: &str) -> Result<Self, InvalidValue> {
                $name::try_from(value.to_string())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A contact's id: 1–128 of `A-Za-z0-9._:@-`.
    ContactId,
    |v| id(v).map_err(|m| format!("contact id {m}"))
);

string_newtype!(
    /// A notification's id as a client sends it back (path parameter): same alphabet as
    /// contact ids.
    NotificationId,
    |v| id(v).map_err(|m| format!("notification id {m}"))
);

string_newtype!(
    /// A phone number in E.164 (the WhatsApp address): `+`, a non-zero digit, up to 15
    /// digits in all.
    E164,
    e164
);

string_newtype!(
    /// A Telegram chat id (a signed integer) or a public `@channelusername`.
    TelegramChat,
    telegram_chat
);

string_newtype!(
    /// An email address as SMTP will take it (`local@domain`).
    EmailAddress,
    email
);

string_newtype!(
    /// A LINE user id: `U` and 32 lowercase hex digits.
    LineUserId,
    line_user
);

string_newtype!(
    /// An IANA time zone name, e.g. `Europe/Warsaw`.
    TimeZoneName,
    timezone
);

string_newtype!(
    /// A locale tag like `en-US`: 1–35 of `A-Za-z0-9-_`.
    Locale,
    locale
);

fn id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err(format!(
            "must be 1–128 characters long, got {}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')))
    {
        return Err(format!(
            "may only hold A-Z, a-z, 0-9 and . _ : @ - (found {c:?})"
        ));
    }
    Ok(())
}

fn e164(value: &str) -> Result<(), String> {
    let digits = value
        .strip_prefix('+')
        .ok_or_else(|| format!("`{value}` is not an E.164 number: it must start with +"))?;
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not an E.164 number (+ then 2 to 15 digits, e.g. +48600100200)"
        ))
    }
}

fn email(value: &str) -> Result<(), String> {
    value
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("`{value}` is not an email address ({e})"))
}

fn telegram_chat(value: &str) -> Result<(), String> {
    if value.parse::<i64>().is_ok() {
        return Ok(());
    }
    if let Some(name) = value.strip_prefix('@') {
        if (5..=32).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Ok(());
        }
    }
    Err(format!(
        "`{value}` is not a Telegram chat id (an integer) or @channelusername"
    ))
}

fn line_user(value: &str) -> Result<(), String> {
    let ok = value.len() == 33
        && value.starts_with('U')
        && value[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a LINE user id (U followed by 32 hex digits)"
        ))
    }
}

fn timezone(value: &str) -> Result<(), String> {
    value
        .parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("`{value}` is not an IANA time zone name like Europe/Warsaw"))
}

fn locale(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 35
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{value}` is not a locale tag like en-US"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T: FromStr>(value: &str) -> bool {
        value.parse::<T>().is_ok()
    }

    #[test]
    fn ids() {
        assert!(ok::<ContactId>("c-1042"));
        assert!(ok::<ContactId>("a.b_c:d@e-f"));
        assert!(!ok::<ContactId>(""));
        assert!(!ok::<ContactId>(&"x".repeat(129)));
        assert!(!ok::<ContactId>("has space"));
        assert!(!ok::<ContactId>("slash/"));
        let e = "a b".parse::<ContactId>().unwrap_err().to_string();
        assert!(e.starts_with("contact id may only hold"), "{e}");
        let e = "".parse::<NotificationId>().unwrap_err().to_string();
        assert!(e.starts_with("notification id must be 1–128"), "{e}");
    }

    #[test]
    fn phone_numbers() {
        assert!(ok::<E164>("+48600100200"));
        assert!(!ok::<E164>("48600100200"));
        assert!(!ok::<E164>("+0600"));
        assert!(!ok::<E164>("+4860010020012345"));
        assert!(!ok::<E164>("+48 600"));
    }

    #[test]
    fn other_addresses() {
        assert!(ok::<EmailAddress>("ana@example.com"));
        assert!(!ok::<EmailAddress>("ana.example.com"));
        assert!(ok::<TelegramChat>("812345"));
        assert!(ok::<TelegramChat>("-100123"));
        assert!(ok::<TelegramChat>("@acme_news"));
        assert!(!ok::<TelegramChat>("ana"));
        assert!(ok::<LineUserId>("U4af4980629a1b2c3d4e5f60718293a4b"));
        assert!(!ok::<LineUserId>("U4AF"));
        assert!(ok::<TimeZoneName>("Europe/Warsaw"));
        assert!(!ok::<TimeZoneName>("Mars/Olympus"));
        assert!(ok::<Locale>("pl-PL"));
        assert!(!ok::<Locale>("pl PL"));
    }

    #[test]
    fn serde_is_the_plain_string_and_checks_on_the_way_in() {
        let number: E164 = serde_json::from_str("\"+48600100200\"").unwrap();
        assert_eq!(serde_json::to_string(&number).unwrap(), "\"+48600100200\"");
        let err = serde_json::from_str::<E164>("\"600100200\"").unwrap_err();
        assert!(err.to_string().contains("is not an E.164 number"), "{err}");
    }
}
