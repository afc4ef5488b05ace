//! `mxwatch verdict`: judge one bounce from its parts.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Verdict {
        recipient,
        at,
        status,
        reply_code,
        diagnostic,
        remote_mta,
        json,
    } = &cli.command
    else {
        bail!("internal: `verdict::run` called for another command");
    };
    let parts = mxwatch::judge::Parts {
        recipient: recipient.clone(),
        at: at.as_deref().map(parse_time).transpose()?,
        status: status.clone(),
        reply_code: *reply_code,
        diagnostic: diagnostic.clone(),
        remote_mta: remote_mta.clone(),
    };
    let config = cli.settings()?;
    let store = open_store(&config)?;
    let mxwatch::judge::Ruling {
        bounce,
        at,
        judgement,
    } = match mxwatch::judge::judge(&store, &config.judging(), parts, SystemClock.now()) {
        Ok(a) => a,
        // Too little or malformed: a usage error, nothing guessed.
        Err(e @ (JudgeError::Parts(_) | JudgeError::Recipient(_))) => {
            say!("mxwatch: verdict: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    if *json {
        print_lines([report::judgement_json(&bounce, at, &judgement).to_string()])?;
    } else {
        Output::new().text(&report::judgement_text(&bounce, &judgement))?;
    }
    Ok(ExitCode::SUCCESS)
}
