//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the code
//! with utoipa, so client authors get a machine-readable contract that cannot drift from the
//! handlers.
//!
//! Each handler under `src/api` carries its own `#[utoipa::path]` (path, method, parameters,
//! body, answers, which credential it takes); [`ApiDoc`] lists them. Routes that other modules
//! merge into the API as plain routers (provider webhooks, one-click unsubscribe, the Telegram
//! webhook) are described by the stubs at the end of this file, which keeps those modules free
//! of documentation concerns. A test builds the real router, asks it which (method, path)
//! pairs it serves, and compares them with this document both ways, so a route added without
//! documentation (or documented but not served) fails CI.
//!
//! Served without auth: it holds no secrets, and clients need it before they have a key.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;

/// The error shape every `/v1` answer uses (error.rs).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorInner,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorInner {
    /// Stable per status: `invalid_json` 400, `unauthorized` 401, `forbidden` 403,
    /// `not_found` 404, `idempotency_conflict` 409, `payload_too_large` 413,
    /// `unsupported_media_type` 415, `validation_failed` 422, `overloaded` 503.
    #[schema(example = "validation_failed")]
    code: String,
    /// For people; may change between versions.
    message: String,
    /// The offending member (only with `validation_failed`).
    field: Option<String>,
}

/// Ids of contacts and notifications (api.md): 1–128 of `A-Za-z0-9._:@-`.
pub const ID_PATTERN: &str = r"^[A-Za-z0-9._:@-]{1,128}$";

// Documentation-only schemas: the shapes the handlers answer with (they build them with
// `json!` or from store types), so clients get typed bodies. `schemathesis`
// (tests/contract/run.sh) checks real answers against them.

/// A channel.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Channel {
    Whatsapp,
    Telegram,
    Email,
    Line,
}

/// A notification's category; also a consent scope.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Category {
    Transactional,
    Marketing,
}

/// Where a notification is.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum NotificationStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Expired,
    Cancelled,
}

/// A consent's status.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ConsentStatus {
    Granted,
    Revoked,
}

/// What one attempt on a channel came to. `deferred` (with `reason` `quiet_hours`) records a
/// wait; `no_receipt` a failover after `fallback_after` passed without a delivery receipt.
/// The same values as [`crate::model::Outcome`] (a test checks it).
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Outcome {
    Sent,
    Retry,
    Throttled,
    RecipientUnreachable,
    ChannelRestricted,
    ChannelBanned,
    Rejected,
    ConfigError,
    Skipped,
    Deferred,
    /// A delivery receipt moved a `sent` attempt forward (WhatsApp).
    Delivered,
    /// A read receipt moved a `sent` or `delivered` attempt forward (WhatsApp).
    Read,
    NoReceipt,
    /// Processing the notification hit a bug (logged); it ended there and is never re-sent.
    InternalError,
}

/// Why a channel was skipped (or, with `deferred`, waited for). The same values as
/// [`crate::model::SkipReason`] (a test checks it).
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SkipReason {
    NoAddress,
    NoConsent,
    NotConfigured,
    ChannelDisabled,
    ChannelRestricted,
    ChannelBanned,
    QuietHours,
    CapReached,
    OutsideWindow,
    TemplatePaused,
    TemplateDisabled,
    MarketingHeld,
    UsMarketing,
    PortfolioLimit,
}

/// A channel's state.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ChannelState {
    Active,
    Throttled,
    Restricted,
    Banned,
    Disabled,
    /// The admin table's state of a channel with no usable config table.
    #[serde(rename = "not_configured")]
    NotConfigured,
}

/// A WhatsApp template to send instead of free text where WhatsApp needs one.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WhatsappTemplate {
    #[schema(min_length = 1, max_length = 512, example = "order_shipped")]
    name: String,
    #[schema(min_length = 1, max_length = 15, example = "en_US")]
    language: String,
    /// The template's body parameters, in order.
    parameters: Option<Vec<String>>,
    /// Sent instead while this template is paused or disabled by Meta (the gateway keeps
    /// each template's state from Meta's answers and webhooks); without it such a
    /// notification skips WhatsApp (`template_paused` / `template_disabled`).
    alternative: Option<WhatsappTemplateAlternative>,
}

