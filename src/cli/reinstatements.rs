//! `mxwatch reinstatements`: suppressions to undo.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Reinstatements { since, json } = &cli.command else {
        bail!("internal: `reinstatements::run` called for another command");
    };
    let since = since.as_deref().map(parse_time).transpose()?;
    let store = cli.store()?;
    let rows = store.reinstatements(since)?;
    say_if_none(rows.is_empty(), *json, || {
        format!("no reinstatements{}", since_words(since))
    });
    print_rows(
        &rows,
        *json,
        report::reinstatement_json,
        report::reinstatement_text,
    )?;
    Ok(ExitCode::SUCCESS)
}
