//! `mxwatch reinstatements`: suppressions to undo.

use super::*;

pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let Command::Reinstatements { since, json } = &cli.command else {
        bail!("internal: `reinstatements::run` called for another command");
    };
    let since = since.as_deref().map(parse_time).transpose()?;
    let store = open_store(cli)?;
    let rows = store.reinstatements(since)?;
    print_lines(rows.iter().map(|r| {
        if *json {
            report::reinstatement_json(r).to_string()
        } else {
            report::reinstatement_text(r)
        }
    }))?;
    Ok(ExitCode::SUCCESS)
}
