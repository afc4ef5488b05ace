//! `mxwatch alerts` and `mxwatch forward`: the deliveries of the outbox to
//! alert and forward targets (one engine, two kinds of consumer).

use super::*;
use mxwatch::store::{Consumers, DeliveryStatus, DeliveryWrite};

pub fn list(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Alerts {
        command: AlertCommand::List { failed, json },
    } = &cli.command
    else {
        bail!("internal: `alerts::list` called for another command");
    };
    let status = failed.then_some(DeliveryStatus::Failed);
    print_deliveries(cli, Consumers::Alerts, status, *json)
}

pub fn retry(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Alerts {
        command: AlertCommand::Retry { id },
    } = &cli.command
    else {
        bail!("internal: `alerts::retry` called for another command");
    };
    let write = DeliveryWrite::Retry { delivery: *id };
    change(cli, Consumers::Alerts, *id, DeliveryStatus::Failed, write)?;
    Ok(ExitCode::SUCCESS)
}

/// `mxwatch forward list|retry|release`.
pub fn forward(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Forward { command } = &cli.command else {
        bail!("internal: `alerts::forward` called for another command");
    };
    let whose = Consumers::Forward;
    match command {
        ForwardCommand::List { failed, held, json } => {
            let status = match (failed, held) {
                (true, true) => bail!("give --failed or --held, not both"),
                (true, false) => Some(DeliveryStatus::Failed),
                (false, true) => Some(DeliveryStatus::Held),
                (false, false) => None,
            };
            print_deliveries(cli, whose, status, *json)
        }
        ForwardCommand::Retry { id } => {
            let write = DeliveryWrite::Retry { delivery: *id };
            change(cli, whose, *id, DeliveryStatus::Failed, write)?;
            Ok(ExitCode::SUCCESS)
        }
        ForwardCommand::Release { id } => {
            let write = DeliveryWrite::Release { delivery: *id };
            change(cli, whose, *id, DeliveryStatus::Held, write)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `mxwatch undo list|retry|keep`.
pub fn undo(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Undo { command } = &cli.command else {
        bail!("internal: `alerts::undo` called for another command");
    };
    let whose = Consumers::Undo;
    match command {
        UndoCommand::List {
            failed,
            dry_run,
            waiting,
            json,
        } => {
            let (status, outcome) = match (failed, dry_run, waiting) {
                (true, _, _) => (Some(DeliveryStatus::Failed), None),
                (_, true, _) => (None, Some(mxwatch::undo::outcome::DRY_RUN)),
                (_, _, true) => (Some(DeliveryStatus::Pending), Some("waiting")),
                _ => (None, None),
            };
            let store = cli.store()?;
            let mut rows = store.deliveries_with(whose, status, outcome, None)?;
            let which = outcome.or(status.map(|s| s.as_str()));
            say_if_none(rows.is_empty(), *json, || none(whose, which));
            for d in &mut rows {
                d.target = whose.name(&d.target).to_string();
            }
            print_rows(&rows, *json, report::delivery_json, report::delivery_text)?;
            Ok(ExitCode::SUCCESS)
        }
        UndoCommand::Retry { id } => {
            let write = DeliveryWrite::Retry { delivery: *id };
            change(cli, whose, *id, DeliveryStatus::Failed, write)?;
            Ok(ExitCode::SUCCESS)
        }
        UndoCommand::Keep { address } => {
            let Some((address, _)) = mxwatch::bounce::normalise_address(address) else {
                bail!("{address:?} is not an email address");
            };
            let config = cli.settings()?;
            let at = mxwatch::clock::SystemClock.now();
            let write = DeliveryWrite::Keep {
                address: address.clone(),
                at,
            };
            runtime()?.block_on(async {
                let (writer, task) =
                    mxwatch::store::Writer::start(&config.database, config.judging())?;
                writer.delivery(write).await?;
                drop(writer);
                task.await?;
                anyhow::Ok(())
            })?;
            eprintln!("{address} is kept: no undo target will take it off a list");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_deliveries(
    cli: &Context,
    whose: Consumers,
    status: Option<DeliveryStatus>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = cli.store()?;
    let mut rows = store.deliveries(whose, status)?;
    say_if_none(rows.is_empty(), json, || none(whose, status.map(|s| s.as_str())));
    for d in &mut rows {
        d.target = whose.name(&d.target).to_string();
    }
    print_rows(&rows, json, report::delivery_json, report::delivery_text)?;
    Ok(ExitCode::SUCCESS)
}

/// Changes delivery `id` of `whose` targets, which must be in `from`,
/// through the writer (a running daemon picks it up, in order).
fn change(
    cli: &Context,
    whose: Consumers,
    id: i64,
    from: DeliveryStatus,
    write: DeliveryWrite,
) -> anyhow::Result<()> {
    let config = cli.settings()?;
    let store = open_store(&config)?;
    let command = match whose {
        Consumers::Alerts => "alerts",
        Consumers::Forward => "forward",
        Consumers::Undo => "undo",
    };
    let Some(d) = store
        .delivery(id)?
        .filter(|d| Consumers::of(&d.target) == whose)
    else {
        anyhow::bail!("no delivery {id} (see `mxwatch {command} list`)");
    };
    if d.status != from {
        anyhow::bail!(
            "delivery {id} is {}, not {}: nothing to do",
            d.status.as_str(),
            from.as_str()
        );
    }
    runtime()?.block_on(async {
        let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
        writer.delivery(write).await?;
        drop(writer);
        task.await?;
        anyhow::Ok(())
    })?;
    let what = match from {
        DeliveryStatus::Held => "is released: it will be sent as it came",
        _ => "will be tried again",
    };
    eprintln!(
        "delivery {id} ({} to {}) {what}",
        d.event,
        whose.name(&d.target)
    );
    Ok(())
}

/// What an empty listing of deliveries says.
fn none(whose: Consumers, which: Option<&str>) -> String {
    let what = match whose {
        Consumers::Alerts => "alert deliveries",
        Consumers::Forward => "forwarded events",
        Consumers::Undo => "undo actions",
    };
    match which {
        Some(w) => format!("no {} {what}", w.replace('_', " ")),
        None => format!("no {what}"),
    }
}
