//! The `mxwatch` command line: its arguments, the context every command
//! shares (the watchlist, the store, a runtime, output), and one module
//! per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use alerts::{AlertCommand, ForwardCommand, UndoCommand};
use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use output::{Output, print_lines, print_rows, say_if_none};

use mxwatch::bounce::input::{self, Input};
use mxwatch::bounce::parse::{self, Format};
use mxwatch::bounce::{Bounce, Kind};
use mxwatch::clock::{Clock, SystemClock};
use mxwatch::config::{Config, Upstream};
use mxwatch::daemon;
use mxwatch::domain::DomainName;
use mxwatch::judge::JudgeError;
use mxwatch::monitor;
use mxwatch::report;
use mxwatch::resolve::MxResolver;
use mxwatch::store::Store;

/// A line on standard error, JSON with `--log-format json` (see
/// [`output::say`]); the only way the command line speaks there.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::say("INFO", &format!($($arg)*))
    };
}

mod alerts;
mod bounces;
mod changes;
mod check;
mod domains;
mod history;
mod output;
mod reinstatements;
mod replay;
mod run;
mod serve;
mod verdict;
mod watchlist;
mod windows;

#[derive(Parser)]
#[command(
    name = "mxwatch",
    version,
    about = "Watch recipient domains' MX records; tell bounce handlers which hard bounces came from a broken window."
)]
pub struct Cli {
    /// The watchlist.
    #[arg(
        long,
        short,
        global = true,
        env = "MXWATCH_CONFIG",
        default_value = "watchlist.yaml"
    )]
    config: PathBuf,
    /// Use this database instead of the watchlist's `database`.
    #[arg(long, global = true, env = "MXWATCH_DATABASE")]
    database: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor in the foreground until SIGINT or SIGTERM.
    Run {
        /// Check every domain once, now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Query domains now and print what each upstream says (no database).
    Check {
        /// The domains to ask about.
        #[arg(required = true)]
        domains: Vec<String>,
        /// Ask this upstream (repeatable): `system`, `authoritative`, or IP[:port].
        /// Default: the watchlist's upstreams, or `system` without a watchlist.
        #[arg(long)]
        upstream: Vec<Upstream>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A domain's answer history, as runs of identical answers per upstream
    /// (`history import` adds passive DNS history from exports).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    History {
        /// Import passive DNS history instead.
        #[command(subcommand)]
        command: Option<HistoryCommand>,
        /// The domain.
        #[arg(required = true)]
        domain: Option<String>,
        /// Only runs seen since T (RFC 3339, a date, or an age like `24h`).
        #[arg(long)]
        since: Option<String>,
        /// Instead: what each upstream answered at T.
        #[arg(long, conflicts_with = "since")]
        at: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Detected changes, oldest first.
    Changes {
        /// Only changes since T (RFC 3339, a date, or an age like `24h`).
        #[arg(long)]
        since: Option<String>,
        /// Only this domain's changes.
        #[arg(long)]
        domain: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change windows, newest first; `windows close ID --reason TEXT`
    /// withdraws one known to be false.
    #[command(args_conflicts_with_subcommands = true)]
    Windows {
        #[command(subcommand)]
        command: Option<WindowsCommand>,
        /// Only windows open now (or inside their closing grace).
        #[arg(long)]
        active: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Judge a bounce against the stored history: suppress, transient,
    /// retry or ignore, with reasons and evidence.
    Verdict {
        /// The bounced address.
        recipient: String,
        /// When the bounce happened (RFC 3339, a date, or an age); default now.
        #[arg(long)]
        at: Option<String>,
        /// Enhanced status code, e.g. 5.1.1.
        #[arg(long)]
        status: Option<String>,
        /// SMTP reply code, e.g. 550.
        #[arg(long)]
        reply_code: Option<u16>,
        /// The remote server's words.
        #[arg(long)]
        diagnostic: Option<String>,
        /// The host that refused.
        #[arg(long)]
        remote_mta: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Suppressions that windows found late turned over: recipients whose
    /// suppression should be undone.
    Reinstatements {
        /// Only those recorded since T (RFC 3339, a date, or an age like `24h`).
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Backtest with no network: the daemon's own code over recorded
    /// observations and bounces in time order, in a temporary database.
    Replay {
        /// Observations, one JSON object per line: {"domain","at","upstream"?,"outcome","mx":[{"preference","exchange"}],"ttl"}.
        #[arg(long)]
        observations: Option<PathBuf>,
        /// Bounce inputs (anything `bounces parse` reads).
        #[arg(long, required = true, num_args = 1..)]
        bounces: Vec<PathBuf>,
        /// Passive DNS history from before the recording: DNSDB exports.
        #[arg(long, num_args = 1..)]
        dnsdb: Vec<PathBuf>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bounce feeds: parse, store and list bounces.
    Bounces {
        #[command(subcommand)]
        command: BounceCommand,
    },
    /// Webhook alert deliveries.
    Alerts {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Forwarded events (gateway mode): list, retry, release what is held.
    Forward {
        #[command(subcommand)]
        command: ForwardCommand,
    },
    /// Undo false suppressions at the ESPs and list managers: list, retry, keep.
    Undo {
        #[command(subcommand)]
        command: UndoCommand,
    },
    /// The watched domains, listed and auto-watched: provider, last check, open window.
    Domains {
        /// Only the domains watched because they bounced (`auto_watch:`).
        #[arg(long)]
        auto: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for a shell (`mxwatch completions bash >
    /// /etc/bash_completion.d/mxwatch`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as `man` reads it: `mxwatch man > mxwatch.1`.
    Man,
    /// Watchlist commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum WindowsCommand {
    /// Withdraw a window known to be false: it excuses no bounce any
    /// more, and every verdict it made is judged again without it (those
    /// that turn to `suppress` are listed, alerted and forwarded again).
    Close {
        /// The window's id, as `mxwatch windows` shows it (`#12` or `12`).
        id: String,
        /// Why it is false, kept with the window and sent in the alert.
        #[arg(long)]
        reason: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Reads passive DNS exports (Farsight DNSDB JSON lines, SecurityTrails
    /// MX history answers) into the domains' history, idempotently: runs of
    /// the source, and windows where an MX pointed elsewhere for a while.
    Import {
        /// dnsdb or securitytrails.
        #[arg(long)]
        format: mxwatch::passive::PassiveSource,
        /// The domain a SecurityTrails answer is about (it does not say).
        #[arg(long)]
        domain: Option<String>,
        /// The export files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Asks the watchlist's `passive_dns:` providers for domains' MX history
    /// now, and keeps the answers as `import` does. A spent quota (HTTP 429)
    /// stops asking that provider.
    Lookup {
        /// The domains.
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Writes the domains' recorded observations as `replay
    /// --observations` reads them (one JSON object per line), so that an
    /// incident can be replayed with other settings. A run of identical
    /// answers is written as its first and its last check.
    Export {
        /// The output format; `replay` is the one there is.
        #[arg(long, default_value = "replay")]
        format: ExportFormat,
        /// Only observations at or after this time.
        #[arg(long)]
        since: Option<String>,
        /// The domains.
        #[arg(required = true)]
        domains: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// `replay --observations`' input.
    Replay,
}

#[derive(Subcommand)]
enum BounceCommand {
    /// Parse bounce inputs and print one normalised bounce per recipient.
    /// Problems go to stderr as `path:line: message`; exit 1 when any input
    /// had one.
    Parse {
        /// Files, folders (Maildir or any folder of files), or `-` for stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Input format (default: detected per input): email, mbox, maildir,
        /// json, ses, sendgrid, mailgun, postmark, jsonl, postfix, exim, sendmail.
        #[arg(long)]
        format: Option<Format>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Parse bounce inputs and store them in the database (idempotently).
    Ingest {
        /// Files, folders (Maildir or any folder of files), or `-` for stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Input format (default: detected per input), as for `bounces parse`.
        #[arg(long)]
        format: Option<Format>,
        /// Oldest bounce accepted, as an age before now (default: 20 years:
        /// files are often past feeds); older ones, like those dated after
        /// `bounce_times.max_ahead`, are reported and left out.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<std::time::Duration>,
    },
    /// Stored bounces, oldest first.
    List {
        /// Only bounces of this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only bounces since T (RFC 3339, a date, or an age like `24h`).
        #[arg(long)]
        since: Option<String>,
        /// Only bounces of this kind (user_unknown, mailbox_full, ...).
        #[arg(long)]
        kind: Option<Kind>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a watchlist without running anything.
    Check {
        /// The watchlist to check (default: --config).
        file: Option<PathBuf>,
    },
}

/// What a subcommand starts from: its arguments, and the watchlist, read
/// at most once (the log level's look at it is kept for the command).
pub struct Context {
    cli: Cli,
    preloaded: std::cell::RefCell<Option<Config>>,
}

impl std::ops::Deref for Context {
    type Target = Cli;
    fn deref(&self) -> &Cli {
        &self.cli
    }
}

/// Logging as the command line and the watchlist ask: the level is
/// RUST_LOG, else the watchlist's `log_level`, else info.
pub fn init(cli: Cli) -> Context {
    let preloaded = std::env::var_os("RUST_LOG")
        .is_none()
        .then(|| Config::load(&cli.config).ok())
        .flatten();
    let level = preloaded.as_ref().and_then(|c| c.log_level.clone());
    serve::init_logging(cli.log_format, level);
    Context {
        cli,
        preloaded: std::cell::RefCell::new(preloaded),
    }
}

impl Context {
    /// The watchlist (`--database` overrides its database).
    fn load(&self) -> anyhow::Result<Config> {
        let mut c = match self.preloaded.borrow_mut().take() {
            Some(c) => c,
            None => Config::load(&self.cli.config)?,
        };
        if let Some(db) = &self.cli.database {
            c.database = db.clone();
        }
        Ok(c)
    }

    /// The watchlist's settings; with `--database` and no watchlist file,
    /// the defaults: the commands that read or add to a database need
    /// nothing else.
    fn settings(&self) -> anyhow::Result<Config> {
        match &self.cli.database {
            Some(db) if !self.cli.config.exists() => {
                let mut c = defaults()?;
                c.database = db.clone();
                Ok(c)
            }
            _ => self.load(),
        }
    }

    /// The database of [`Context::settings`].
    fn store(&self) -> anyhow::Result<Store> {
        open_store(&self.settings()?)
    }
}

/// The settings every default gives (no watchlist).
fn defaults() -> anyhow::Result<Config> {
    Ok(Config::from_yaml(
        "domains: []\n",
        std::path::Path::new("(defaults)"),
    )?)
}

/// RFC 3339, a date, or an age (`90m`, `24h`, `7d`) counted back from now.
/// An argument that does not read: a usage error (exit status 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    mxwatch::clock::parse_moment(s, SystemClock.now()).map_err(|e| Usage(e.to_string()).into())
}

fn domain(s: &str) -> anyhow::Result<DomainName> {
    DomainName::parse(s).map_err(|e| Usage(format!("{s:?} is not a domain name: {e}")).into())
}

/// The settings' database, which must exist.
fn open_store(c: &Config) -> anyhow::Result<Store> {
    if !c.database.exists() {
        bail!(
            "no database at {} yet: run `mxwatch run` first (or pass --database)",
            c.database.display()
        );
    }
    Ok(Store::open(&c.database)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn bounce_text(b: &Bounce) -> String {
    format!(
        "{}  {:<32} {:<16} {:<7} {:<4} {:<8} {}",
        b.at.map(report::time).unwrap_or_else(|| "-".into()),
        b.recipient,
        b.kind.as_str(),
        b.status.as_deref().unwrap_or("-"),
        b.reply_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        b.source.as_str(),
        b.diagnostic.as_deref().unwrap_or("")
    )
}

/// Parses every input; hands each input's bounces to `sink`; reports
/// problems on stderr. Returns whether every input parsed cleanly. With a
/// `range`, bounces dated outside it are left out (and reported).
fn parse_inputs(
    paths: &[PathBuf],
    format: Option<Format>,
    progress: bool,
    range: Option<mxwatch::bounce::TimeRange>,
    mut sink: impl FnMut(Vec<Bounce>, Vec<mxwatch::bounce::Delivered>) -> anyhow::Result<()>,
) -> anyhow::Result<(bool, usize)> {
    let (inputs, missing) = input::expand(paths);
    let mut clean = missing.is_empty();
    for (path, e) in missing {
        say!("{path}: {e}");
    }
    let total: u64 = inputs.iter().map(Input::size).sum();
    let bar = (progress
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && (total > 4 << 20 || inputs.len() > 200))
        .then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    // Rates rounded, in units: "12.3 MiB/s", not "12345.678/s".
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("progress template"),
            );
            bar
        });
    let now = SystemClock.now();
    let mut count = 0;
    for inp in &inputs {
        let bytes = match inp.read() {
            Ok(b) => b,
            Err(e) => {
                say!("{}: {e}", inp.name());
                clean = false;
                continue;
            }
        };
        let mut out = parse::parse(&bytes, format, now);
        if let Some(range) = range {
            out.keep_within(range, now, mxwatch::bounce::OutOfRange::Refuse);
        }
        for p in &out.problems {
            clean = false;
            let msg = format!(
                "{}{}: {}",
                inp.name(),
                p.line.map(|l| format!(":{l}")).unwrap_or_default(),
                p.message
            );
            match &bar {
                Some(b) => b.println(msg),
                None => say!("{msg}"),
            }
        }
        if let Some(note) = out.omitted_note().or_else(|| out.why_nothing()) {
            match &bar {
                Some(b) => b.println(format!("{}: {note}", inp.name())),
                None => say!("{}: {note}", inp.name()),
            }
        }
        count += out.bounces.len();
        sink(out.bounces, out.delivered)?;
        if let Some(b) = &bar {
            b.inc(bytes.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((clean, count))
}

/// Says why the command failed, as every other line on standard error.
pub fn fail(e: &anyhow::Error) {
    output::say("ERROR", &format!("mxwatch: {e:#}"));
}

/// Runs the command; its exit code, or the error to print.
pub fn run(cli: Context) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Verdict { .. } => verdict::run(&cli),
        Command::Replay { .. } => replay::run(&cli),
        Command::Bounces { .. } => bounces::run(&cli),
        Command::Config { .. } => watchlist::run(&cli),
        Command::Domains { .. } => domains::run(&cli),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "mxwatch", &mut out);
            Output::new().text(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            Output::new().text(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { .. } => run::run(&cli),
        Command::Check { .. } => check::run(&cli),
        Command::History { .. } => history::run(&cli),
        Command::Changes { .. } => changes::run(&cli),
        Command::Alerts {
            command: AlertCommand::List { .. },
        } => alerts::list(&cli),
        Command::Alerts {
            command: AlertCommand::Retry { .. },
        } => alerts::retry(&cli),
        Command::Forward { .. } => alerts::forward(&cli),
        Command::Undo { .. } => alerts::undo(&cli),
        Command::Reinstatements { .. } => reinstatements::run(&cli),
        Command::Windows { .. } => windows::run(&cli),
    }
}

/// " since T", or nothing: what an empty listing was asked for.
fn since_words(since: Option<chrono::DateTime<chrono::Utc>>) -> String {
    since.map_or(String::new(), |t| format!(" since {}", report::time(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{path}: the command itself"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }
}
