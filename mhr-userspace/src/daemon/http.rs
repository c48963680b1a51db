//! `/metrics` (Prometheus text format) and `/healthz`, served so that no
//! client can starve the daemon: at most [`MAX_CONNECTIONS`] at once (no
//! more are accepted until one ends), headers must arrive within
//! [`HEADER_READ_TIMEOUT`], and no connection lives longer than
//! [`CONNECTION_LIFETIME`], idle keep-alive included (the TLS handshake
//! too, which must also end within [`HEADER_READ_TIMEOUT`]). TLS and basic
//! auth as `[metrics]` sets them: [`super::web`].

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::{Service, ServiceState, web::Web};
use crate::metrics::render;

/// Concurrent connections; a scraper needs one, a few dashboards more.
pub const MAX_CONNECTIONS: usize = 32;
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Arc<Service>,
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Arc<Service>,
    web: Web,
) {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { registry, health });
    if let Some(auth) = web.auth {
        app = app.layer(axum::middleware::from_fn_with_state(auth, super::web::require_auth));
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        // Waiting here leaves further clients in the kernel's backlog,
        // holding none of the daemon's descriptors.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %crate::Chain(&err), "accepting a metrics connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let (http, tls) = (http.clone(), web.tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, async move {
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await
                        else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            })
            .await;
        });
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
        ServiceState::Ok => (StatusCode::OK, "ok\n".to_owned()),
        ServiceState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        // Alive and doing what it must (a liveness probe that failed here
        // would restart a daemon into the same wait): 200, saying so.
        ServiceState::Waiting(why) => (StatusCode::OK, format!("waiting: {why}\n")),
        ServiceState::Failing(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("reconcile failing: {error}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn healthz_of(state: ServiceState) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let health = Arc::new(Service::default());
        health.set(state);
        let web = Web { auth: None, tls: None };
        tokio::spawn(serve(listener, Arc::default(), health, web));
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// A daemon waiting for a pending confirmation is alive: a liveness
    /// probe must not restart it into the same wait.
    #[test]
    fn healthz_is_200_while_waiting_and_503_while_starting_or_failing() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let waiting = healthz_of(ServiceState::Waiting("a change is pending".into())).await;
            assert!(waiting.starts_with("HTTP/1.1 200"), "{waiting}");
            assert!(waiting.ends_with("waiting: a change is pending\n"), "{waiting}");
            let starting = healthz_of(ServiceState::Starting).await;
            assert!(starting.starts_with("HTTP/1.1 503"), "{starting}");
            let failing = healthz_of(ServiceState::Failing("no".into())).await;
            assert!(failing.starts_with("HTTP/1.1 503"), "{failing}");
            assert!(healthz_of(ServiceState::Ok).await.starts_with("HTTP/1.1 200"));
        });
    }
}