/// The template sent while a notification's first choice is paused or disabled.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WhatsappTemplateAlternative {
    #[schema(min_length = 1, max_length = 512, example = "order_shipped_v2")]
    name: String,
    #[schema(min_length = 1, max_length = 15, example = "en_US")]
    language: String,
    /// The template's body parameters, in order.
    parameters: Option<Vec<String>>,
}

/// `202`/`200` answer of `POST /v1/notifications`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Accepted {
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    id: String,
    /// `queued` on a 202; on a repeat, where the first one is now.
    status: NotificationStatus,
}

/// One try on one channel.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AttemptView {
    channel: Channel,
    #[schema(format = DateTime)]
    at: String,
    outcome: Outcome,
    /// With `skipped` and `deferred`.
    #[schema(nullable = false)]
    reason: Option<SkipReason>,
    #[schema(nullable = false)]
    provider_code: Option<String>,
    #[schema(nullable = false)]
    provider_message_id: Option<String>,
    #[schema(nullable = false)]
    detail: Option<String>,
    /// WhatsApp: the template the send used, `name/language`.
    #[schema(nullable = false)]
    template: Option<String>,
    /// WhatsApp: what Meta said the message costs (from its status webhooks).
    #[schema(nullable = false)]
    pricing: Option<PricingView>,
}

/// A status webhook's `pricing`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PricingView {
    billable: bool,
    /// Meta's category: marketing, marketing_lite, utility, authentication,
    /// authentication_international, service, referral_conversion (anything else: other).
    #[schema(example = "marketing")]
    category: String,
}

/// A notification as `GET /v1/notifications/{id}` shows it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationView {
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    id: String,
    /// Empty once the contact was erased (`DELETE /v1/contacts/{contact_id}`).
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{0,128}$")]
    contact_id: String,
    category: Category,
    status: NotificationStatus,
    /// The channel that carried it (null until then).
    channel: Option<Channel>,
    /// The order in which channels are tried.
    channels: Vec<Channel>,
    attempts: Vec<AttemptView>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// When a queued notification is next tried.
    #[schema(format = DateTime, nullable = false)]
    next_attempt_at: Option<String>,
    #[schema(nullable = false)]
    idempotency_key: Option<String>,
}

/// An event type (docs/events.md).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EventTypeName {
    #[schema(rename = "notification.sent")]
    NotificationSent,
    #[schema(rename = "notification.delivered")]
    NotificationDelivered,
    #[schema(rename = "notification.read")]
    NotificationRead,
    #[schema(rename = "notification.failed")]
    NotificationFailed,
    #[schema(rename = "notification.expired")]
    NotificationExpired,
    #[schema(rename = "notification.failed_over")]
    NotificationFailedOver,
    #[schema(rename = "channel.state_changed")]
    ChannelStateChanged,
    #[schema(rename = "consent.changed")]
    ConsentChanged,
}

/// Where an event stands with one endpoint.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// One endpoint's delivery of an event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeliveryView {
    /// The endpoint's `name` (default: its URL's host and port).
    endpoint: String,
    state: DeliveryState,
    attempts: u32,
    /// When a pending delivery is tried next.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    /// The HTTP status of the last attempt (null: no answer).
    last_status: Option<u16>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
}

/// An event, as `GET /v1/events` lists it; an endpoint receives `type`, `timestamp` and `data`
/// (the `id` is its `webhook-id` header).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventView {
    #[schema(pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    id: String,
    #[schema(rename = "type")]
    event_type: EventTypeName,
    #[schema(format = DateTime)]
    timestamp: String,
    /// `notification.*`: the notification as `GET /v1/notifications/{id}` shows it
    /// (`failed_over`: `notification_id`, `contact_id`, `from`, `to`, `reason`, `detail`);
    /// `channel.state_changed`: `channel`, `from`, `to`, `reason`, `until`;
    /// `consent.changed`: `contact_id`, `channel`, `status`, `scopes`, `source`.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    deliveries: Vec<DeliveryView>,
}

