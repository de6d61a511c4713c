//! The opt-out every marketing message carries (docs/guardrails.md "opt-out in marketing", on by
//! default, `[policy] opt_out_footer = false` turns it off): people who can leave easily block
//! and report less, and Gmail/Yahoo require one-click unsubscribe from bulk senders.
//!
//! - WhatsApp (free-form text): `Reply STOP to unsubscribe.` (the webhook understands STOP).
//!   A template is sent as Meta approved it, so its opt-out must be part of the template.
//! - LINE: `Block this account to stop these messages.` (blocking arrives as `unfollow`).
//! - Telegram: `/stop to unsubscribe` (the bot's command).
//! - Email: `List-Unsubscribe: <https://PUBLIC_URL/unsubscribe/TOKEN>` (plus
//!   `<mailto:...>` when `[channels.email] unsubscribe_mailto` is set),
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and the link appended to the text
//!   (and to the HTML part).
//!
//! Transactional messages are left untouched.

use std::sync::Arc;

use lifeboat_channel::{Category, ChannelKind, OutboundMessage};

pub use crate::config::unsubscribe_mailto;
use crate::config::Config;
use crate::store::{Store, StoreResult};
use crate::unsubscribe::{self, Keys};

pub const WHATSAPP_FOOTER: &str = "\n\nReply STOP to unsubscribe.";
pub const LINE_FOOTER: &str = "\n\nBlock this account to stop these messages.";
pub const TELEGRAM_FOOTER: &str = "\n\n/stop to unsubscribe";

/// What the workers need to add the opt-out to marketing messages.
pub struct MarketingOptOut {
    enabled: bool,
    public_url: String,
    mailto: Option<String>,
    keys: Keys,
}

impl MarketingOptOut {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> MarketingOptOut {
        MarketingOptOut {
            enabled: config.opt_out_footer(),
            public_url: config.server.public_url.clone(),
            mailto: unsubscribe_mailto(config).ok().flatten(),
            keys: Keys::from_config(config, store),
        }
    }

    /// Adds the opt-out to `message` if it is marketing (and the footer is on).
    pub async fn decorate(
        &self,
        message: &mut OutboundMessage,
        kind: ChannelKind,
        contact_id: &str,
    ) -> StoreResult<()> {
        if !self.enabled || message.category != Category::Marketing {
            return Ok(());
        }
        match kind {
            ChannelKind::Whatsapp => {
                if message.whatsapp_template.is_none() {
                    message.text.push_str(WHATSAPP_FOOTER);
                }
            }
            ChannelKind::Line => message.text.push_str(LINE_FOOTER),
            ChannelKind::Telegram => message.text.push_str(TELEGRAM_FOOTER),
            ChannelKind::Email => {
                let token = self.keys.token(contact_id).await?;
                let url = unsubscribe::link(&self.public_url, &token);
                let mut list = format!("<{url}>");
                if let Some(mailto) = &self.mailto {
                    list.push_str(&format!(", <mailto:{mailto}?subject=unsubscribe>"));
                }
                message.headers.push(("List-Unsubscribe".into(), list));
                message.headers.push((
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                ));
                message
                    .text
                    .push_str(&format!("\n\nUnsubscribe from these emails: {url}"));
                if let Some(html) = message.html.as_mut() {
                    let link = format!(
                        "<p><a href=\"{0}\">Unsubscribe from these emails</a></p>",
                        crate::web::html::escape(&url)
                    );
                    match html.to_ascii_lowercase().rfind("</body>") {
                        Some(at) => html.insert_str(at, &link),
                        None => html.push_str(&link),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use std::path::Path;

    fn config(extra: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\napi_keys = [\"app-key-123\"]\nadmin_token = \"admin-token-123\"\n\
             public_url = \"https://notify.acme.example/\"\n{extra}"
        );
        Config::from_toml(&text, Path::new("x.toml"), &|_| None).map_err(|e| e.to_string())
    }

    fn message(category: Category) -> OutboundMessage {
        OutboundMessage {
            notification_id: "n1".into(),
            category,
            to: "ana@example.com".into(),
            text: "Sale!".into(),
            subject: None,
            html: Some("<html><body><p>Sale!</p></body></html>".into()),
            whatsapp_template: None,
            retry_key: "k".into(),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn marketing_gets_the_opt_out_and_transactional_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let cfg = config(
            "[channels.email]\nsmtp_host = \"h\"\nfrom = \"a@b.example\"\nunsubscribe_mailto = \"unsub@acme.example\"",
        )
        .unwrap();
        let optout = MarketingOptOut::new(&cfg, store.clone());

        let mut m = message(Category::Marketing);
        optout
            .decorate(&mut m, ChannelKind::Email, "ana")
            .await
            .unwrap();
        let token = Keys::new(store).token("ana").await.unwrap();
        let url = format!("https://notify.acme.example/unsubscribe/{token}");
        assert_eq!(
            m.headers,
            [
                (
                    "List-Unsubscribe".to_string(),
                    format!("<{url}>, <mailto:unsub@acme.example?subject=unsubscribe>")
                ),
                (
                    "List-Unsubscribe-Post".to_string(),
                    "List-Unsubscribe=One-Click".to_string()
                ),
            ]
        );
        assert!(m.text.ends_with(&url), "{}", m.text);
        assert!(
            m.html
                .as_deref()
                .unwrap()
                .contains(&format!("href=\"{url}\"")),
            "{:?}",
            m.html
        );
        assert!(m.html.as_deref().unwrap().ends_with("</p></body></html>"));

        for (kind, footer) in [
            (ChannelKind::Whatsapp, WHATSAPP_FOOTER),
            (ChannelKind::Line, LINE_FOOTER),
            (ChannelKind::Telegram, TELEGRAM_FOOTER),
        ] {
            let mut m = message(Category::Marketing);
            optout.decorate(&mut m, kind, "ana").await.unwrap();
            assert_eq!(m.text, format!("Sale!{footer}"));
        }

        for kind in ChannelKind::ALL {
            let mut m = message(Category::Transactional);
            optout.decorate(&mut m, kind, "ana").await.unwrap();
            assert_eq!(m.text, "Sale!");
            assert!(m.headers.is_empty());
        }
    }

    #[tokio::test]
    async fn the_footer_can_be_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let cfg = config("[policy]\nopt_out_footer = false").unwrap();
        let optout = MarketingOptOut::new(&cfg, store);
        let mut m = message(Category::Marketing);
        optout
            .decorate(&mut m, ChannelKind::Email, "ana")
            .await
            .unwrap();
        assert_eq!(m.text, "Sale!");
        assert!(m.headers.is_empty());
    }

    #[test]
    fn bad_keys_are_config_errors_naming_them() {
        let err = config("[policy]\nopt_out_footer = \"yes\"").unwrap_err();
        assert!(err.contains("policy.opt_out_footer"), "{err}");
        let err = config(
            "[channels.email]\nsmtp_host = \"h\"\nfrom = \"a@b.example\"\nunsubscribe_mailto = \"a>b\"",
        )
        .unwrap_err();
        assert!(err.contains("unsubscribe_mailto"), "{err}");
        let err = config("[channels.whatsapp]\nphone_number_id = \"1\"\naccess_token = \"t\"\nstop_words = \"stop\"")
            .unwrap_err();
        assert!(err.contains("stop_words"), "{err}");
    }
}
