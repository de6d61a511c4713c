//! The `v/` namespaces (see `Store::kv_*`) the store itself reads: the purge and the
//! migrations need their names, so they are defined here, below the modules that fill them
//! (`optin`, `policy`, `webhooks`), which use these constants.

/// Opt-in tokens ([`crate::model::OptinToken`]), keyed by token.
pub const OPTIN: &str = "optin";
/// Marketing sends per contact (the daily cap, `policy::caps`).
pub const POLICY_MARKETING_SENDS: &str = "policy_marketing_sends";
/// WhatsApp's unique-recipient buckets (`policy::tier`).
pub const POLICY_TIER: &str = "policy_tier";
/// Marketing sends in flight holding a place under a contact's cap (`policy::places`), keyed
/// by contact id.
pub const POLICY_CAP_PLACES: &str = "policy_cap_places";
/// Per-recipient pauses a provider asked for (`states`), keyed `<channel>/<SHA-256 of the
/// address>`.
pub const RECIPIENT_PAUSES: &str = "recipient_pauses";
/// Sent and failed notifications per channel and minute (`states`), keyed
/// `<channel>/<minute since the epoch>`.
pub const CHANNEL_COUNTS: &str = "channel_counts";
/// Ids of applied provider webhook events (`webhooks::SEEN_NAMESPACE`).
pub const WEBHOOK_SEEN: &str = "webhook_seen";
/// Provider events that were not understood (`webhooks::EVENTS_NAMESPACE`).
pub const WEBHOOK_EVENTS: &str = "webhook_events";
/// Admin page sessions (`api::admin_page::session`), keyed by the SHA-256 of the session id.
pub const ADMIN_SESSIONS: &str = "admin_sessions";
/// Probe leases of restricted channels (`states`), keyed by channel: which instance probes.
pub const CHANNEL_PROBE: &str = "channel_probe";
/// The fleet's pacing budget per channel (`policy::pacing::SharedBudget`), keyed by channel.
pub const POLICY_PACING: &str = "policy_pacing";
/// Events for the app's endpoints, one record per event keyed by its UUIDv7 id
/// (`events::Record`).
pub const EVENTS: &str = "events";
/// Event deliveries that are due, keyed `{endpoint}/{due ms}/{event id}` (the delivery
/// workers' queue, `events::deliver`).
pub const EVENT_DUE: &str = "event_due";
/// WhatsApp templates the gateway used and their state from Meta (`policy::templates`),
/// keyed by `<name>/<language>`.
pub const WHATSAPP_TEMPLATES: &str = "whatsapp_templates";
/// People whose WhatsApp marketing Meta holds (131049), keyed by the SHA-256 of the number
/// ([`marketing_hold_key`]; `policy::holds`). Records of earlier versions are keyed by the
/// number itself: read, erased and purged as well.
pub const WHATSAPP_MARKETING_HOLDS: &str = "whatsapp_marketing_holds";
/// The business portfolio's messaging limit as Meta last named it, and the account's typed
/// restrictions (`policy::portfolio`).
pub const WHATSAPP_PORTFOLIO: &str = "whatsapp_portfolio";
/// Billable and free messages per channel and pricing category (`policy::pricing`).
pub const PRICING: &str = "pricing";

/// The key of a number's record in [`WHATSAPP_MARKETING_HOLDS`]: the hex SHA-256 of the number,
/// so the namespace lists no phone number; an erasure computes it from the contact's address.
pub fn marketing_hold_key(number: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(number.as_bytes()))
}