/// A page of `GET /v1/events`, oldest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventPage {
    data: Vec<EventView>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<String>,
}

/// A page of `GET /v1/notifications`, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationPage {
    data: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A consent on one channel.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConsentView {
    status: ConsentStatus,
    scopes: Vec<Category>,
    source: String,
    evidence: Option<String>,
    #[schema(format = DateTime)]
    at: String,
}

/// A contact with its addresses and consents.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Contact {
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    id: String,
    #[schema(nullable = false)]
    whatsapp: Option<String>,
    #[schema(nullable = false)]
    telegram: Option<String>,
    #[schema(nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    line: Option<String>,
    #[schema(nullable = false)]
    timezone: Option<String>,
    #[schema(nullable = false)]
    locale: Option<String>,
    /// Keyed by channel.
    consents: std::collections::BTreeMap<String, ConsentView>,
    /// When the person last wrote to us, keyed by channel.
    #[schema(nullable = false)]
    last_inbound: Option<std::collections::BTreeMap<String, String>>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// The answer of `PUT /v1/contacts/{contact_id}/consents/{channel}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConsentRecord {
    contact_id: String,
    channel: Channel,
    status: ConsentStatus,
    scopes: Vec<Category>,
    source: String,
    evidence: Option<String>,
    #[schema(format = DateTime)]
    at: String,
}

/// Every change of a consent, oldest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConsentHistory {
    contact_id: String,
    channel: Channel,
    history: Vec<ConsentView>,
}

/// Opt-in links for the configured channels (only those appear).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OptinLinks {
    #[schema(pattern = r"^[A-Za-z0-9_-]{16,64}$")]
    token: String,
    contact_id: String,
    scopes: Vec<Category>,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(nullable = false)]
    telegram: Option<String>,
    #[schema(nullable = false)]
    whatsapp: Option<String>,
    #[schema(nullable = false)]
    line: Option<String>,
}

/// The last error a channel's provider gave.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LastError {
    #[schema(format = DateTime)]
    at: String,
    outcome: String,
    code: Option<String>,
    detail: Option<String>,
}

/// Notifications sent and failed on the channel in the last hour, by every instance sharing the
/// store (the same on each; an instance's last second of results shows once it wrote them).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChannelCounts {
    sent_1h: u64,
    failed_1h: u64,
}

/// One channel as the admin API shows it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChannelRow {
    channel: Channel,
    configured: bool,
    /// Why the channel is not configured (null when it is).
    not_configured_reason: Option<String>,
    state: ChannelState,
    reason: Option<String>,
    #[schema(format = DateTime)]
    since: String,
    #[schema(format = DateTime)]
    until: Option<String>,
    last_error: Option<LastError>,
    counts: ChannelCounts,
    /// The provider's quality rating where it has one (WhatsApp), else null.
    #[schema(value_type = Option<Object>)]
    quality: Option<serde_json::Value>,
    /// The risk monitor's marketing status (paused, reason, figures); absent on the answer of
    /// `disable`.
    #[schema(value_type = Object, required = false)]
    marketing: Option<serde_json::Value>,
    /// The pacing rate in force (messages per second; null when the channel is not paced);
    /// absent on the answer of `disable`.
    rate: Option<f64>,
    /// Messages the provider priced (WhatsApp status `pricing`), by Meta's category:
    /// `{"utility": {"billable": 12, "free": 0}, ...}`; absent on the answer of `disable`.
    #[schema(value_type = Object, required = false)]
    pricing: Option<serde_json::Value>,
    /// WhatsApp only: every template the gateway used, with its state at Meta.
    #[schema(required = false)]
    templates: Option<Vec<TemplateRow>>,
    /// WhatsApp only: the business portfolio's messaging limit (`limit`: a number,
    /// `"unlimited"` or null while unknown; `source`; `reached_24h`: new people reached outside
    /// their service window in 24 h; `left`).
    #[schema(value_type = Object, required = false)]
    portfolio: Option<serde_json::Value>,
    /// WhatsApp only: Meta's typed restrictions in force (`restriction_type`
    /// `RESTRICTED_BIZ_INITIATED_MESSAGING` or `RESTRICTED_CUSTOMER_INITIATED_MESSAGING`,
    /// `until`, `effect`, `at`); each ends by itself at `until`.
    #[schema(value_type = Vec<Object>, required = false)]
    restrictions: Option<Vec<serde_json::Value>>,
}

