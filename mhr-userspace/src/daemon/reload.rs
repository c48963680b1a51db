//! Config reloads (SIGHUP): what takes effect now, what waits for a
//! restart, and the reconcile that follows.

use super::{Daemon, Trigger};
use crate::{config::Config, southbound::Notifications};

impl Daemon {
    /// A reload as `mhr run` sends it (already validated, or why not).
    /// True when it was taken (a reconcile ran).
    pub(super) async fn reload_with(
        &mut self,
        reload: Result<Config, String>,
        events: &mut dyn Notifications,
    ) -> bool {
        let config = match reload {
            Ok(config) => config,
            Err(reason) => {
                tracing::error!(error = %reason, "reloading the config failed; the running config stays");
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
        let mut kept = Vec::new();
        if config.metrics.listen != old.metrics.listen {
            kept.push("[metrics] listen");
        }
        if config.guard.pin_dir != old.guard.pin_dir {
            kept.push("[guard] pin_dir");
        }
        if config.routing.state_dir != old.routing.state_dir {
            kept.push("[routing] state_dir");
        }
        if config.health != old.health {
            kept.push("[health]");
        }
        // What marks and places mhr's objects: changing it live would make
        // them all look foreign.
        if config.routing.protocol != old.routing.protocol {
            kept.push("[routing] protocol");
        }
        if config.routing.table_range != old.routing.table_range {
            kept.push("[routing] table_range");
        }
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
