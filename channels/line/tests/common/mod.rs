//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use lifeboat_channel::{Category, OutboundMessage};
use lifeboat_line::{LineChannel, LineConfig};

/// The channel access token used in every test; no answer, log or Debug output may contain it.
pub const TOKEN: &str = "TEST-TOKEN-must-never-leak-5f3a9c";
/// The channel secret used in every test.
pub const SECRET: &str = "TEST-SECRET-must-never-leak-77b1";
/// A LINE user id of the documented shape.
pub const USER: &str = "U4af4980629a1b2c3d4e5f60718293a4b";

pub fn config(api_base: &str) -> LineConfig {
    let mut config = LineConfig::new(TOKEN);
    config.api_base = api_base.to_string();
    config.channel_secret = Some(SECRET.to_string().into());
    config.basic_id = Some("@acme".to_string());
    config
}

pub fn channel(api_base: &str) -> LineChannel {
    channel_with_timeout(api_base, Duration::from_secs(5))
}

pub fn channel_with_timeout(api_base: &str, timeout: Duration) -> LineChannel {
    LineChannel::new(config(api_base), timeout).expect("valid config")
}

pub fn message(text: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: "n-1042".to_string(),
        category: Category::Transactional,
        to: USER.to_string(),
        text: text.to_string(),
        subject: None,
        html: None,
        whatsapp_template: None,
        retry_key: uuid::Uuid::new_v4().to_string(),
        headers: Vec::new(),
    }
}

/// Panics if `text` shows a secret.
pub fn assert_no_secret(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains(SECRET), "channel secret leaked: {text}");
}
