//! `mxwatch bounces`: parse, ingest and list bounce feeds.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Bounces { command } = &cli.command else {
        bail!("internal: `bounces::run` called for another command");
    };
    match command {
        BounceCommand::Parse { .. } => parse(command),
        BounceCommand::Ingest { .. } => ingest(cli, command),
        BounceCommand::List { .. } => list(cli, command),
    }
}

fn parse(command: &BounceCommand) -> anyhow::Result<ExitCode> {
    let BounceCommand::Parse {
        paths,
        format,
        json,
    } = command
    else {
        bail!("internal: `bounces::parse` called for another command");
    };
    let mut out = Output::new();
    let (clean, _) = parse_inputs(paths, *format, false, None, |list, _| {
        for b in list {
            let line = if *json {
                serde_json::to_string(&b)?
            } else {
                bounce_text(&b)
            };
            out.line(&line)?;
        }
        Ok(())
    })?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn ingest(cli: &Context, command: &BounceCommand) -> anyhow::Result<ExitCode> {
    let BounceCommand::Ingest {
        paths,
        format,
        max_age,
    } = command
    else {
        bail!("internal: `bounces::ingest` called for another command");
    };
    let config = cli.settings()?;
    let range = mxwatch::bounce::TimeRange {
        max_age: max_age.unwrap_or(mxwatch::bounce::TimeRange::FILE_MAX_AGE),
        ..config.bounce_times
    };
    runtime()?.block_on(async {
        let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
        type Batch = (Vec<Bounce>, Vec<mxwatch::bounce::Delivered>);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(16);
        let w = writer.clone();
        let stored = tokio::spawn(async move {
            let (mut n, mut reinstated, mut delivered) = (0, 0, 0);
            while let Some((list, sent)) = rx.recv().await {
                let intake = w.feed(list, sent, SystemClock.now()).await?;
                n += intake.stored;
                reinstated += intake.reinstated;
                delivered += intake.delivered;
            }
            anyhow::Ok((n, reinstated, delivered))
        });
        let paths = paths.clone();
        let format = *format;
        let (clean, parsed) = tokio::task::spawn_blocking(move || {
            parse_inputs(&paths, format, true, Some(range), |list, sent| {
                tx.blocking_send((list, sent))
                    .map_err(|_| anyhow::anyhow!("the database writer stopped"))
            })
        })
        .await??;
        let (new, reinstated, delivered) = stored.await??;
        drop(writer);
        task.await?;
        let delivered = if delivered > 0 {
            format!(", {delivered} new deliveries counted")
        } else {
            String::new()
        };
        say!(
            "{parsed} bounces parsed, {new} new stored, {} already known, {reinstated} \
                     suppressions reinstated{delivered}; database {}{}",
            parsed - new,
            config.database.display(),
            if clean {
                ""
            } else {
                " (some inputs had problems: see above)"
            }
        );
        Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn list(cli: &Context, command: &BounceCommand) -> anyhow::Result<ExitCode> {
    let BounceCommand::List {
        domain: d,
        since,
        kind,
        json,
    } = command
    else {
        bail!("internal: `bounces::list` called for another command");
    };
    let d = d.as_deref().map(domain).transpose()?;
    let since = since.as_deref().map(parse_time).transpose()?;
    let store = cli.store()?;
    let rows = store.stored_bounces(d.as_ref().map(|d| d.as_str()), since, *kind)?;
    say_if_none(rows.is_empty(), *json, || {
        let of = kind.map_or(String::new(), |k| format!(" of kind {k}"));
        let at = d.as_ref().map_or(String::new(), |d| format!(" for {d}"));
        format!("no bounces stored{of}{at}{}", since_words(since))
    });
    print_lines(rows.iter().map(|r| {
        // The verdict it holds now (null: stored before verdicts were kept).
        if *json {
            report::stored_bounce_json(r).to_string()
        } else {
            format!(
                "{:<9} {}",
                r.verdict.map_or("-", |v| v.as_str()),
                bounce_text(&r.bounce)
            )
        }
    }))?;
    Ok(ExitCode::SUCCESS)
}
