//! WhatsApp's 24 h customer service window: free-form text only within 24 h of the person's
//! last message to us; outside it only an approved template may open a conversation. Sending
//! free-form text outside the window earns error 131047 and counts against the number's
//! quality, so the gateway decides before sending: free-form inside the window, the
//! notification's `whatsapp_template` outside it, and no WhatsApp at all (`outside_window`)
//! when there is no template.

use lifeboat_channel::ChannelKind;

use crate::model::{Contact, SkipReason, Timestamp};

/// How long the service window stays open after the person's last message.
pub const SERVICE_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// What to send on WhatsApp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Inside the window: the notification's text (any template is dropped).
    FreeText,
    /// Outside the window: the notification's template.
    Template,
    /// The notification's template is paused or disabled: its `alternative` instead.
    Alternative,
}

/// Whether the person wrote to us on WhatsApp within the last 24 h.
pub fn within_window(contact: &Contact, now: Timestamp) -> bool {
    contact
        .last_inbound
        .get(&ChannelKind::Whatsapp)
        .is_some_and(|at| *at <= now && now - *at < SERVICE_WINDOW)
}

/// Free-form text, the template, or `Err(SkipReason::OutsideWindow)`.
pub fn choose(contact: &Contact, has_template: bool, now: Timestamp) -> Result<Form, SkipReason> {
    if within_window(contact, now) {
        Ok(Form::FreeText)
    } else if has_template {
        Ok(Form::Template)
    } else {
        Err(SkipReason::OutsideWindow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;

    #[test]
    fn free_text_only_within_24_hours_of_the_last_inbound_message() {
        let now = at("2025-06-10T12:00:00Z");
        let mut c = Contact::new("c", now);
        assert_eq!(choose(&c, false, now), Err(SkipReason::OutsideWindow));
        assert_eq!(choose(&c, true, now), Ok(Form::Template));

        c.last_inbound
            .insert(ChannelKind::Whatsapp, at("2025-06-09T12:00:01Z"));
        assert_eq!(choose(&c, false, now), Ok(Form::FreeText));
        assert_eq!(choose(&c, true, now), Ok(Form::FreeText));

        c.last_inbound
            .insert(ChannelKind::Whatsapp, at("2025-06-09T12:00:00Z"));
        assert_eq!(
            choose(&c, false, now),
            Err(SkipReason::OutsideWindow),
            "24 h sharp is over"
        );
        assert_eq!(choose(&c, true, now), Ok(Form::Template));
    }

    #[test]
    fn a_message_on_another_channel_does_not_open_the_whatsapp_window() {
        let now = at("2025-06-10T12:00:00Z");
        let mut c = Contact::new("c", now);
        c.last_inbound.insert(ChannelKind::Telegram, now);
        assert!(!within_window(&c, now));
    }
}
