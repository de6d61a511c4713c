//! The HTTP edge: the serve loop and the layers every answer passes through.
//!
//! - A connection cap (`server.max_connections`). Past it, a small overflow pool (an eighth of
//!   the cap, at least 8) still answers `/healthz` and `/readyz`, and 503 `overloaded` to the
//!   rest, with a 1 s header timeout and no keep-alive; past that, new connections are closed
//!   at once. So the process stays well below its open-files limit and health checks keep
//!   answering while slow clients hold every slot.
//! - `server.header_timeout`: a request's headers must arrive within it, counted from the
//!   connection's opening or from the previous answer (hyper's header-read timer, which it
//!   restarts while a keep-alive connection waits for its next request): the idle timeout too.
//! - `server.request_timeout`: from the end of the headers to the answer, body upload included
//!   (408 `request_timeout`).
//! - `server.max_header_bytes`: a larger request head is a 431 `headers_too_large` in the API's
//!   JSON shape. hyper itself only stops heads past [`hyper_head_limit`] (4 times the limit)
//!   or past [`HYPER_MAX_HEADERS`] headers; those, and requests hyper cannot parse at all, get
//!   hyper's own answer (431 or 400, empty body) and the connection is closed.
//! - Every 4xx/5xx that is not already JSON (or an HTML page) is rewritten to
//!   `{"error": {"code", "message"}}` ([`shape_errors`]).
//! - On shutdown: stop accepting, ask every connection to finish its request and close, and
//!   close whatever is still open when `server.shutdown_grace` runs out.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::web::ApiError;

/// The most `server.max_header_bytes` may be set to (checked by the config).
pub use crate::config::MAX_HEADER_BYTES_CEILING;
/// The most headers a request may carry (a 431 `headers_too_large` past it).
pub const MAX_HEADERS: usize = 100;
/// Past this many headers hyper answers 431 itself (empty body).
pub const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;
/// How long a connection in the overflow pool may take to send its headers.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest error text kept when an error is rewritten into the JSON shape.
const MAX_REWRITTEN_BODY: usize = 4096;

/// The request-head size past which hyper answers 431 itself: well above ours.
pub fn hyper_head_limit(max_header_bytes: usize) -> usize {
    (4 * max_header_bytes).max(64 * 1024)
}

/// The edge's settings, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            header_timeout: server.header_timeout,
            request_timeout: server.request_timeout,
            max_connections: server.max_connections,
            max_header_bytes: server.max_header_bytes,
            shutdown_grace: server.shutdown_grace,
        }
    }

    fn overflow_slots(&self) -> usize {
        (self.max_connections / 8).max(8)
    }
}

/// Wraps the whole app (after every merge) in the edge's layers.
pub fn layers(app: Router, limits: &Limits) -> Router {
    let request_timeout = limits.request_timeout;
    let max_header_bytes = limits.max_header_bytes;
    app.layer(middleware::from_fn(move |req: Request, next: Next| {
        time_limit(request_timeout, req, next)
    }))
    .layer(middleware::from_fn(move |req: Request, next: Next| {
        head_limit(max_header_bytes, req, next)
    }))
    .layer(middleware::map_response(shape_errors))
}

async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::info!(
                ?limit,
                "request not received and answered within server.request_timeout; answered 408"
            );
            let mut response = ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "request_timeout",
                message: format!(
                    "the request was not received and answered within {} (server.request_timeout)",
                    humantime::format_duration(limit)
                ),
                field: None,
                retry_after: None,
            }
            .into_response();
            // The rest of the body may still be on its way: don't read it, close.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn head_limit(max: usize, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let size = req.method().as_str().len()
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > max || headers.len() > MAX_HEADERS {
        return ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            message: format!(
                "the request line and headers take {size} bytes in {} headers; the limit is {max} bytes (server.max_header_bytes) and {MAX_HEADERS} headers",
                headers.len()
            ),
            field: None,
            retry_after: None,
        }
        .into_response();
    }
    next.run(req).await
}

