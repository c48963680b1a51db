//! The metrics server on loopback: basic auth (401 without credentials,
//! 200 with), TLS with a self-signed certificate made here, the config
//! keys' validation and the clear-text warning.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::*;
use crate::config::{Config, ConfigError};

/// Cost 4, the least bcrypt allows: the tests check the logic, not the cost.
fn hash(password: &str) -> String {
    bcrypt::hash_with_result(password, 4).unwrap().format_for_version(bcrypt::Version::TwoY)
}

fn users() -> BTreeMap<String, String> {
    BTreeMap::from([("prometheus".to_owned(), hash("s3cret"))])
}

async fn start(web: Web) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let registry = Arc::new(prometheus_client::registry::Registry::default());
    tokio::spawn(super::super::http::serve(listener, registry, Arc::default(), web));
    address
}

/// One `GET path` on `stream`: the status code and the whole answer.
async fn get(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
    login: Option<(&str, &str)>,
) -> (u16, String) {
    let authorization = login.map_or(String::new(), |(user, password)| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {encoded}\r\n")
    });
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, answer)
}

async fn plain(address: SocketAddr, path: &str, login: Option<(&str, &str)>) -> (u16, String) {
    get(tokio::net::TcpStream::connect(address).await.unwrap(), path, login).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn scraping_needs_a_configured_user_and_password() {
    runtime().block_on(async {
        let web = Web { tls: None, auth: Some(Arc::new(BasicAuth::new(users()))) };
        let address = start(web).await;
        let (status, answer) = plain(address, "/metrics", None).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer.to_ascii_lowercase().contains("www-authenticate: basic realm=\"mhr\""), "{answer}");
        assert_eq!(plain(address, "/metrics", Some(("prometheus", "wrong"))).await.0, 401);
        assert_eq!(plain(address, "/metrics", Some(("someone", "s3cret"))).await.0, 401);
        assert_eq!(plain(address, "/healthz", None).await.0, 401, "/healthz is behind the same auth");
        let (status, answer) = plain(address, "/metrics", Some(("prometheus", "s3cret"))).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        // Once verified, the password is remembered; a wrong one still fails.
        assert_eq!(plain(address, "/metrics", Some(("prometheus", "s3cret"))).await.0, 200);
        assert_eq!(plain(address, "/metrics", Some(("prometheus", "s3cre"))).await.0, 401);
    });
}

#[test]
fn without_users_no_credentials_are_asked() {
    runtime().block_on(async {
        let address = start(Web::default()).await;
        assert_eq!(plain(address, "/metrics", None).await.0, 200);
    });
}

/// A self-signed certificate for `localhost` in `dir`: (cert, key) paths
/// and the certificate, for the client to trust.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().clone())
}

#[test]
fn tls_with_a_self_signed_certificate_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let metrics = MetricsConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        basic_auth_users: users(),
        ..MetricsConfig::default()
    };
    runtime().block_on(async {
        let address = start(Web::load(&metrics).unwrap()).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tls = async || {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            connector.connect("localhost".try_into().unwrap(), tcp).await.expect("TLS handshake")
        };
        let (status, answer) = get(tls().await, "/metrics", Some(("prometheus", "s3cret"))).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(get(tls().await, "/metrics", None).await.0, 401);
        // Clear text to the TLS port gets no HTTP answer.
        assert_eq!(plain(address, "/metrics", Some(("prometheus", "s3cret"))).await.0, 0);
    });
}

#[test]
fn unreadable_certificates_and_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let missing = dir.path().join("missing.pem");
    let with = |tls_cert: &Path, tls_key: &Path| {
        let metrics = MetricsConfig {
            tls_cert: Some(tls_cert.to_owned()),
            tls_key: Some(tls_key.to_owned()),
            ..MetricsConfig::default()
        };
        Web::load(&metrics).err().expect("refused")
    };
    assert!(matches!(with(&missing, &key), WebError::Certificate { path, .. } if path == missing));
    assert!(matches!(with(&cert, &missing), WebError::Key { path, .. } if path == missing));
    assert!(matches!(with(&key, &key), WebError::NoCertificate { .. }), "a key is no certificate");
}

#[test]
fn the_config_keys_follow_the_exporter_toolkit_and_are_validated() {
    let base = "[[uplink]]\ninterface = \"a\"\nprimary = true\n[metrics]\n";
    let parse = |metrics: &str| Config::parse(&format!("{base}{metrics}"), Path::new("mhr.toml"));
    let good = hash("pw");
    let config = parse(&format!(
        "tls_cert = \"/etc/mhr/cert.pem\"\ntls_key = \"/etc/mhr/key.pem\"\nbasic_auth_users = {{ prometheus = \"{good}\" }}\n"
    ))
    .unwrap();
    assert_eq!(config.metrics.basic_auth_users.get("prometheus"), Some(&good));
    assert_eq!(config.metrics.tls_key.as_deref(), Some(Path::new("/etc/mhr/key.pem")));
    let bad = |metrics: &str, wanted: &str| match parse(metrics) {
        Err(ConfigError::Invalid { problems, .. }) => match &problems[..] {
            [problem] => {
                assert!(
                    matches!(problem.error, ConfigError::BadMetrics { key, .. } if key == wanted),
                    "{metrics}: {problem:?}"
                )
            }
            other => panic!("{metrics}: {other:?}"),
        },
        other => panic!("{metrics}: {other:?}"),
    };
    bad("tls_cert = \"/etc/mhr/cert.pem\"\n", "tls_cert");
    bad("tls_key = \"/etc/mhr/key.pem\"\n", "tls_cert");
    bad("basic_auth_users = { prometheus = \"plain-text\" }\n", "basic_auth_users");
    bad(&format!("basic_auth_users = {{ \"a:b\" = \"{good}\" }}\n"), "basic_auth_users");
}

/// The log lines `Web::load` writes for `metrics`.
fn load_logs(metrics: &MetricsConfig) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, || Web::load(metrics).map(drop).unwrap());
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_non_loopback_listener_without_tls_is_warned_about() {
    let on = |listen: &str| MetricsConfig { listen: listen.parse().unwrap(), ..MetricsConfig::default() };
    let open = load_logs(&on("0.0.0.0:9847"));
    assert!(open.contains("WARN") && open.contains("without TLS"), "{open}");
    assert!(open.contains("0.0.0.0:9847"), "{open}");
    assert_eq!(load_logs(&on("127.0.0.1:9847")), "");
    assert_eq!(load_logs(&on("[::1]:9847")), "");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let tls = MetricsConfig { tls_cert: Some(cert), tls_key: Some(key), ..on("0.0.0.0:9847") };
    assert_eq!(load_logs(&tls), "");
}
