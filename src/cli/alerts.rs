//! `mxwatch alerts`: the alert outbox and its deliveries.

use super::*;

pub fn list(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Alerts {
        command: AlertCommand::List { failed, json },
    } = &cli.command
    else {
        bail!("internal: `alerts::list` called for another command");
    };
    let store = cli.store()?;
    let rows = store.deliveries(*failed)?;
    print_rows(&rows, *json, report::delivery_json, report::delivery_text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn retry(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Alerts {
        command: AlertCommand::Retry { id },
    } = &cli.command
    else {
        bail!("internal: `alerts::retry` called for another command");
    };
    let config = cli.settings()?;
    let store = open_store(&config)?;
    let Some(d) = store.delivery(*id)? else {
        anyhow::bail!("no delivery {id} (see `mxwatch alerts list`)");
    };
    if d.status != mxwatch::store::DeliveryStatus::Failed {
        anyhow::bail!(
            "delivery {id} is {}, not failed: nothing to retry",
            d.status.as_str()
        );
    }
    runtime()?.block_on(async {
        let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
        writer
            .delivery(mxwatch::store::DeliveryWrite::Retry { delivery: *id })
            .await?;
        drop(writer);
        task.await?;
        anyhow::Ok(())
    })?;
    eprintln!(
        "delivery {id} ({} to {}) will be tried again",
        d.event, d.target
    );
    Ok(ExitCode::SUCCESS)
}
