//! `mxwatch history`: a domain's MX history.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::History {
        domain: d,
        since,
        at,
        json,
    } = &cli.command
    else {
        bail!("internal: `history::run` called for another command");
    };
    let d = domain(d)?;
    let store = cli.store()?;
    if let Some(at) = at {
        let rows = store.as_of(&d, parse_time(at)?)?;
        if rows.is_empty() {
            eprintln!("no history of {d} at or before {at}");
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
    if rows.is_empty() {
        eprintln!("no history of {d}");
    }
    print_rows(&rows, *json, report::run_json, report::run_text)?;
    Ok(ExitCode::SUCCESS)
}
