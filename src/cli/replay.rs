//! `mxwatch replay`: the daemon's verdicts over recorded checks and bounces.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Replay {
        observations,
        bounces,
        dnsdb,
        json,
    } = &cli.command
    else {
        bail!("internal: `replay::run` called for another command");
    };
    // The watchlist's settings when there is one; the defaults otherwise.
    // Its domains are not the watched set: the recording's are.
    let (config, used) = if cli.config.exists() {
        (
            cli.load()?,
            format!("the settings of {}", cli.config.display()),
        )
    } else {
        (
            defaults()?,
            format!(
                "default settings (no watchlist at {})",
                cli.config.display()
            ),
        )
    };
    let mut clean = true;
    let recorded = match observations {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (ok, bad) = mxwatch::replay::read_observations(&text);
            for (line, e) in bad {
                say!("{}:{line}: {e}", path.display());
                clean = false;
            }
            ok
        }
        None => Vec::new(),
    };
    let mut passive = Vec::new();
    for path in dnsdb {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let read = mxwatch::passive::read_dnsdb(&text).bound(
            None,
            mxwatch::clock::Clock::now(&mxwatch::clock::SystemClock),
        );
        for (line, e) in &read.problems {
            clean = false;
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            say!("{}{at}: {e}", path.display());
        }
        passive.extend(read.sightings);
    }
    let (mut all, mut delivered) = (Vec::new(), Vec::new());
    let (parsed_clean, _) = parse_inputs(bounces, None, false, None, |list, sent| {
        all.extend(list);
        delivered.extend(sent);
        Ok(())
    })?;
    clean &= parsed_clean;
    let (out, summary) = runtime()?.block_on(mxwatch::replay::replay(
        &config, &recorded, &all, &delivered, &passive,
    ))?;
    print_lines(out.iter().map(|r| {
        let at = r.bounce.at.unwrap_or_default();
        if *json {
            report::replayed_json(&r.bounce, &r.final_judgement, r.initial.verdict).to_string()
        } else {
            format!(
                "{}  {:<32} {:<9} (when it arrived: {}){}",
                report::time(at),
                r.bounce.recipient,
                r.final_judgement.verdict.as_str(),
                r.initial.verdict.as_str(),
                if r.is_reinstatement() {
                    "  REINSTATE"
                } else {
                    ""
                }
            )
        }
    }))?;
    let watched: std::collections::HashSet<_> = recorded.iter().map(|r| &r.domain).collect();
    say!(
        "{} bounces replayed: {} suppressions prevented, {} reinstatements recommended \
         (judged with {used}; the watched domains are the {} the recording checks)",
        summary.bounces,
        summary.prevented,
        summary.reinstatements,
        watched.len()
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
