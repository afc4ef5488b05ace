//! `mxwatch history`: a domain's MX history.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::History {
        command,
        domain: d,
        since,
        at,
        json,
    } = &cli.command
    else {
        bail!("internal: `history::run` called for another command");
    };
    match command {
        Some(HistoryCommand::Import {
            format,
            domain: about,
            files,
        }) => return import(cli, *format, about.as_deref(), files),
        Some(HistoryCommand::Lookup { domains }) => return lookup(cli, domains),
        Some(HistoryCommand::Export {
            format: ExportFormat::Replay,
            since,
            domains,
        }) => return export(cli, domains, since.as_deref()),
        None => {}
    }
    let d = domain(d.as_deref().unwrap_or_default())?;
    let store = cli.store()?;
    if let Some(e) = store.auto_watched_one(&d)? {
        say!(
            "{d} is auto-watched (unlisted; it bounced): since {}, last bounce {}",
            report::time(e.since),
            report::time(e.last_bounce)
        );
    }
    if let Some(at) = at {
        let at = parse_time(at)?;
        let rows = store.as_of(&d, at)?;
        if rows.is_empty() {
            say!("no history of {d} at or before {}", report::time(at));
        }
        return print_lines(rows.iter().map(|a| {
            if *json {
                report::as_of_json(a).to_string()
            } else {
                let note = match (a.observed, a.next_change) {
                    (true, _) => String::new(),
                    (false, Some(n)) => format!(
                        "  [not observed at that moment; next answer seen {}]",
                        report::time(n)
                    ),
                    (false, None) => "  [after the last check]".into(),
                };
                format!("{}{note}", report::run_text(&a.run))
            }
        }))
        .map(|_| ExitCode::SUCCESS);
    }
    let since = since.as_deref().map(parse_time).transpose()?;
    let rows = store.history(&d, since)?;
    say_if_none(rows.is_empty(), *json, || {
        format!("no history of {d}{}", since_words(since))
    });
    print_rows(&rows, *json, report::run_json, report::run_text)?;
    Ok(ExitCode::SUCCESS)
}

/// `history import`: passive DNS exports into the history.
fn import(
    cli: &Context,
    format: mxwatch::passive::PassiveSource,
    about: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    use mxwatch::passive::{self, PassiveSource};
    let about = about.map(domain).transpose()?;
    let mut clean = true;
    let mut sightings = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let read = match (format, &about) {
            (PassiveSource::Dnsdb, _) => passive::read_dnsdb(&text),
            (PassiveSource::Securitytrails, Some(d)) => passive::read_securitytrails(&text, d),
            (PassiveSource::Securitytrails, None) => {
                bail!("a SecurityTrails answer does not name its domain: pass --domain")
            }
        }
        // An import is the operator's file: any domain it names, unless
        // `--domain` says which; never a sighting after now.
        .bound(
            about.as_ref(),
            mxwatch::clock::Clock::now(&mxwatch::clock::SystemClock),
        );
        for (line, p) in &read.problems {
            clean = false;
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            say!("{}{at}: {p}", path.display());
        }
        if read.sightings.is_empty() && read.problems.is_empty() {
            say!(
                "{}: no MX sighting in it ({} records of other types passed over)",
                path.display(),
                read.passed
            );
        }
        sightings.extend(read.sightings);
    }
    let config = cli.settings()?;
    runtime()?.block_on(keep(&config, sightings))?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Stores sightings (and the excursions among them, per domain and
/// source), and says what was added.
async fn keep(
    config: &Config,
    mut sightings: Vec<mxwatch::passive::Sighting>,
) -> anyhow::Result<()> {
    sightings.sort_by(|a, b| {
        (&a.domain, a.source, a.first_seen).cmp(&(&b.domain, b.source, b.first_seen))
    });
    let mut excursions = Vec::new();
    for group in sightings.chunk_by(|a, b| a.domain == b.domain && a.source == b.source) {
        excursions.extend(mxwatch::passive::excursions(group));
    }
    let n = sightings.len();
    let domains = sightings.chunk_by(|a, b| a.domain == b.domain).count();
    let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
    let added = writer
        .passive(sightings, excursions, SystemClock.now())
        .await?;
    drop(writer);
    task.await?;
    say!(
        "{n} sightings of {domains} domains: {} runs and {} windows added, {} suppressions reinstated; history in {}",
        added.runs,
        added.windows,
        added.reinstated,
        config.database.display()
    );
    Ok(())
}

/// `history lookup`: the passive DNS providers asked now.
fn lookup(cli: &Context, names: &[String]) -> anyhow::Result<ExitCode> {
    let names = names
        .iter()
        .map(|d| domain(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = cli.settings()?;
    // A key that cannot be read stops this command as it stops `run`.
    if let Some(e) = config.lookup_secret_problem() {
        return Err(e.into());
    }
    if config.passive_dns.is_empty() {
        bail!(
            "no passive_dns: provider with a key in {}",
            config.source.display()
        );
    }
    runtime()?.block_on(async {
        let http = mxwatch::http_client();
        let mut clean = true;
        let mut sightings = Vec::new();
        for provider in &config.passive_dns {
            // The provider's limits hold for one command too.
            let mut budget = mxwatch::passive_dns::Budget::default();
            for d in &names {
                match mxwatch::passive_dns::lookup(
                    &http,
                    provider,
                    d,
                    &mut budget,
                    mxwatch::clock::Clock::now(&mxwatch::clock::SystemClock),
                )
                .await
                {
                    Ok(read) => {
                        for (_, p) in &read.problems {
                            clean = false;
                            say!("{d}: {}: {p}", provider.source);
                        }
                        sightings.extend(read.sightings);
                    }
                    Err(
                        e @ (mxwatch::passive_dns::LookupError::Quota { .. }
                        | mxwatch::passive_dns::LookupError::Budget { .. }),
                    ) => {
                        clean = false;
                        say!("mxwatch: {e}; not asking it again now");
                        break;
                    }
                    Err(e) => {
                        clean = false;
                        say!("{d}: {e}");
                    }
                }
            }
        }
        keep(&config, sightings).await?;
        anyhow::Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// `history export --format replay`: each upstream's runs (not the
/// consensus, which replay computes again, nor passive DNS, which replay
/// takes with `--dnsdb`) as observations at their first and last check.
fn export(cli: &Context, names: &[String], since: Option<&str>) -> anyhow::Result<ExitCode> {
    let names: Vec<DomainName> = names.iter().map(|d| domain(d)).collect::<Result<_, _>>()?;
    let since = since.map(parse_time).transpose()?;
    let store = cli.store()?;
    let mut lines = Vec::new();
    for d in &names {
        let runs = store.history(d, since)?;
        let recorded: Vec<_> = runs
            .iter()
            .filter(|r| {
                r.observation.upstream != mxwatch::store::CONSENSUS
                    && !r.observation.upstream.starts_with("passive:")
            })
            .collect();
        if recorded.is_empty() {
            say!("no observations of {d} to export");
        }
        for r in recorded {
            let mut at = vec![r.first_seen];
            if r.last_seen != r.first_seen {
                at.push(r.last_seen);
            }
            for t in at.into_iter().filter(|t| since.is_none_or(|s| *t >= s)) {
                lines.push((t, report::replay_line(d, t, &r.observation).to_string()));
            }
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    print_lines(lines.into_iter().map(|(_, l)| l))?;
    Ok(ExitCode::SUCCESS)
}
