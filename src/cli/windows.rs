//! `mxwatch windows`: change windows, and withdrawing one known to be false.

use super::*;
use mxwatch::store::{MAX_REASON, Withdrawal};

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Windows {
        command,
        active,
        json,
    } = &cli.command
    else {
        bail!("internal: `windows::run` called for another command");
    };
    if let Some(WindowsCommand::Close { id, reason, json }) = command {
        return close(cli, id, reason, *json);
    }
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

/// `windows close ID --reason TEXT`, through a writer of its own (a
/// running daemon's verdicts follow within a minute).
fn close(cli: &Context, id: &str, reason: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id = parse_id(id)?;
    let reason = parse_reason(reason)?;
    let config = cli.settings()?;
    let now = SystemClock.now();
    let done = runtime()?.block_on(async {
        let (writer, task) = mxwatch::store::Writer::start(&config.database, config.judging())?;
        let done = writer.withdraw(id, &reason, now).await?;
        drop(writer);
        task.await?;
        anyhow::Ok(done)
    })?;
    match done {
        Withdrawal::NoSuchWindow => bail!("no window #{id} (`mxwatch windows` lists them)"),
        Withdrawal::AlreadyWithdrawn(w) => {
            say!(
                "window #{id} was withdrawn before ({}); nothing changed",
                w.close_note.as_deref().unwrap_or("no reason kept")
            );
            Ok(ExitCode::SUCCESS)
        }
        Withdrawal::Withdrawn { window, suppressed } => {
            if json {
                let v = serde_json::json!({
                    "window": report::window_json(&window, now),
                    "suppressed": suppressed,
                });
                print_lines(std::iter::once(v.to_string()))?;
            } else {
                print_lines(
                    std::iter::once(report::window_text(&window, now))
                        .chain(suppressed.iter().map(|r| format!("  now suppress: {r}"))),
                )?;
                say!(
                    "window #{id} withdrawn; {} turned to suppress",
                    mxwatch::event::plural(suppressed.len(), "verdict")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A window id as `windows` prints it: `#12` or `12`.
fn parse_id(s: &str) -> anyhow::Result<i64> {
    s.trim()
        .trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Usage(format!("{s:?} is not a window id (`#12` or `12`)")).into())
}

/// A reason: some words, on one line, at most [`MAX_REASON`] bytes.
fn parse_reason(s: &str) -> anyhow::Result<String> {
    let r = s.trim();
    if r.is_empty() {
        return Err(Usage("--reason is empty: say why the window is false".into()).into());
    }
    if r.len() > MAX_REASON {
        return Err(Usage(format!(
            "--reason is {} bytes; at most {MAX_REASON}",
            r.len()
        ))
        .into());
    }
    if r.chars().any(char::is_control) {
        return Err(Usage(
            "--reason holds a control character (a newline?): one line, please".into(),
        )
        .into());
    }
    Ok(r.to_string())
}
