//! The scenario harness: a host (text, see `southbound::model::text`) and a
//! config from `tests/scenarios/`, an engine on the in-memory kernel model,
//! and a transcript of what mhr changed at each step and of the host
//! after, compared with `tests/scenarios/NAME.golden`. `MHR_BLESS=1`
//! writes the golden files instead; review their diff like code.

#![allow(dead_code)]

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mhr_userspace::{
    config::Config,
    daemon::DaemonOptions,
    engine::Engine,
    model::{Family, Observed, Route},
    southbound::model::KernelModel,
};

pub const MHR: u8 = 210;
pub const DEFAULT_TABLE: u32 = 7199;

pub struct Scenario {
    pub name: String,
    pub config: Config,
    pub model: Arc<KernelModel>,
    pub before: String,
    transcript: String,
    _dir: tempfile::TempDir,
}

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

impl Scenario {
    /// `host` and `config` name files in `tests/scenarios/`.
    pub fn new(name: &str, host: &str, config: &str) -> Self {
        let config_name = config;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let text = std::fs::read_to_string(scenarios().join(config)).expect("the scenario's config");
        let mut config = Config::parse(&text, Path::new(config)).expect("the scenario's config is valid");
        config.routing.state_dir = dir.path().join("state");
        config.routing.rt_tables_dir = dir.path().join("rt_tables.d");
        config.guard.pin_dir = dir.path().join("pins");
        config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        for path in [&config.routing.state_dir, &config.routing.rt_tables_dir] {
            std::fs::create_dir_all(path).expect("creating the scenario's directories");
        }
        let text = std::fs::read_to_string(scenarios().join(host)).expect("the scenario's host");
        let model = KernelModel::from_text(&text).expect("the scenario's host parses");
        let before = model.render();
        let transcript =
            format!("# scenario {name}: host {host}, config {config_name}\n", config_name = config_name);
        Self { name: name.to_owned(), config, model, before, transcript, _dir: dir }
    }

    pub fn engine(&self) -> Engine {
        let kernel: Arc<dyn mhr_userspace::southbound::Southbound> = self.model.clone();
        // The scenario's host has no network manager and no lease files,
        // whatever this machine runs.
        Engine::new(self.config.clone(), kernel).with_host_root(self.host_root())
    }

    /// Serves the daemon's endpoint on a port known in advance, so that a
    /// test can ask /metrics and /healthz; returns its address.
    pub fn serve_on_known_port(&mut self) -> std::net::SocketAddr {
        let address = free_port();
        self.config.metrics.listen = address;
        address
    }

    /// Where the scenario's host keeps its files (/etc, /proc, leases):
    /// empty unless a test writes there.
    pub fn host_root(&self) -> PathBuf {
        self._dir.path().join("host")
    }

    /// Records the changes mhr made since the last step under `title`;
    /// returns them.
    pub fn step(&mut self, title: &str) -> Vec<String> {
        self.transcript += &format!("\n## {title}\n");
        let changes = self.model.take_changes();
        if changes.is_empty() {
            self.transcript += "(mhr changed nothing)\n";
        }
        for change in &changes {
            self.transcript += change;
            self.transcript += "\n";
        }
        changes
    }

    /// A line of what mhr said (an error, a finding) in the transcript.
    pub fn say(&mut self, line: &str) {
        self.transcript += &format!("> {line}\n");
    }

    /// Compares the transcript and the host after with the golden file.
    pub fn finish(mut self) {
        self.transcript += "\n## host after\n";
        self.transcript += &self.model.render();
        let golden = scenarios().join(format!("{}.golden", self.name));
        if std::env::var_os("MHR_BLESS").is_some() {
            std::fs::write(&golden, &self.transcript).expect("writing the golden file");
            return;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!("{} is missing: run with MHR_BLESS=1 and review it", golden.display())
        });
        if expected != self.transcript {
            let diff: Vec<String> = diff_lines(&expected, &self.transcript);
            panic!(
                "scenario {} differs from {} (MHR_BLESS=1 rewrites it):\n{}",
                self.name,
                golden.display(),
                diff.join("\n")
            );
        }
    }
}

/// Lines only in one side, marked `-` (golden) and `+` (now).
fn diff_lines(expected: &str, actual: &str) -> Vec<String> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    let mut out: Vec<String> = old.iter().filter(|l| !new.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(new.iter().filter(|l| !old.contains(l)).map(|l| format!("+ {l}")));
    if out.is_empty() {
        out.push("(the same lines in another order)".to_owned());
    }
    out
}

/// mhr's default route of `family` in its default table, if any.
pub fn mhr_default(host: &Observed, family: Family) -> Option<Route> {
    host.routes
        .iter()
        .find(|r| r.table == DEFAULT_TABLE && r.is_default() && r.family() == family && r.protocol == MHR)
        .cloned()
}

/// The interface names mhr's default of `family` leaves by.
pub fn default_via(model: &KernelModel, family: Family) -> Vec<String> {
    let host = model.host();
    let names = host.names();
    mhr_default(&host, family)
        .map(|route| route.next_hops().map(|hop| names.interface(hop.interface)).collect())
        .unwrap_or_default()
}

/// mhr's own rules and routes, as text.
pub fn owned(model: &KernelModel) -> String {
    let mut host = model.host();
    host.rules.retain(|r| r.protocol == MHR);
    host.routes.retain(|r| r.protocol == MHR);
    mhr_userspace::southbound::model::text::render(&host)
}

/// Daemon options for the model: no guard (it needs bpf(2)), no sandbox.
pub fn daemon_options() -> DaemonOptions {
    DaemonOptions { guard: false, ..DaemonOptions::default() }
}

/// Waits (in the test's paused time) until `done` holds; panics with the
/// host after `limit` of waiting.
pub async fn wait_until(model: &KernelModel, limit: Duration, what: &str, done: impl Fn() -> bool) {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while !done() {
        assert!(waited < limit, "{what}: not after {limit:?}; the host:\n{}", model.render());
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// Runs `steps` while a daemon runs on `engine`, then stops the daemon.
pub async fn with_daemon<F: Future<Output = ()>>(engine: Engine, steps: F) {
    with_daemon_options(engine, daemon_options(), steps).await;
}

/// [`with_daemon`] with these options.
pub async fn with_daemon_options<F: Future<Output = ()>>(engine: Engine, options: DaemonOptions, steps: F) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload, mut reloads) = tokio::sync::mpsc::channel(1);
    let daemon = mhr_userspace::daemon::run_engine(
        engine,
        options,
        async {
            let _ = stopped.await;
        },
        &mut reloads,
    );
    let steps = async {
        steps.await;
        let _ = stop.send(());
    };
    let (outcome, ()) = tokio::join!(daemon, steps);
    outcome.expect("the daemon ran and stopped cleanly");
}

/// A port for the daemon's endpoint, known in advance so that a test can
/// ask it.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("a port")
}

/// The daemon's answer to GET `path`: its status line and body.
pub async fn get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects to the endpoint");
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("reads");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// The value of the series `series` (name and labels, as exposed) in
/// /metrics.
pub async fn metric(address: std::net::SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = get(address, "/metrics").await;
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
