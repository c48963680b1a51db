//! Config reloads (SIGHUP): what takes effect now, what waits for a
//! restart, and the reconcile that follows.

use super::{Daemon, Trigger};
use crate::{config::Config, southbound::Notifications};

impl Daemon {
    /// A reload as `mhr run` sends it (already validated, or why not).
    /// True when it was taken (a reconcile ran).
    pub(super) async fn reload_with(
        &mut self,
        reload: Result<Config, crate::config::ConfigError>,
        events: &mut dyn Notifications,
    ) -> bool {
        let config = match reload {
            Ok(config) => config,
            Err(reason) => {
                tracing::error!(error = %crate::Chain(&reason), "reloading the config failed; the running config stays");
                self.control.config_reloaded(false);
                return false;
            }
        };
        self.control.config_reloaded(true);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        self.reload(config);
        events.set_route_filter(crate::southbound::RouteFilter::for_config(self.engine.config()));
        self.reconcile(Trigger::Reload).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        true
    }

    /// Takes a new config. What the running process is built around (the
    /// metrics listener, pins, state and health settings) keeps its old
    /// value until a restart, and says so.
    pub(super) fn reload(&mut self, mut config: Config) {
        let old = self.engine.config().clone();
        let kept = kept_until_restart(&old, &config);
        config.routing.protocol = old.routing.protocol;
        config.routing.table_range = old.routing.table_range;
        config.metrics.listen = old.metrics.listen;
        config.guard.pin_dir = old.guard.pin_dir.clone();
        config.routing.state_dir = old.routing.state_dir.clone();
        config.health = old.health.clone();
        if !kept.is_empty() {
            tracing::warn!(settings = ?kept, "these settings take effect when mhr run restarts");
        }
        let uplinks: Vec<(&str, bool)> =
            config.uplinks.iter().map(|u| (u.interface.as_str(), u.primary)).collect();
        for gone in old.uplinks.iter().filter(|u| !uplinks.iter().any(|(i, _)| *i == u.interface)) {
            self.control.forget_uplink(&gone.interface);
        }
        // Sets every configured uplink's role: a new primary moves the 1.
        self.control.initialise(&uplinks);
        self.book.set_probed(crate::health::snapshot::probed(&config));
        self.book.set_cadence(&config);
        tracing::info!(path = %config.path.display(), "config reloaded");
        self.hooks.set_hooks(config.hooks.clone());
        self.engine.set_config(config);
    }
}

/// The settings a reload from `old` to `new` changes that only a restart
/// takes: the running process is built around them.
fn kept_until_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if new.metrics.listen != old.metrics.listen {
        kept.push("[metrics] listen");
    }
    if new.guard.pin_dir != old.guard.pin_dir {
        kept.push("[guard] pin_dir");
    }
    if new.routing.state_dir != old.routing.state_dir {
        kept.push("[routing] state_dir");
    }
    if new.health != old.health {
        kept.push("[health]");
    }
    // What marks and places mhr's objects: changing it live would make
    // them all look foreign.
    if new.routing.protocol != old.routing.protocol {
        kept.push("[routing] protocol");
    }
    if new.routing.table_range != old.routing.table_range {
        kept.push("[routing] table_range");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_each_setting_that_waits_for_a_restart() {
        let old = Config::parse(
            "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n",
            std::path::Path::new("mhr.toml"),
        )
        .expect("a config");
        assert!(kept_until_restart(&old, &old).is_empty(), "nothing changed, nothing kept");
        let mut new = old.clone();
        new.metrics.listen = "127.0.0.1:1".parse().expect("an address");
        new.guard.pin_dir = "/sys/fs/bpf/other".into();
        new.routing.state_dir = "/tmp/other".into();
        new.health.interval *= 2;
        new.routing.protocol = old.routing.protocol.wrapping_add(1);
        new.routing.table_range = [100, 200];
        assert_eq!(
            kept_until_restart(&old, &new),
            [
                "[metrics] listen",
                "[guard] pin_dir",
                "[routing] state_dir",
                "[health]",
                "[routing] protocol",
                "[routing] table_range"
            ]
        );
        let mut one = old.clone();
        one.routing.protocol = old.routing.protocol.wrapping_add(1);
        assert_eq!(kept_until_restart(&old, &one), ["[routing] protocol"]);
    }
}
