//! The `ingestd` command line: parse, load the configuration, turn signals
//! into the shutdown token (SIGTERM, SIGINT) and reload requests (SIGHUP),
//! call the command, and map its outcome to an exit status. `anyhow` is
//! used here only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use ingestd::cli::{
    self, check_config, demo, export, generate, retry, run, status, token, EXIT_CONFIG,
};
use ingestd::config::{self, LogFormat, Settings};
use ingestd::daemon::{self, Reloads};
use ingestd::journal::FileState;
use ingestd::{emulator, logging};

#[derive(Parser)]
#[command(
    name = "ingestd",
    version,
    about = "Watch folders, journal every new file, upload it to api.video in resumable chunks"
)]
struct Cli {
    /// The configuration file [default: $INGESTD_CONFIG, else /etc/ingestd/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground: resume and upload what the journal holds
    Run {
        /// Upload everything that is ready, then exit (1 if a file failed)
        #[arg(long)]
        once: bool,
    },
    /// Journal these files and upload them now, in the foreground
    Upload {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the journal: one line (or JSON object) per file
    Status {
        /// Print a JSON array for scripts
        #[arg(long)]
        json: bool,
        /// Only files in this state (repeatable): settling, queued, uploading, retrying, done, failed, gone
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<FileState>,
        /// List the videos ingestd started on api.video and abandoned (the
        /// file vanished or changed mid-upload, a creating request lost its
        /// reply), to delete in the dashboard
        #[arg(long, conflicts_with = "states")]
        orphans: bool,
        /// List the nodes of a shared journal (journal.url): where each
        /// runs, when it was last heard from, what it is uploading
        #[arg(long, conflicts_with_all = ["states", "orphans"])]
        nodes: bool,
        /// Show each [[hook]] with its backlog, and the events not yet
        /// delivered (oldest first)
        #[arg(long, conflicts_with_all = ["states", "orphans", "nodes"])]
        hooks: bool,
    },
    /// Put failed files back in the queue (and gone files whose file is back as it was)
    Retry {
        /// Journal ids (see `ingestd status`)
        #[arg(
            value_name = "ID",
            required_unless_present = "failed",
            conflicts_with = "failed"
        )]
        ids: Vec<i64>,
        /// Every failed file
        #[arg(long)]
        failed: bool,
    },
    /// Validate the configuration, print it (secrets redacted), and check the
    /// machine against it: folders, move_to, inotify limits, token file
    CheckConfig {
        /// Also ask the server whether it accepts the token (creates nothing)
        #[arg(long)]
        online: bool,
    },
    /// Run the local api.video-compatible upload endpoint
    Emulator {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        options: emulator::EmulatorOptions,
        #[command(flatten)]
        limits: emulator::ApiRateLimits,
        #[command(flatten)]
        playback: emulator::PlaybackOptions,
    },
    /// Show the whole pipeline against a built-in emulator and a temporary folder
    Demo,
    /// Manage upload tokens with the account's API key ($INGESTD_API_KEY or --api-key-file)
    Token(token::TokenArgs),
    /// Manage the journal: move a single-node journal into a shared one
    Journal {
        #[command(subcommand)]
        command: export::JournalCommand,
    },
    /// Print the completion script for a shell (load it, or install it where the shell looks)
    ///
    /// bash: `ingestd completions bash > ~/.local/share/bash-completion/completions/ingestd`
    ///
    /// zsh: `ingestd completions zsh > ~/.zfunc/_ingestd` (a folder listed in $fpath)
    ///
    /// fish: `ingestd completions fish > ~/.config/fish/completions/ingestd.fish`
    ///
    /// The Debian package installs all three.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `ingestd manpage | man -l -`
    ///
    /// The Debian package installs it as `man ingestd`; from source:
    /// `ingestd manpage | gzip -9n > /usr/local/share/man/man1/ingestd.1.gz`
    Manpage,
}

