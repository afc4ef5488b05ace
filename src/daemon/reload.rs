//! SIGHUP: a new watchlist applied to the running daemon, every setting
//! that can change in place changed, and the rest named.

use super::*;

/// The settings a reload cannot change: the API's listener (its address
/// and limits) and the database. They take a restart; until then the old
/// values stay in force.
pub const NEEDS_RESTART: [&str; 3] = ["listen", "database", "api_limits"];

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings that changed and now apply (`domains`, `upstreams`, …).
    pub applied: Vec<&'static str>,
    /// The settings that changed but take a restart ([`NEEDS_RESTART`]).
    pub restart: Vec<&'static str>,
    /// The settings that changed but could not be applied, with why; the
    /// old values stay in force (a later reload tries again).
    pub failed: Vec<(&'static str, String)>,
}

/// Every setting of the watchlist, by its name there, and
/// [`changed`], which compares them. A field of [`Config`] that is not a
/// setting is in [`NOT_SETTINGS`]; a test holds that every field is one or
/// the other, so a new setting cannot be silently ignored by a reload.
macro_rules! settings {
    ($($field:ident),* $(,)?) => {
        pub const SETTINGS: &[&str] = &[$(stringify!($field)),*];

        /// The settings that differ between `old` and `new`, in
        /// [`SETTINGS`]' order (targets compare as written, without their
        /// secrets).
        pub fn changed(old: &Config, new: &Config) -> Vec<&'static str> {
            let mut names = Vec::new();
            $(
                if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                    names.push(stringify!($field));
                }
            )*
            names
        }
    };
}

settings!(
    domains,
    schedule,
    listen,
    database,
    upstreams,
    timeout,
    concurrency,
    rate_limit,
    fast_recheck,
    grace,
    settle,
    authoritative_port,
    api_token,
    anomaly,
    bounce_times,
    api_limits,
    sns_subscribe_allow,
    sns_verify_signatures,
    sns_topics,
    sns_signing_cert_base,
    sns_trust,
    alerts,
    forward,
    undo,
    digest,
    auto_watch,
    passive_dns,
    log_level,
    providers,
);

/// The fields of [`Config`] that are not settings: where it was read
/// from and what reading it found.
pub const NOT_SETTINGS: &[&str] = &["source", "duplicates_merged", "secret_problems"];

/// The settings [`Monitor::retune`] applies.
const MONITORING: [&str; 7] = [
    "upstreams",
    "timeout",
    "rate_limit",
    "authoritative_port",
    "grace",
    "settle",
    "providers",
];

impl Daemon {
    /// Applies a new watchlist in place: its domains and schedules (added
    /// ones are scheduled, removed ones stop; their history stays, and one
    /// whose window is open is watched until its DNS closes it), upstreams
    /// and resolver settings, detector and anomaly thresholds, bounce
    /// dates, the API's token and SNS settings, alert, forward and undo
    /// targets, the digest, auto-watch and passive DNS. `log_level` is the
    /// caller's (it owns the log). What takes a restart is named, never
    /// applied.
    pub async fn reload(&self, config: &Config) -> Reloaded {
        let old = self.in_force.lock().expect("in force lock").clone();
        let mut done = Reloaded::default();
        for name in changed(&old, config) {
            if NEEDS_RESTART.contains(&name) {
                done.restart.push(name);
            } else {
                done.applied.push(name);
            }
        }
        let mut in_force = Config {
            listen: old.listen,
            database: old.database.clone(),
            api_limits: old.api_limits,
            ..config.clone()
        };
        // The resolvers are built again only when what they use changed.
        let retune = done.applied.iter().any(|n| MONITORING.contains(n));
        if let Some(Err(e)) = retune.then(|| self.monitor.retune(&config.monitoring())) {
            // The monitor keeps every one of its old settings.
            let failed: Vec<_> = done
                .applied
                .iter()
                .copied()
                .filter(|n| MONITORING.contains(n))
                .collect();
            done.applied.retain(|n| !failed.contains(n));
            done.failed
                .extend(failed.into_iter().map(|n| (n, format!("{e:#}"))));
            in_force.upstreams = old.upstreams.clone();
            in_force.timeout = old.timeout;
            in_force.rate_limit = old.rate_limit;
            in_force.authoritative_port = old.authoritative_port;
            in_force.grace = old.grace;
            in_force.settle = old.settle;
            in_force.providers = old.providers.clone();
        }
        if let Err(e) = self.monitor.writer.rejudge(in_force.judging()).await {
            tracing::error!("reload: the writer did not take the new judging settings: {e}");
        }
        self.options.send_replace(scheduler_options(config));
        if let Some(api) = &self.api_state {
            api.reconfigure(&in_force);
        }
        if (old.auto_watch != config.auto_watch
            || format!("{:?}", old.passive_dns) != format!("{:?}", config.passive_dns))
            && let Err(e) = self.restart_auto_watch(config)
        {
            done.applied
                .retain(|n| !["auto_watch", "passive_dns"].contains(n));
            done.failed.push(("auto_watch", format!("{e:#}")));
            in_force.auto_watch = old.auto_watch;
            in_force.passive_dns = old.passive_dns.clone();
        }
        let (jobs, list) = {
            let mut w = self.watching.lock().expect("watching lock");
            w.listed(config);
            w.all_with(&self.monitor)
        };
        if let Err(e) = self.monitor.watch(&list).await {
            tracing::error!("closing the windows of domains no longer watched: {e}");
        }
        let _ = self.reload.send(jobs).await;
        let mut alerts = self.alerts.lock().await;
        for w in std::mem::take(&mut *alerts) {
            w.stop().await;
        }
        match delivery_workers(&in_force, &self.monitor, &self.clock, &self.stop) {
            Ok(workers) => *alerts = workers,
            Err(e) => tracing::error!("alert and forward delivery not restarted: {e}"),
        }
        *self.in_force.lock().expect("in force lock") = in_force;
        done
    }

