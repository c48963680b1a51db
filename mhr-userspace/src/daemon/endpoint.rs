//! The daemon's service state and where it is served: `/metrics` and
//! `/healthz`, up from before the daemon proper starts.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{DaemonError, http, web};
use crate::{
    config::Config,
    metrics::{ControlMetrics, GuardCollector, registry},
};

/// The daemon's service state as `/healthz` reports it: the last
/// reconcile's outcome, or why it has not started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServiceState {
    /// The first reconcile has not finished.
    #[default]
    Starting,
    /// Not started yet, on purpose: a change is pending confirmation
    /// (`mhr run` waits for its verdict). Alive, so `/healthz` answers 200.
    Waiting(String),
    Ok,
    Failing(String),
}

#[derive(Debug, Default)]
/// The daemon's [`ServiceState`], shared with the HTTP server.
pub struct Service {
    state: Mutex<ServiceState>,
}

impl Service {
    pub(super) fn set(&self, state: ServiceState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }

    pub fn state(&self) -> ServiceState {
        self.state.lock().map(|state| state.clone()).unwrap_or(ServiceState::Starting)
    }
}

/// `/metrics` and `/healthz`, served from before the daemon proper starts:
/// a `mhr run` that waits for a pending confirmation is alive, says so on
/// `/healthz`, and keeps exporting the guard's counters meanwhile.
pub struct Endpoint {
    pub(super) control: Arc<ControlMetrics>,
    pub(super) service: Arc<Service>,
    /// The listener's task: it serves as long as the endpoint lives.
    server: tokio::task::AbortHandle,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Endpoint {
    /// Binds `[metrics] listen` and serves there until the process ends.
    pub async fn start(config: &Config) -> Result<Self, DaemonError> {
        let control = Arc::new(ControlMetrics::default());
        let service = Arc::new(Service::default());
        let collector = GuardCollector::new(config.guard.pin_dir.clone(), config.metrics.top_offenders);
        let registry = Arc::new(registry(&control, collector));
        let address = config.metrics.listen;
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(source) => {
                // Most likely another `mhr run` serves there: say that, as
                // the writer lock would have before anything was served.
                let state_dir = &config.routing.state_dir;
                if let Err(err @ crate::lock::LockError::DaemonRunning { .. }) =
                    crate::lock::acquire(state_dir, crate::lock::Role::Run, Duration::ZERO)
                {
                    return Err(err.into());
                }
                return Err(DaemonError::Metrics { address, source });
            }
        };
        let web = web::Web::load(&config.metrics)?;
        let server = tokio::spawn(http::serve(listener, registry, Arc::clone(&service), web)).abort_handle();
        tracing::info!(%address, "serving /metrics and /healthz");
        Ok(Self { control, service, server })
    }

    /// `/healthz` says the daemon waits, and why.
    pub fn waiting(&self, why: String) {
        self.service.set(ServiceState::Waiting(why));
    }

    pub fn state(&self) -> ServiceState {
        self.service.state()
    }
}
