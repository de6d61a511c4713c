//! The `v/` namespaces (see `Store::kv_*`) the store itself reads: the purge and the
//! migrations need their names, so they are defined here, below the modules that fill them
//! (`optin`, `policy`, `webhooks`), which use these constants.

/// Opt-in tokens ([`crate::model::OptinToken`]), keyed by token.
pub const OPTIN: &str = "optin";
/// Marketing sends per contact (the daily cap, `policy::caps`).
pub const POLICY_MARKETING_SENDS: &str = "policy_marketing_sends";
/// WhatsApp's unique-recipient buckets (`policy::tier`).
pub const POLICY_TIER: &str = "policy_tier";
/// Ids of applied provider webhook events (`webhooks::SEEN_NAMESPACE`).
pub const WEBHOOK_SEEN: &str = "webhook_seen";
/// Provider events that were not understood (`webhooks::EVENTS_NAMESPACE`).
pub const WEBHOOK_EVENTS: &str = "webhook_events";
/// WhatsApp templates the gateway used and their state from Meta (`policy::templates`),
/// keyed by `<name>/<language>`.
pub const WHATSAPP_TEMPLATES: &str = "whatsapp_templates";
/// People whose WhatsApp marketing Meta holds (131049), keyed by number (`policy::holds`).
pub const WHATSAPP_MARKETING_HOLDS: &str = "whatsapp_marketing_holds";
/// The business portfolio's messaging limit as Meta last named it, and the account's typed
/// restrictions (`policy::portfolio`).
pub const WHATSAPP_PORTFOLIO: &str = "whatsapp_portfolio";
/// Billable and free messages per channel and pricing category (`policy::pricing`).
pub const PRICING: &str = "pricing";
