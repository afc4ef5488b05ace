//! `mxwatch alerts` and `mxwatch forward`: the deliveries of the outbox to
//! alert and forward targets (one engine, two kinds of consumer).

use super::*;
use mxwatch::store::{Consumers, DeliveryStatus, DeliveryWrite};

#[derive(Subcommand)]
pub(super) enum AlertCommand {
    /// Deliveries, newest first: target, event, status, attempts, last error.
    List {
        /// Only those given up on (refused, or too old to retry).
        #[arg(long)]
        failed: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try a failed delivery again (a running daemon picks it up, in order).
    Retry {
        /// The delivery's id, as `alerts list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every failed delivery (of `--target` only, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this target's.
        #[arg(long, requires = "all")]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
pub(super) enum ForwardCommand {
    /// Forward deliveries, newest first: target, event, status, how it is
    /// sent or why it is held, attempts, last error.
    List {
        /// Only those given up on (refused, or too old to retry).
        #[arg(long)]
        failed: bool,
        /// Only those held back by their verdict, waiting for `forward release`.
        #[arg(long)]
        held: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try a failed delivery again (a running daemon picks it up, in order).
    Retry {
        /// The delivery's id, as `forward list` shows it.
        id: i64,
    },
    /// Send a held delivery as it came (the operator overrides its verdict).
    Release {
        /// The delivery's id, as `forward list --held` shows it.
        id: i64,
    },
}

#[derive(Subcommand)]
pub(super) enum UndoCommand {
    /// Undo actions, newest first: target, address, outcome, attempts, last error.
    List {
        /// Only those that failed (the provider's answer says why).
        #[arg(long, group = "which")]
        failed: bool,
        /// Only those a dry run recorded (what would have been removed).
        #[arg(long, group = "which")]
        dry_run: bool,
        /// Only those waiting for the hourly cap.
        #[arg(long, group = "which")]
        waiting: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try a failed undo again (a running daemon picks it up, in order).
    Retry {
        /// The undo's id, as `undo list` shows it.
        id: i64,
    },
    /// Never take ADDRESS off a list, whatever its verdicts say.
    Keep {
        /// The address to keep suppressed (case does not matter).
        address: String,
    },
}

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
        command: AlertCommand::Retry { id, all, target },
    } = &cli.command
    else {
        bail!("internal: `alerts::retry` called for another command");
    };
    if let Some(id) = id {
        let write = DeliveryWrite::Retry { delivery: *id };
        change(cli, Consumers::Alerts, *id, DeliveryStatus::Failed, write)?;
        return Ok(ExitCode::SUCCESS);
    }
    debug_assert!(*all);
    let config = cli.settings()?;
    let store = open_store(&config)?;
    let failed: Vec<i64> = store
        .deliveries(Consumers::Alerts, Some(DeliveryStatus::Failed))?
        .into_iter()
        .filter(|d| target.as_ref().is_none_or(|t| *t == d.target))
        .map(|d| d.id)
        .collect();
    if failed.is_empty() {
        let of = target
            .as_ref()
            .map_or(String::new(), |t| format!(" of {t}"));
        say!("no failed alert deliveries{of}: nothing to retry");
        return Ok(ExitCode::SUCCESS);
    }
    let n = failed.len();
    let writes = failed
        .into_iter()
        .map(|delivery| DeliveryWrite::Retry { delivery })
        .collect();
    write(&config, DeliveryWrite::Batch(writes))?;
    let s = if n == 1 { "y" } else { "ies" };
    say!("{n} failed alert deliver{s} will be tried again, in order");
    Ok(ExitCode::SUCCESS)
}

/// One write through a writer of its own (a running daemon picks it up).
fn write(config: &mxwatch::config::Config, w: DeliveryWrite) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
        writer.delivery(w).await?;
        drop(writer);
        task.await?;
        anyhow::Ok(())
    })
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
            self::write(&config, write)?;
            say!("{address} is kept: no undo target will take it off a list");
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
    say_if_none(rows.is_empty(), json, || {
        none(whose, status.map(|s| s.as_str()))
    });
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
    let command = whose.command();
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
    self::write(&config, write)?;
    let what = match from {
        DeliveryStatus::Held => "is released: it will be sent as it came",
        _ => "will be tried again",
    };
    say!(
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
