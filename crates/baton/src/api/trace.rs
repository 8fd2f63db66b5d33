//! One `request` span per HTTP call, continuing the caller's trace when the request carries a
//! W3C `traceparent` header, so that what the call does (an enqueue, and later the job's
//! execution) joins the caller's trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use baton_core::TraceParent;
use tracing::Instrument;

/// Routes polled by probes and scrapers, left out of traces so they do not drown the rest.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Runs the request inside a `request` span (OpenTelemetry name `METHOD ROUTE`, kind server)
/// that records the response's status.
pub async fn request_span(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    if UNTRACED.contains(&route.as_str()) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| TraceParent::parse(value).ok());
    if let Some(parent) = &parent {
        baton_trace::follow(&span, parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