/// A WhatsApp template the gateway used, and its state at Meta.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TemplateRow {
    name: String,
    language: String,
    /// `approved`, `paused` or `disabled`.
    #[schema(example = "paused")]
    state: String,
    /// While paused: when Meta's pause ends.
    #[schema(format = DateTime)]
    paused_until: Option<String>,
    /// Meta's rating: GREEN, YELLOW, RED or UNKNOWN (null until Meta sent one).
    quality: Option<String>,
    /// What moved it last: a send answer's code (132015, ...) or a webhook event.
    reason: Option<String>,
    #[schema(format = DateTime)]
    since: String,
}

/// What the policy would do on one channel.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Decision {
    Send,
    Skip,
    Wait,
}

/// How a message would go out on a channel.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Form {
    Text,
    Template,
}

/// One channel of a policy preview.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlanStep {
    channel: Channel,
    decision: Decision,
    /// With `skip` (a skip reason) and `wait` (`throttled`, `quiet_hours`, `paced`, ...).
    #[schema(nullable = false)]
    reason: Option<String>,
    detail: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    until: Option<String>,
    #[schema(nullable = false)]
    form: Option<Form>,
    /// With `send`: whether this send is the probe of a resting channel.
    #[schema(nullable = false)]
    probe: Option<bool>,
}

/// What the notification would do now.
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PreviewAction {
    Send,
    Wait,
    Fail,
}

/// The preview's conclusion.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PreviewOutcome {
    action: PreviewAction,
    #[schema(nullable = false)]
    channel: Option<Channel>,
    #[schema(format = DateTime, nullable = false)]
    until: Option<String>,
    #[schema(nullable = false)]
    reason: Option<String>,
    #[schema(nullable = false)]
    detail: Option<String>,
}

/// `GET /v1/admin/policy/preview`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PolicyPreview {
    contact_id: String,
    category: Category,
    #[schema(format = DateTime)]
    at: String,
    plan: Vec<PlanStep>,
    outcome: PreviewOutcome,
}

/// The admin page's sign-in form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginForm {
    /// The admin token.
    token: String,
}

/// The admin page's forms that only carry the session's CSRF token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CsrfForm {
    csrf: String,
}

/// The admin page's disable form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DisableForm {
    csrf: String,
    /// 1–500 characters.
    reason: String,
}

/// RFC 8058's one-click body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OneClickForm {
    #[schema(rename = "List-Unsubscribe", example = "One-Click")]
    list_unsubscribe: String,
}

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: String,
    ready: bool,
    /// Why the gateway is not ready (store failing, workers stopped, no channel configured).
    reason: Option<String>,
    /// Set while ready but no configured channel can send now (all disabled or banned).
    warning: Option<String>,
    channels: ReadinessChannels,
    /// `ok` or `failing`.
    store: String,
    /// `running` or `stopped`.
    workers: String,
    queue_depth: u64,
    /// This instance's id (host name and a random part, chosen at start): which instance of a
    /// fleet answered.
    #[schema(example = "web-1-3f9a2c")]
    instance: String,
    /// The database (PostgreSQL store only; null on the embedded store).
    database: Option<ReadinessDatabase>,
    leases: ReadinessLeases,
}

