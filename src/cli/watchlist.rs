//! `mxwatch config check`: validate a watchlist.

use super::*;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Config {
        command: ConfigCommand::Check { file },
    } = &cli.command
    else {
        bail!("internal: `watchlist::run` called for another command");
    };
    let path = file.clone().unwrap_or_else(|| cli.config.clone());
    let c = Config::load(&path)?;
    for e in &c.secret_problems {
        say!("mxwatch: warning: {}", e.needed());
    }
    Output::new().line(&format!(
        "{}: ok: {} domains ({} duplicates merged), {} upstreams ({}), schedule {:?}, database {}",
        path.display(),
        c.domains.len(),
        c.duplicates_merged,
        c.upstreams.len(),
        c.upstreams
            .iter()
            .map(|u| u.label())
            .collect::<Vec<_>>()
            .join(", "),
        c.schedule.as_str(),
        c.database.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
