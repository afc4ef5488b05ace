//! `mxwatch check`: ask the upstreams about domains now.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Check {
        domains,
        upstream,
        json,
    } = &cli.command
    else {
        bail!("internal: `check::run` called for another command");
    };
    let names = domains
        .iter()
        .map(|d| domain(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A watchlist is optional here: use it when it exists.
    let config = if cli.config.exists() {
        Some(cli.load()?)
    } else {
        None
    };
    let upstreams = match (upstream.is_empty(), &config) {
        (false, _) => upstream.clone(),
        (true, Some(c)) => c.upstreams.clone(),
        (true, None) => vec![Upstream::System],
    };
    let config = match config {
        Some(c) => c,
        None => defaults()?,
    };
    let opts = config.resolve_options();
    let providers = config.providers();
    runtime()?.block_on(async move {
        let r = MxResolver::new(&upstreams, &opts).context("setting up resolvers")?;
        let mut out = Output::new();
        let mut unanswered = Vec::new();
        for d in &names {
            let obs = r.observe(d).await;
            if obs.iter().all(|o| o.outcome.is_failure()) {
                unanswered.push(d.to_string());
            }
            if *json {
                out.line(&report::check_json(d, &obs, &providers).to_string())?;
            } else {
                out.text(&report::check_text(d, &obs, &providers))?;
            }
        }
        if unanswered.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        say!(
            "mxwatch: every upstream failed for {}: nothing is known about it",
            unanswered.join(", ")
        );
        Ok(ExitCode::FAILURE)
    })
}
