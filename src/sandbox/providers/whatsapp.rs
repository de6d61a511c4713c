//! The simulated WhatsApp Cloud API (Graph): `POST /v23.0/{phone_number_id}/messages` and the
//! phone number read, with Graph's error bodies (`code`, `error_data.details`) for each [`Mode`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use lifeboat_channel::ChannelKind;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{
    bearer, serve, Mode, Received, Refusal, Simulated, ACCEPTS, THROTTLE_SECS,
    WHATSAPP_ACCESS_TOKEN, WHATSAPP_API_VERSION, WHATSAPP_PHONE_NUMBER_ID,
};

/// One line saying what the simulated provider answers in `mode`.
pub(super) fn describe(mode: &Mode) -> String {
    let to = mode.address().unwrap_or_default();
    let text = match mode {
        Mode::Accept => ACCEPTS,
        Mode::Transient => "500, Graph code 131000 Something went wrong",
        Mode::Throttle => "429, Graph code 130429 Rate limit hit, Retry-After: 10",
        Mode::Restrict => "403, Graph code 368 Temporarily blocked for policies violations",
        Mode::Ban => "403, Graph code 131031 Business Account locked",
        Mode::RejectRecipient { .. } => {
            return format!("400, Graph code 131026 Message Undeliverable for {to}; accepts others")
        }
    };
    text.to_string()
}

fn graph_error(status: StatusCode, code: i64, message: &str, details: &str) -> Refusal {
    Refusal::new(
        status,
        json!({"error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "ASandboxTraceId"
        }}),
    )
}

fn whatsapp_refusal(mode: &Mode) -> Option<Refusal> {
    Some(match mode {
        Mode::Accept | Mode::RejectRecipient { .. } => return None,
        Mode::Transient => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            131000,
            "(#131000) Something went wrong",
            "Something went wrong. Try again.",
        ),
        Mode::Throttle => {
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                "(#130429) Rate limit hit",
                "Message failed to send because there were too many messages sent from this phone number in a short period of time",
            );
            r.headers.push(("retry-after", THROTTLE_SECS.to_string()));
            r
        }
        Mode::Restrict => graph_error(
            StatusCode::FORBIDDEN,
            368,
            "(#368) Temporarily blocked for policies violations",
            "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy.",
        ),
        Mode::Ban => graph_error(
            StatusCode::FORBIDDEN,
            131031,
            "(#131031) Business Account locked",
            "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy, or the data in the request could not be verified against the account.",
        ),
    })
}

/// The simulated Graph API: `POST /v23.0/{phone_number_id}/messages` and the health read
/// `GET /v23.0/{phone_number_id}`. Returns the `api_base` to configure.
pub async fn start() -> std::io::Result<(Arc<Simulated>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}/{WHATSAPP_API_VERSION}");
    let sim = Arc::new(Simulated::new(ChannelKind::Whatsapp, base.clone()));
    let router = Router::new()
        .route(
            &format!("/{WHATSAPP_API_VERSION}/{{phone_number_id}}/messages"),
            post(whatsapp_send),
        )
        .route(
            &format!("/{WHATSAPP_API_VERSION}/{{phone_number_id}}"),
            get(whatsapp_phone),
        )
        .with_state(sim.clone());
    serve(listener, router, "WhatsApp");
    Ok((sim, base))
}

/// Checks the token and the phone number id the way Graph does.
fn whatsapp_gate(phone: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    if bearer(headers) != Some(WHATSAPP_ACCESS_TOKEN) {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "Invalid OAuth access token - Cannot parse access token",
        ));
    }
    if phone != WHATSAPP_PHONE_NUMBER_ID {
        let message = format!("(#100) Unsupported post request. Object with ID '{phone}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.");
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            100,
            &message,
            &message,
        ));
    }
    Ok(())
}

async fn whatsapp_phone(Path(phone): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = whatsapp_gate(&phone, &headers) {
        return r.into_response();
    }
    axum::Json(json!({
        "display_phone_number": "+1 555-000-0001",
        "verified_name": "Lifeboat Sandbox",
        "quality_rating": "GREEN",
        "id": phone
    }))
    .into_response()
}

async fn whatsapp_send(
    State(sim): State<Arc<Simulated>>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = whatsapp_gate(&phone, &headers) {
        return r.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = request["to"].as_str().unwrap_or_default().to_string();
    if to.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            131008,
            "(#131008) Required parameter is missing",
            "Parameter 'to' is required.",
        )
        .into_response();
    }
    let mode = sim.mode();
    if let Some(refusal) = whatsapp_refusal(&mode) {
        sim.refuse(format!("to {to}: {}", describe(&mode)));
        return refusal.into_response();
    }
    let template = request["template"]["name"].as_str().unwrap_or_default();
    if request["type"] == "template" && sim.template_paused(template) {
        sim.refuse(format!("to {to}: 132015 template {template} is paused"));
        return graph_error(
            StatusCode::BAD_REQUEST,
            132015,
            "(#132015) Cannot send message with a paused template",
            "Template is paused due to low quality so it cannot be sent in a template message.",
        )
        .into_response();
    }
    if sim.rejects(&to) {
        sim.refuse(format!("to {to}: 131026 Message Undeliverable"));
        return graph_error(
            StatusCode::BAD_REQUEST,
            131026,
            "(#131026) Message Undeliverable",
            "Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp phone number; the recipient has not accepted the new Terms of Service; the recipient is using an old WhatsApp version.",
        )
        .into_response();
    }
    let text = match request["type"].as_str() {
        Some("template") => {
            let t = &request["template"];
            let params: Vec<&str> = t["components"][0]["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default();
            format!(
                "[template {} ({})] {}",
                t["name"].as_str().unwrap_or("?"),
                t["language"]["code"].as_str().unwrap_or("?"),
                params.join(", ")
            )
        }
        _ => request["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let id = format!("wamid.SANDBOX{:08}", sim.next_seq());
    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    sim.record(Received {
        at: Utc::now(),
        to: to.clone(),
        text,
        message_id: id.clone(),
        subject: None,
        request,
    });
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [{"id": id, "message_status": "accepted"}]
    }))
    .into_response()
}
