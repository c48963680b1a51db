//! TLS and basic auth for `/metrics` and `/healthz`, after the Prometheus
//! exporter-toolkit's web-config: `[metrics] tls_cert` and `tls_key` (PEM
//! files, both or neither) and `basic_auth_users = { name = "$2y$…" }`
//! (bcrypt hashes, as `htpasswd -nBC 10 name` prints them). Read once at
//! start, like `listen`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio_rustls::{TlsAcceptor, rustls};

use crate::config::MetricsConfig;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("[metrics] tls_cert {path}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("[metrics] tls_cert {path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("[metrics] tls_key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("[metrics] tls_cert and tls_key do not make a TLS server")]
    Tls(#[source] rustls::Error),
}

/// What the metrics server needs from `[metrics]`: a TLS acceptor and the
/// users who may scrape.
#[derive(Clone, Default)]
pub struct Web {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl Web {
    /// Reads the certificate and key, and warns where the endpoint is open
    /// to the network in clear text.
    pub fn load(metrics: &MetricsConfig) -> Result<Self, WebError> {
        let tls = match (&metrics.tls_cert, &metrics.tls_key) {
            (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
            _ => None,
        };
        let auth = (!metrics.basic_auth_users.is_empty())
            .then(|| Arc::new(BasicAuth::new(metrics.basic_auth_users.clone())));
        let address = metrics.listen;
        if tls.is_none() && !address.ip().is_loopback() {
            tracing::warn!(
                target: "mhr_userspace::daemon",
                %address,
                "/metrics is served on a non-loopback address without TLS: anyone on the path reads it{}; set [metrics] tls_cert and tls_key",
                if auth.is_some() { " and the basic-auth passwords" } else { "" },
            );
        }
        Ok(Self { tls, auth })
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, WebError> {
    let certificate_error = |source| WebError::Certificate { path: cert.to_owned(), source };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(certificate_error)?
        .collect::<Result<_, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(WebError::NoCertificate { path: cert.to_owned() });
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| WebError::Key { path: key.to_owned(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(WebError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Users and their bcrypt hashes. A password that verified once is kept
/// (in this process's memory only), so a scrape every few seconds costs
/// one bcrypt per user and daemon, not one per scrape.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self { users, verified: Mutex::default() }
    }

    /// Whether the `Authorization` header value names a user with the
    /// right password. bcrypt runs on the blocking pool, never on the
    /// daemon's event loop.
    async fn allows(self: Arc<Self>, authorization: Option<&str>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else { return false };
        let Some(hash) = self.users.get(&user).cloned() else { return false };
        if let Ok(verified) = self.verified.lock()
            && verified.get(&user).is_some_and(|known| constant_time_eq(known, password.as_bytes()))
        {
            return true;
        }
        let candidate = password.clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(candidate, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && let Ok(mut verified) = self.verified.lock() {
            verified.insert(user, password.into_bytes());
        }
        ok
    }
}

/// `Basic base64(user:password)`.
fn credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// axum middleware: 401 with a Basic challenge unless the request carries
/// a configured user's password.
pub async fn require_auth(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if auth.allows(header).await {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"mhr\"")], "unauthorized\n")
            .into_response()
    }
}

#[cfg(test)]
#[path = "web_tests.rs"]
mod tests;