/// How many channels are configured, and how many of those are not disabled or banned.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadinessChannels {
    configured: u64,
    usable: u64,
}

/// `/readyz`'s database: reachable or not, its connection pool, and the connection that
/// listens for the other instances' announcements.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadinessDatabase {
    /// `ok` or `failing`.
    status: String,
    pool: ReadinessPool,
    /// `listening` or `reconnecting`.
    listener: String,
}

/// The database connection pool of this instance.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadinessPool {
    /// The configured size (`[store] pool`).
    size: u64,
    /// Connections open now.
    open: u64,
    /// Open connections free now.
    available: u64,
    /// Callers waiting for a connection now.
    waiting: u64,
}

/// What this instance holds: claims on notifications, and leases (`telegram/poller`,
/// `channel_probe/<channel>`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadinessLeases {
    claims: u64,
    #[schema(example = json!(["telegram/poller"]))]
    held: Vec<String>,
}

/// `GET /v1/admin/channels/history`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChannelHistory {
    history: Vec<StateChange>,
}

/// One channel state change.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StateChange {
    seq: u64,
    #[schema(format = DateTime)]
    at: String,
    channel: Channel,
    from: ChannelState,
    to: ChannelState,
    reason: Option<String>,
    #[schema(format = DateTime)]
    until: Option<String>,
    /// When the channel was next active (only on a change out of rotation; null while out).
    #[schema(format = DateTime, required = false)]
    back_at: Option<String>,
    /// Per other channel, the notifications it sent from this change until `back_at` or now
    /// (only on a change out of rotation; null when the gateway restarted in between).
    #[schema(value_type = Option<Object>, required = false)]
    carried_by_others: Option<serde_json::Value>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(what.to_string());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "api_key",
            bearer("An app's api key (`server.api_keys`), for /v1 except /v1/admin."),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The admin token (`server.admin_token`), for /v1/admin; an api key gets 403."),
        );
    }
}

/// The document: every documented operation, the schemas and the two credentials.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lifeboat",
        description = "One HTTP endpoint for notifications, delivered over WhatsApp, Telegram, \
                       email or LINE with failover when a channel is restricted or banned."
    ),
    paths(
        super::contacts::put_contact,
        super::contacts::get_contact,
        super::contacts::delete_contact,
        super::contacts::put_consent,
        super::contacts::consent_history,
        super::notifications::create,
        super::notifications::list,
        super::notifications::get_one,
        super::optin_links::create,
        super::events::list,
        super::events::retry,
        super::admin::list_channels,
        super::admin::disable,
        super::admin::enable,
        super::admin::resume_marketing,
        super::admin::channel_history,
        super::policy_preview::preview,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::admin_page::page,
        super::admin_page::login,
        super::admin_page::logout,
        super::admin_page::enable,
        super::admin_page::disable,
        openapi_json,
        whatsapp_verify,
        whatsapp_receive,
        line_receive,
        telegram_receive,
        unsubscribe_page,
        unsubscribe_post,
    ),
    components(schemas(ErrorBody, ErrorInner, Channel, Category, NotificationStatus, ConsentStatus,
        Outcome, SkipReason, ChannelState)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

/// `GET /openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

// Routes merged from other modules as plain routers, described here. Their bodies are read
// whole before anything else (signatures cover the raw bytes), so a body over 64 KiB gets
// axum's own plain-text 413.

/// WhatsApp's subscribe handshake: echoes `hub.challenge` when `hub.verify_token` matches.
#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks", operation_id = "whatsapp_webhook_verify",
    params(
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "`channels.whatsapp.verify_token`"),
        ("hub.challenge" = String, Query, description = "Echoed back")),
    responses(
        (status = 200, description = "The challenge", content_type = "text/plain", body = String),
        (status = 403, description = "Wrong verify token, or none configured", body = ErrorBody),
        (status = 422, description = "The query string is not readable", body = ErrorBody)))]
#[allow(dead_code)]
fn whatsapp_verify() {}

