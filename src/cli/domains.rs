//! `mxwatch domains`: the watched domains (listed and auto-watched), each
//! with its provider, last check and open window.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Domains { auto, json } = &cli.command else {
        bail!("internal: `domains::run` called for another command");
    };
    let config = cli.settings()?;
    // Before the first run there is no database: the listed domains are
    // all there is, never checked.
    let store = match config.database.exists() {
        true => Some(open_store(&config)?),
        false => None,
    };
    let now = SystemClock.now();
    let providers = config.providers();
    let auto_watched = match &store {
        Some(s) => s.auto_watched()?,
        None => Vec::new(),
    };
    let mut names: Vec<(DomainName, Option<mxwatch::autowatch::Entry>)> = Vec::new();
    if !*auto {
        names.extend(config.domains.iter().map(|d| (d.name.clone(), None)));
    }
    for (d, e) in auto_watched {
        match names.iter_mut().find(|(n, _)| *n == d) {
            Some(slot) => slot.1 = Some(e),
            None => names.push((d, Some(e))),
        }
    }
    let open = match &store {
        Some(s) => s.windows(Some(now))?,
        None => Vec::new(),
    };
    let listed = |d: &DomainName| config.domains.iter().any(|w| w.name == *d);
    let mut rows = Vec::with_capacity(names.len());
    for (d, entry) in names {
        let current = match &store {
            Some(s) => s.as_of(&d, now)?,
            None => Vec::new(),
        };
        let consensus = current
            .into_iter()
            .find(|a| a.upstream == mxwatch::store::CONSENSUS);
        let provider: Vec<String> = consensus
            .as_ref()
            .map(|a| {
                providers
                    .of_set(&a.run.observation.mx)
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        let window = open
            .iter()
            .find(|w| w.domain.as_deref() == Some(d.as_str()))
            .cloned();
        rows.push(report::WatchedDomain {
            listed: listed(&d),
            domain: d,
            auto: entry,
            provider,
            last_check: consensus.map(|a| a.run.last_seen),
            window,
        });
    }
    say_if_none(rows.is_empty(), *json, || {
        if *auto {
            "no auto-watched domains"
        } else {
            "no watched domains"
        }
        .to_string()
    });
    print_rows(&rows, *json, report::watched_json, report::watched_text)?;
    Ok(ExitCode::SUCCESS)
}