/// Runs `f` on a thread of the blocking pool: the journal's PostgreSQL
/// client must not block the runtime's own threads.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, std::io::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Loads the configuration, then starts logging in the format it asks for.
fn load_config(cli_path: Option<&PathBuf>, read_token: bool) -> Result<Settings, ExitCode> {
    let path = cli_path.map(|p| p.as_path());
    let loaded = if read_token {
        config::load(path)
    } else {
        config::load_without_token(path)
    };
    match loaded {
        Ok(s) => {
            logging::init(s.log.format, "info");
            Ok(s)
        }
        Err(e) => {
            logging::init(LogFormat::Auto, "info");
            eprintln!("ingestd: invalid configuration: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Cancels the token on SIGINT or SIGTERM.
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let t = token.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Stop first: nothing (not even a failing log write) may come between.
        t.cancel();
        info!("{which}: stopping (send it again to stop at once)");
        // A second one does not wait for the drain: the journal is safe at
        // any instant, and interrupted uploads resume at the next start.
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: stopping at once; interrupted uploads resume at the next start");
        std::process::exit(1);
    });
    Ok(token)
}

/// Turns each SIGHUP into a reload request. Installed before anything
/// else runs: SIGHUP's default action kills.
fn reload_on_sighup(config_path: Option<PathBuf>) -> Reloads {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        // Said by the daemon once logging is set up.
        Err(e) => return Reloads::off(e.to_string()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // One pending request stands for any number of signals.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Reloads::new(rx, config_path)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ingestd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("ingestd: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A read stuck on a dead network mount must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// The settings, or return the exit code of a bad configuration (78).
macro_rules! config_or_exit {
    ($path:expr) => {
        config_or_exit!($path, true)
    };
    ($path:expr, $read_token:expr) => {
        match load_config($path.as_ref(), $read_token) {
            Ok(s) => s,
            Err(code) => return Ok(code),
        }
    };
}

/// Return 78 unless the settings have an upload token; warn when its file
/// can be read by others (the command goes on: `check-config` says the same).
macro_rules! token_or_exit {
    ($settings:expr) => {
        if let Err(e) = $settings.require_token() {
            eprintln!("ingestd: invalid configuration: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        if let Some(warning) = check_config::exposed_token_file(&$settings) {
            tracing::warn!("{warning}");
        }
    };
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone();
    match cli.command {
        Command::Run { once } => {
            // Listen for SIGHUP first: its default action kills.
            let reloads = (!once).then(|| reload_on_sighup(config_path.clone()));
            let settings = config_or_exit!(config_path);
            token_or_exit!(settings);
            let shutdown = shutdown_on_signals()?;
            match reloads {
                None => {
                    let results = daemon::run_once(&settings, shutdown).await;
                    Ok(run::finish_batch(results)?)
                }
                Some(reloads) => {
                    daemon::run(settings, reloads, shutdown).await?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Upload { files } => {
            let settings = config_or_exit!(config_path);
            token_or_exit!(settings);
            let shutdown = shutdown_on_signals()?;
            let results = daemon::upload_files(&settings, &files, shutdown).await;
            Ok(run::finish_batch(results)?)
        }
        Command::Status {
            json,
            states,
            orphans,
            nodes,
            hooks,
        } => {
            // No token needed to look: `status` works while it is broken.
            let settings = config_or_exit!(config_path, false);
            let what = status::Show {
                json,
                orphans,
                nodes,
                hooks,
            };
            // The journal's clients block: off the runtime's threads.
            blocking(move || status::status(&settings, what, &states)).await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { ids, failed } => {
            let settings = config_or_exit!(config_path, false);
            Ok(blocking(move || retry::retry(&settings, &ids, failed)).await??)
        }
        Command::Journal { command } => {
            // Reads no token; the shared journal's client blocks.
            let settings = config_or_exit!(config_path, false);
            Ok(blocking(move || export::run(&settings, command)).await?)
        }
        Command::CheckConfig { online } => {
            let settings = config_or_exit!(config_path);
            Ok(check_config::run(&settings, online).await)
        }
        Command::Emulator {
            listen,
            options,
            limits,
            playback,
        } => {
            logging::init(LogFormat::Auto, "info");
            let shutdown = shutdown_on_signals()?;
            emulator::run_standalone(listen, options, limits, playback, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => {
            let settings = config_or_exit!(config_path);
            match token::run(args, settings.api.base_url.clone()).await {
                Ok(text) => {
                    ingestd::print_out(format_args!("{text}\n"));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("ingestd: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        // Neither reads the configuration: they describe the command line.
        Command::Completions { shell } => {
            generate::completions(shell, Cli::command())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            generate::manpage(Cli::command())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            // The demo tells its own story; its log shows only what goes wrong.
            logging::init(LogFormat::Auto, "warn");
            // Its daemon reloads nothing, but a SIGHUP must not kill it.
            let _ignored = reload_on_sighup(None);
            let shutdown = shutdown_on_signals()?;
            let ok = demo::run(shutdown).await?;
            Ok(cli::exit_status(ok))
        }
    }
}