/// Rewrites an error answer that is not JSON (axum's plain-text rejections, an empty 405) into
/// the API's shape, keeping its status and headers (`Allow`, `Retry-After`). HTML pages (the
/// admin and unsubscribe pages) are left as they are.
pub async fn shape_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("json") || content_type.starts_with("text/html") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REWRITTEN_BODY).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (code, default_message) = match status {
        StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") => {
            ("invalid_path", "the path is not valid")
        }
        StatusCode::BAD_REQUEST => ("bad_request", "the request is not valid"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", ""),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported body type"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "the request headers are too large")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "the request is not valid"),
        StatusCode::SERVICE_UNAVAILABLE => ("overloaded", "the gateway cannot answer now"),
        s if s.is_server_error() => ("internal_error", "the gateway failed to answer"),
        _ => ("bad_request", "the request was refused"),
    };
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("this route does not take this method; it takes: {allowed}")
    } else if text.is_empty() {
        default_message.to_string()
    } else {
        text
    };
    let fresh = ApiError {
        status,
        code,
        message,
        field: None,
        retry_after: None,
    }
    .into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    let (fresh_parts, fresh_body) = fresh.into_parts();
    for (name, value) in fresh_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, fresh_body)
}

/// Only `/healthz` and `/readyz` for connections past the cap; 503 `overloaded` otherwise.
async fn overflow_gate(req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let mut response = ApiError::overloaded(
        1,
        "the gateway is serving as many connections as it may (server.max_connections); retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// for up to `limits.shutdown_grace` and closes the rest. Returns when shutdown began.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Instant {
    let main_slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow_slots = Arc::new(Semaphore::new(limits.overflow_slots()));
    let overflow_app = app.clone().layer(middleware::from_fn(overflow_gate));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was taken:
                        // never fatal. Wait a little so a full fd table is not spun on.
                        tracing::warn!(error = %e, "could not accept a connection; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (permit, overflow) = match main_slots.clone().try_acquire_owned() {
                    Ok(permit) => (permit, false),
                    Err(_) => {
                        let warn_again = last_full_warning
                            .is_none_or(|at| at.elapsed() > Duration::from_secs(10));
                        if warn_again {
                            last_full_warning = Some(Instant::now());
                            tracing::warn!(
                                max_connections = limits.max_connections,
                                "connection limit reached; answering health checks only on new connections"
                            );
                        }
                        match overflow_slots.clone().try_acquire_owned() {
                            Ok(permit) => (permit, true),
                            Err(_) => {
                                drop(stream);
                                continue;
                            }
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = if overflow { overflow_app.clone() } else { app.clone() };
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(if overflow {
                        OVERFLOW_HEADER_TIMEOUT.min(limits.header_timeout)
                    } else {
                        limits.header_timeout
                    })
                    .keep_alive(!overflow)
                    .max_buf_size(hyper_head_limit(limits.max_header_bytes))
                    .max_headers(HYPER_MAX_HEADERS);
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            return;
                        }
                        _ = stop.wait_for(|stop| *stop) => {}
                    }
                    connection.as_mut().graceful_shutdown();
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    let began = Instant::now();
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::from_std(began + limits.shutdown_grace);
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?limits.shutdown_grace,
            "connections still open when the shutdown grace ran out; closed them"
        );
        connections.shutdown().await;
    }
    began
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewrites_plain_errors_and_keeps_json_ones() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad").into_response();
        let shaped = shape_errors(plain).await;
        let body = axum::body::to_bytes(shaped.into_body(), 4096)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_path");
        assert_eq!(v["error"]["message"], "Invalid URL: bad");

        let json = ApiError::not_found("x").into_response();
        let kept = shape_errors(json).await;
        let body = axum::body::to_bytes(kept.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "x");

        let ok = Response::new(axum::body::Body::from("fine"));
        assert_eq!(shape_errors(ok).await.status(), StatusCode::OK);
    }
}
