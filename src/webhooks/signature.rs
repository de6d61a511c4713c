//! Webhook signatures: both providers sign the raw request body with HMAC-SHA256 under a secret
//! only they and we know. The check runs on the exact bytes received, before any parsing (a
//! re-serialized body would not match), and compares in constant time (`verify_slice`), so a
//! forger learns nothing from how long a wrong guess took.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How one provider signs its webhooks, for [`require`].
pub struct Scheme {
    /// The provider's name in logs and errors ("WhatsApp", "LINE").
    pub provider: &'static str,
    /// The config key of the secret, for the error when it is missing.
    pub secret_key: &'static str,
    /// The header carrying the signature.
    pub header: &'static str,
    pub valid: fn(&[u8], &[u8], Option<&str>) -> bool,
}

/// Refuses a webhook (401, logged without its content) unless `body` carries a valid signature
/// under `secret`; a provider configured without the secret refuses everything, since nothing
/// could be checked.
pub fn require(
    scheme: &Scheme,
    secret: Option<&secrecy::SecretString>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), crate::web::ApiError> {
    use secrecy::ExposeSecret;
    let Some(secret) = secret else {
        tracing::warn!(
            provider = scheme.provider,
            "webhook refused: no {} is configured to check its signature",
            scheme.secret_key
        );
        return Err(crate::web::ApiError::unauthorized(format!(
            "no {} is configured, so no signature can be checked",
            scheme.secret_key
        )));
    };
    let given = headers.get(scheme.header).and_then(|v| v.to_str().ok());
    if !(scheme.valid)(secret.expose_secret().as_bytes(), body, given) {
        tracing::warn!(
            provider = scheme.provider,
            signed = given.is_some(),
            "webhook refused: missing or wrong {}",
            scheme.header
        );
        return Err(crate::web::ApiError::unauthorized(format!(
            "missing or wrong {}",
            scheme.header
        )));
    }
    Ok(())
}

/// WhatsApp (Meta): `X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(app_secret, body)>`.
pub fn whatsapp_valid(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig) else {
        return false;
    };
    verify(app_secret, body, &signature)
}

/// LINE: `X-Line-Signature: <base64 of HMAC-SHA256(channel_secret, body)>`.
pub fn line_valid(channel_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(b64) = header.map(str::trim) else {
        return false;
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    verify(channel_secret, body, &signature)
}

fn verify(secret: &[u8], body: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

/// The signature a provider would send (tests, and the sandbox's simulated providers).
pub fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body)))
}

/// LINE's header value for `body`.
pub fn sign_base64(secret: &[u8], body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, body))
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_signatures_are_checked_on_the_raw_bytes() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = sign_hex(b"app-secret", body);
        assert!(whatsapp_valid(b"app-secret", body, Some(&header)));
        assert!(!whatsapp_valid(b"other-secret", body, Some(&header)));
        assert!(!whatsapp_valid(b"app-secret", b"{ }", Some(&header)));
        assert!(!whatsapp_valid(b"app-secret", body, None));
        assert!(!whatsapp_valid(b"app-secret", body, Some("sha256=zz")));
        // The bare hex without the `sha256=` prefix is not Meta's format.
        assert!(!whatsapp_valid(
            b"app-secret",
            body,
            Some(header.trim_start_matches("sha256="))
        ));
        // A truncated signature is wrong, not a prefix match.
        assert!(!whatsapp_valid(b"app-secret", body, Some(&header[..20])));
    }

    #[test]
    fn line_signatures_are_base64_of_the_hmac() {
        let body = br#"{"destination":"U0","events":[]}"#;
        let header = sign_base64(b"channel-secret", body);
        assert!(line_valid(b"channel-secret", body, Some(&header)));
        assert!(!line_valid(b"channel-secret", b"{}", Some(&header)));
        assert!(!line_valid(b"wrong", body, Some(&header)));
        assert!(!line_valid(b"channel-secret", body, Some("not base64!")));
        assert!(!line_valid(b"channel-secret", body, None));
    }
}
