//! Checks on what users send: ids, addresses and time zones. Each returns a message fit for
//! a 422 `validation_failed` answer; the caller names the field.

use lifeboat_channel::ChannelKind;

/// Contact and notification ids: 1–128 of `A-Za-z0-9._:@-`.
pub fn id(value: &str) -> Result<(), String> {
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

/// A phone number in E.164: `+`, a non-zero digit, up to 15 digits in all.
pub fn e164(value: &str) -> Result<(), String> {
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

/// An email address as SMTP will take it (`local@domain`).
pub fn email(value: &str) -> Result<(), String> {
    value
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("`{value}` is not an email address ({e})"))
}

/// A Telegram chat id (a signed integer) or a public `@channelusername`.
pub fn telegram_chat(value: &str) -> Result<(), String> {
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

/// A LINE user id: `U` and 32 lowercase hex digits.
pub fn line_user(value: &str) -> Result<(), String> {
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

/// An IANA time zone name, e.g. `Europe/Warsaw`.
pub fn timezone(value: &str) -> Result<(), String> {
    value
        .parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("`{value}` is not an IANA time zone name like Europe/Warsaw"))
}

/// The address check for one channel.
pub fn address(kind: ChannelKind, value: &str) -> Result<(), String> {
    match kind {
        ChannelKind::Whatsapp => e164(value),
        ChannelKind::Telegram => telegram_chat(value),
        ChannelKind::Email => email(value),
        ChannelKind::Line => line_user(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(id("c-1042").is_ok());
        assert!(id("a.b_c:d@e-f").is_ok());
        assert!(id("").is_err());
        assert!(id(&"x".repeat(129)).is_err());
        assert!(id("has space").is_err());
        assert!(id("slash/").is_err());
    }

    #[test]
    fn phone_numbers() {
        assert!(e164("+48600100200").is_ok());
        assert!(e164("48600100200").is_err());
        assert!(e164("+0600").is_err());
        assert!(e164("+4860010020012345").is_err());
        assert!(e164("+48 600").is_err());
    }

    #[test]
    fn other_addresses() {
        assert!(email("ana@example.com").is_ok());
        assert!(email("ana.example.com").is_err());
        assert!(telegram_chat("812345").is_ok());
        assert!(telegram_chat("-100123").is_ok());
        assert!(telegram_chat("@acme_news").is_ok());
        assert!(telegram_chat("ana").is_err());
        assert!(line_user("U4af4980629a1b2c3d4e5f60718293a4b").is_ok());
        assert!(line_user("U4AF").is_err());
        assert!(timezone("Europe/Warsaw").is_ok());
        assert!(timezone("Mars/Olympus").is_err());
    }
}