/// WhatsApp Cloud API events (statuses, messages), verified by `X-Hub-Signature-256`.
#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks", operation_id = "whatsapp_webhook_receive",
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body with the app secret")),
    request_body(content = Object, description = "The Graph webhook payload"),
    responses(
        (status = 200, description = "Applied (or a redelivery, ignored)"),
        (status = 400, description = "Signed, but not a webhook payload", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature; nothing changed", body = ErrorBody),
        (status = 404, description = "WhatsApp is not configured", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String),
        (status = 503, description = "The store is overloaded or failing; the provider retries", body = ErrorBody)))]
#[allow(dead_code)]
fn whatsapp_receive() {}

/// LINE webhook events (follow, unfollow, messages), verified by `X-Line-Signature`.
#[utoipa::path(post, path = "/webhooks/line", tag = "webhooks", operation_id = "line_webhook_receive",
    params(("X-Line-Signature" = String, Header, description = "base64 HMAC-SHA256 of the body with the channel secret")),
    request_body(content = Object, description = "The LINE webhook payload"),
    responses(
        (status = 200, description = "Applied"),
        (status = 400, description = "Signed, but not a webhook payload", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature; nothing changed", body = ErrorBody),
        (status = 404, description = "LINE is not configured", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String),
        (status = 503, description = "The store is overloaded or failing; the provider retries", body = ErrorBody)))]
#[allow(dead_code)]
fn line_receive() {}

/// `{"ok": true}`: the Telegram webhook's answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TelegramAck {
    ok: bool,
}

/// Telegram bot updates in webhook mode (`channels.telegram.mode = "webhook"`), verified by
/// `X-Telegram-Bot-Api-Secret-Token`. Served only in that mode: otherwise a 404.
#[utoipa::path(post, path = "/webhooks/telegram", tag = "webhooks", operation_id = "telegram_webhook_receive",
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "`channels.telegram.secret_token`")),
    request_body(content = Object, description = "A Telegram Update"),
    responses(
        (status = 200, description = "Handled", body = TelegramAck),
        (status = 400, description = "Not a Telegram update", body = ErrorBody),
        (status = 401, description = "Missing or wrong secret; nothing changed", body = ErrorBody),
        (status = 404, description = "Telegram is not in webhook mode (no such route)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String),
        (status = 503, description = "The store is overloaded or failing; Telegram retries", body = ErrorBody)))]
#[allow(dead_code)]
fn telegram_receive() {}