    /// Stops the auto-watcher and the passive DNS lookups, and starts them
    /// again with `config`'s settings (or not, when it has none): the
    /// auto-watched domains are read back from the database.
    fn restart_auto_watch(&self, config: &Config) -> anyhow::Result<()> {
        let auto = auto_watched(config)?;
        if let Some(stop) = self.auto_stop.lock().expect("auto stop lock").take() {
            stop.cancel();
        }
        self.watching.lock().expect("watching lock").auto = auto;
        if config.auto_watch.is_some() || !config.passive_dns.is_empty() {
            let stop = self.stop.child_token();
            *self.auto_stop.lock().expect("auto stop lock") = Some(stop.clone());
            let clock = (self.clock.clone(), stop);
            spawn_auto_watch(
                config,
                &self.watching,
                &self.monitor,
                &self.reload,
                clock,
                &self.tasks,
            );
        }
        Ok(())
    }
}

/// The auto-watched domains as the database remembers them, when
/// `config` auto-watches.
pub(super) fn auto_watched(
    config: &Config,
) -> anyhow::Result<Option<crate::autowatch::AutoWatched>> {
    let Some(settings) = config.auto_watch else {
        return Ok(None);
    };
    let mut auto = crate::autowatch::AutoWatched::new(settings);
    auto.restore(store::Store::open(&config.database)?.auto_watched()?);
    Ok(Some(auto))
}

/// What the scheduler takes from the watchlist.
pub(super) fn scheduler_options(config: &Config) -> SchedulerOptions {
    SchedulerOptions {
        concurrency: config.concurrency,
        fast_recheck: config.fast_recheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level field names of a `{:?}`-printed struct.
    fn fields(debug: &str) -> Vec<String> {
        let body = &debug[debug.find('{').expect("a struct") + 1..];
        let (mut depth, mut names, mut word) = (0i32, Vec::new(), String::new());
        let mut in_str = false;
        let mut prev = ' ';
        for c in body.chars() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                _ if in_str => {}
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => depth -= 1,
                ':' if depth == 0 && !word.trim().is_empty() => {
                    names.push(word.trim().to_string());
                    word.clear();
                }
                ',' if depth == 0 => word.clear(),
                _ if depth == 0 => word.push(c),
                _ => {}
            }
            prev = c;
        }
        names
    }

    /// Every field of the configuration is a setting a reload compares
    /// (and so applies or names), or declared not to be one.
    #[test]
    fn every_field_of_the_config_is_compared_by_a_reload() {
        let config =
            Config::from_yaml("domains: [example.de]\n", std::path::Path::new("w.yaml")).unwrap();
        let all = fields(&format!("{config:?}"));
        assert!(all.len() > 20, "{all:?}");
        for f in &all {
            assert!(
                SETTINGS.contains(&f.as_str()) || NOT_SETTINGS.contains(&f.as_str()),
                "Config::{f} is neither compared by a reload nor declared not a setting"
            );
        }
        for s in SETTINGS.iter().chain(NOT_SETTINGS) {
            assert!(all.iter().any(|f| f == s), "{s} is no field of Config");
        }
    }

    #[test]
    fn a_changed_setting_is_named_and_the_rest_are_not() {
        let a =
            Config::from_yaml("domains: [example.de]\n", std::path::Path::new("w.yaml")).unwrap();
        let b = Config::from_yaml(
            "timeout: 9s\nlisten: '127.0.0.1:8899'\ndomains: [example.de]\n",
            std::path::Path::new("w.yaml"),
        )
        .unwrap();
        assert_eq!(changed(&a, &b), ["listen", "timeout"]);
        assert!(changed(&a, &a).is_empty());
    }
}
