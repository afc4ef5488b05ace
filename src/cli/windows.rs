//! `mxwatch windows`: change windows.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Windows { active, json } = &cli.command else {
        bail!("internal: `windows::run` called for another command");
    };
    let store = cli.store()?;
    let now = SystemClock.now();
    let rows = store.windows(active.then_some(now))?;
    say_if_none(rows.is_empty(), *json, || {
        if *active {
            "no open windows"
        } else {
            "no windows"
        }
        .to_string()
    });
    print_lines(rows.iter().map(|w| {
        if *json {
            report::window_json(w, now).to_string()
        } else {
            report::window_text(w, now)
        }
    }))?;
    Ok(ExitCode::SUCCESS)
}