/// The unsubscribe page behind an email's link.
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "unsubscribe", operation_id = "unsubscribe_page",
    params(("token" = String, Path, description = "From the email's List-Unsubscribe link")),
    responses(
        (status = 200, description = "A page with an Unsubscribe button", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn unsubscribe_page() {}

/// RFC 8058 one-click unsubscribe (and the page's button): revokes the marketing scope of
/// the contact's email consent.
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "unsubscribe", operation_id = "unsubscribe_one_click",
    params(("token" = String, Path, description = "From the email's List-Unsubscribe link")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`List-Unsubscribe=One-Click`", content = OneClickForm),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn unsubscribe_post() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;
    use crate::api::{router, AppState};
    use crate::channels::Registry;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::states::ChannelStates;
    use crate::store::{SledStore, Store};

    /// Served only when the config asks for it, so absent from the router built here.
    const CONDITIONAL: &[(&str, &str)] = &[("POST", "/webhooks/telegram")];

    /// The real API router, on a throwaway store.
    async fn app(dir: &Path) -> axum::Router {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"key-0123456789\"]\nadmin_token = \"admin-0123456789\"\n\
             [store]\npath = {:?}\n[channels.line]\nchannel_access_token = \"x\"\n\
             channel_secret = \"s\"\n",
            dir.join("s.sled").display().to_string()
        );
        let config = Config::from_toml(&text, Path::new("<test>"), &|_| None).expect("config");
        let registry = Registry::from_config(&config).expect("registry");
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&config.store.path, 8).expect("store"));
        let states = Arc::new(ChannelStates::load(store.clone()).await.expect("states"));
        let policy = Arc::new(crate::policy::Policy::new(
            config.policy.clone(),
            store.clone(),
        ));
        let events = Arc::new(crate::events::Events::new(
            &config,
            store.clone(),
            Arc::new(SystemClock::default()),
            Arc::default(),
        ));
        router(AppState::new(
            store,
            states,
            registry,
            Arc::new(config),
            Arc::new(SystemClock::default()),
            Arc::new(Notify::new()),
            Arc::new(AtomicBool::new(true)),
            Arc::default(),
            policy,
            events,
            Default::default(),
        ))
    }

    /// The path templates the router holds, read from its `Debug` form (axum has no public
    /// route listing). Every `"/..."` string inside a `paths: {...}` map.
    fn route_paths(router: &axum::Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let mut paths = BTreeSet::new();
        for map in debug.split("paths: {").skip(1) {
            // The map ends at the first `}` outside quotes (templates hold `{param}`).
            let mut quoted = false;
            let end = map
                .char_indices()
                .find(|(_, c)| {
                    if *c == '"' {
                        quoted = !quoted;
                    }
                    *c == '}' && !quoted
                })
                .map_or(map.len(), |(i, _)| i);
            let map = &map[..end];
            for piece in map.split('"').skip(1).step_by(2) {
                if piece.starts_with('/') {
                    paths.insert(piece.to_string());
                }
            }
        }
        paths
    }

    /// (method, path) for every route the router serves: each path asked with TRACE (which no
    /// route takes) answers 405 with an `Allow` header listing its methods (or 404 for the
    /// entries axum adds for the fallback).
    async fn served(router: axum::Router) -> BTreeSet<(String, String)> {
        let paths = route_paths(&router);
        assert!(
            paths.contains("/v1/notifications") && paths.contains("/admin"),
            "could not read the routes from the router's Debug form: {paths:?}"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();
        let mut out = BTreeSet::new();
        let all = paths.clone();
        for path in paths {
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let answer = client
                .request(reqwest::Method::TRACE, format!("{base}{concrete}"))
                // The auth layers run before the method check.
                .bearer_auth(if path.starts_with("/v1/admin/") {
                    "admin-0123456789"
                } else {
                    "key-0123456789"
                })
                .send()
                .await
                .unwrap();
            if answer.status() == 404 {
                // axum's own fallback entries (`/`, `/{*__private__axum_fallback}`): no route.
                continue;
            }
            assert_eq!(answer.status(), 405, "TRACE {path} (of {all:?})");
            let allow = answer.headers()["allow"].to_str().unwrap().to_string();
            for method in allow.split(',').map(str::trim) {
                if method != "HEAD" {
                    out.insert((method.to_string(), path.clone()));
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[tokio::test]
    async fn every_served_route_is_documented_and_every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let served = served(app(dir.path()).await).await;
        let documented = documented();
        let conditional: BTreeSet<(String, String)> = CONDITIONAL
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {undocumented:?}"
        );
        let unserved: Vec<_> = documented
            .difference(&served)
            .filter(|r| !conditional.contains(*r))
            .collect();
        assert!(
            unserved.is_empty(),
            "documented but not served: {unserved:?}"
        );
        assert!(served.len() >= 20, "{served:?}");
    }

    /// Every operation of the document: (method, path, operation).
    fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    /// A schema that says something: a `$ref`, a type, an enum or a composition (`{}` and a
    /// bare `{"type": "object"}` with no members say nothing to a client generator).
    fn is_typed(schema: &serde_json::Value) -> bool {
        let Some(map) = schema.as_object() else {
            return false;
        };
        if [
            "$ref",
            "enum",
            "oneOf",
            "anyOf",
            "allOf",
            "items",
            "properties",
        ]
        .iter()
        .any(|k| map.contains_key(*k))
        {
            return true;
        }
        match map.get("type").and_then(|t| t.as_str()) {
            Some("object") => map.contains_key("additionalProperties"),
            Some(_) => true,
            None => false,
        }
    }

    #[test]
    fn operation_ids_are_unique_and_every_success_body_has_a_schema() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for (method, path, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or("").to_string();
            if id.is_empty() {
                problems.push(format!("{method} {path}: no operationId"));
            } else if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                problems.push(format!(
                    "operationId `{id}` of {method} {path} also names {other}"
                ));
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                for (media, body) in content {
                    let typed = is_typed(&body["schema"]);
                    // The OpenAPI document itself is the one deliberately open object.
                    let exempt = path == "/openapi.json";
                    if status.starts_with('2') && !typed && !exempt {
                        problems.push(format!(
                            "{method} {path} {status} {media}: untyped body {}",
                            body["schema"]
                        ));
                    }
                    if !status.starts_with('2') && media == "application/json" {
                        let is_error = body["schema"]["$ref"] == "#/components/schemas/ErrorBody";
                        let readyz = path == "/readyz";
                        if !is_error && !readyz {
                            problems.push(format!("{method} {path} {status}: not ErrorBody"));
                        }
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn ids_have_patterns_and_names_have_enums_and_limit_is_1_to_100() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
                .clone()
        };
        assert_eq!(
            param("/v1/contacts/{contact_id}", "put", "contact_id")["pattern"],
            ID_PATTERN
        );
        assert_eq!(
            param("/v1/notifications/{id}", "get", "id")["pattern"],
            ID_PATTERN
        );
        let limit = param("/v1/notifications", "get", "limit");
        assert_eq!(
            (limit["minimum"].clone(), limit["maximum"].clone()),
            (1.into(), 100.into())
        );
        let schemas = &doc["components"]["schemas"];
        let resolve = |schema: serde_json::Value| -> serde_json::Value {
            match schema["$ref"].as_str() {
                Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
                None => schema,
            }
        };
        let channel = resolve(param(
            "/v1/contacts/{contact_id}/consents/{channel}",
            "put",
            "channel",
        ));
        assert_eq!(
            channel["enum"],
            serde_json::json!(["whatsapp", "telegram", "email", "line"])
        );
        let status = param("/v1/notifications", "get", "status");
        let status = status["oneOf"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s.get("$ref").is_some()).cloned())
            .unwrap_or(status);
        assert_eq!(resolve(status)["enum"].as_array().unwrap().len(), 8);
        for (name, values) in [
            ("Category", 2),
            ("ConsentStatus", 2),
            ("Outcome", 14),
            ("SkipReason", 14),
            ("ChannelState", 6),
        ] {
            assert_eq!(
                schemas[name]["enum"].as_array().map(Vec::len),
                Some(values),
                "{name}: {}",
                schemas[name]
            );
        }
        let request = &schemas["NotificationRequest"]["properties"];
        assert_eq!(request["contact_id"]["pattern"], ID_PATTERN);
        assert!(json().contains("#/components/schemas/Category"));
    }

    #[test]
    fn attempt_enums_list_exactly_what_the_records_hold() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (name, values) in [
            ("Outcome", serde_json::to_value(crate::model::Outcome::ALL)),
            (
                "SkipReason",
                serde_json::to_value(crate::model::SkipReason::ALL),
            ),
        ] {
            assert_eq!(schemas[name]["enum"], values.unwrap(), "{name}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_credentials_and_the_error_shape() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["scheme"], "bearer");
        assert_eq!(schemes["admin_token"]["scheme"], "bearer");
        let create = &doc["paths"]["/v1/notifications"]["post"];
        assert_eq!(create["security"][0]["api_key"], serde_json::json!([]));
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/NotificationRequest"
        );
        assert_eq!(
            create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let disable = &doc["paths"]["/v1/admin/channels/{channel}/disable"]["post"];
        assert_eq!(disable["security"][0]["admin_token"], serde_json::json!([]));
        assert!(doc["components"]["schemas"]["ErrorInner"]["properties"]["code"].is_object());
    }
}
