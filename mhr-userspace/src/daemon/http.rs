//! `/metrics` (Prometheus text format) and `/healthz`.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;

use super::{Health, HealthState};
use crate::metrics::render;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>, health: Arc<Health>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { registry, health });
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(%err, "the metrics server stopped");
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match render(&state.registry) {
        Ok(text) => (StatusCode::OK, [("content-type", CONTENT_TYPE)], text),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", CONTENT_TYPE)], format!("{err}\n")),
    }
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.state() {
        HealthState::Ok => (StatusCode::OK, "ok\n".to_owned()),
        HealthState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        HealthState::Failing(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("reconcile failing: {error}\n"))
        }
    }
}
