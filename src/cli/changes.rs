//! `mxwatch changes`: changes across domains.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Changes {
        since,
        domain: d,
        json,
    } = &cli.command
    else {
        bail!("internal: `changes::run` called for another command");
    };
    let d = d.as_deref().map(domain).transpose()?;
    let since = since.as_deref().map(parse_time).transpose()?;
    let store = cli.store()?;
    let rows = store.changes(since, d.as_ref())?;
    say_if_none(rows.is_empty(), *json, || {
        let of = d.as_ref().map_or(String::new(), |d| format!(" of {d}"));
        format!("no changes{of}{}", since_words(since))
    });
    print_rows(&rows, *json, report::change_json, report::change_text)?;
    Ok(ExitCode::SUCCESS)
}
