//! Running `mhr run` in-process inside a namespace, scraping its metrics,
//! and waiting (bounded) for convergence.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mhr_tests::{Netns, probe::http_get};
use mhr_userspace::{
    config::Config,
    daemon::{self, DaemonOptions},
};

/// The daemon on its own thread (inside a namespace); stopped on drop.
pub struct DaemonThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl DaemonThread {
    pub fn start(netns: &Netns, config: &Path, options: DaemonOptions) -> Self {
        let config = Config::load(config).expect("valid config");
        let netns_path = PathBuf::from("/run/netns").join(netns.name());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&netns_path).expect("namespace exists");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime
                .block_on(daemon::run(config, options, async {
                    let _ = stopped.await;
                }))
                .map_err(|err| {
                    let mut message = err.to_string();
                    let mut source = std::error::Error::source(&err);
                    while let Some(cause) = source {
                        message += &format!(": {cause}");
                        source = cause.source();
                    }
                    message
                })
        });
        Self { stop: Some(stop), thread: Some(thread) }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Waits up to `timeout` for the daemon to end by itself: its result,
    /// or `None` while it still runs.
    pub fn exited_within(&mut self, timeout: Duration) -> Option<Result<(), String>> {
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|thread| !thread.is_finished()) {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let thread = self.thread.take()?;
        Some(thread.join().unwrap_or_else(|_| Err("the daemon thread panicked".to_owned())))
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else { return };
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) if !std::thread::panicking() => panic!("the daemon failed: {err}"),
            Err(panic) if !std::thread::panicking() => std::panic::resume_unwind(panic),
            _ => {}
        }
    }
}

impl Drop for DaemonThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition
/// (`labels` exactly as rendered, e.g. `result="ok"`; empty for none).
pub fn sample(exposition: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    exposition.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == key).then(|| value.parse().ok()).flatten()
    })
}

/// Polls `check` every 20 ms until it returns Ok or `timeout` passes; then
/// fails with the last observed state.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(observed) if start.elapsed() >= timeout => {
                panic!("{what}: not converged after {timeout:?}; last observed: {observed}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The `mhr` binary built by `cargo xtask test` (MHR_BIN), for tests that
/// need a real process (kill -9).
pub fn mhr_binary() -> PathBuf {
    let path = std::env::var_os("MHR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mhr"));
    assert!(
        path.is_file(),
        "{} missing: build it (`cargo build -p mhr-userspace`; `cargo xtask test` does) or set MHR_BIN",
        path.display()
    );
    path
}

/// mhr's default `[metrics] listen` port.
pub const METRICS_PORT: u16 = 9847;

/// `/healthz` answers 200 (the first reconcile finished and the last one
/// succeeded).
pub fn healthy(netns: &Netns) -> Result<(), String> {
    match http_get(netns, METRICS_PORT, "/healthz") {
        Some((200, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Waits (bounded) until `/healthz` answers 200.
pub fn wait_healthy(netns: &Netns, within: Duration) {
    eventually("the daemon is healthy", within, || healthy(netns));
}

/// `mhr run` as a real process inside a namespace; SIGKILLed when dropped
/// (also when the test fails).
pub struct DaemonProcess(pub Child);

impl DaemonProcess {
    pub fn spawn(netns: &Netns, config: &Path) -> Self {
        Self::spawn_with(netns, config, &[], &[], Stdio::null())
    }

    /// `mhr [global_args] --config CONFIG run [run_args]`, its stderr going
    /// to `stderr`.
    pub fn spawn_with(
        netns: &Netns,
        config: &Path,
        global_args: &[&str],
        run_args: &[&str],
        stderr: Stdio,
    ) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", netns.name()))
            .arg(mhr_binary())
            .args(global_args)
            .arg("--config")
            .arg(config)
            .arg("run")
            .args(run_args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("mhr run starts");
        Self(child)
    }

    pub fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// How many file descriptors the process holds.
    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id())).map(|fds| fds.count()).unwrap_or(0)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// The interface(s) holding mhr's IPv4 default (in its default table
/// 7199), `+`-joined under balance.
pub fn mhr_default_v4(host: &Netns) -> String {
    let routes =
        host.ip(["-4", "route", "show", "default", "table", "7199", "proto", "210"]).unwrap_or_default();
    let words: Vec<&str> = routes.split_whitespace().collect();
    words.windows(2).filter(|pair| pair[0] == "dev").map(|pair| pair[1]).collect::<Vec<_>>().join("+")
}

/// Waits until mhr's IPv4 default leaves by `device`.
pub fn wait_default_v4(host: &Netns, device: &str, within: Duration) {
    eventually(&format!("main's default on {device}"), within, || {
        let now = mhr_default_v4(host);
        if now == device { Ok(()) } else { Err(now) }
    });
}
