//! The `corelog` binary: parse the command line, start the shards, wait for
//! a signal. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use anyhow::Context;
use clap::{Parser, Subcommand};

use corelog::config::BrokerConfig;
use corelog::{runtime, server};

#[global_allocator]
static GLOBAL: corelog::io::alloc::GuardedAlloc = corelog::io::alloc::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "corelog",
    version,
    about = "Kafka-API-compatible thread-per-core message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (a complete one-node cluster with no flags).
    Serve {
        /// Address to listen on for Kafka clients.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// Address Metadata tells clients to use (defaults to --listen).
        #[arg(long)]
        advertise: Option<SocketAddr>,
        /// Where partitions and metadata are stored.
        #[arg(long, default_value = "./corelog-data")]
        data_dir: PathBuf,
        /// Shards (pinned executors); default: all cores.
        #[arg(long)]
        cores: Option<usize>,
        /// TOML file with Kafka broker property names.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one property: --set log.segment.bytes=1048576
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Consumer groups of a running broker: members, offsets, lag.
    Groups {
        /// Broker to ask.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[command(subcommand)]
        action: GroupsAction,
    },
}

#[derive(Subcommand)]
enum GroupsAction {
    /// Every group with its state.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag.
    Describe { group: String },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is a bug: a shard that died would leave the broker half
    // alive, so print the report and stop the whole process.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            advertise,
            data_dir,
            cores,
            config,
            set,
        } => {
            let cfg =
                BrokerConfig::load(listen, advertise, data_dir, cores, config.as_deref(), &set)?;
            serve(cfg)
        }
        Command::Groups {
            bootstrap_server,
            action,
        } => {
            let out = match action {
                GroupsAction::List => corelog::tools::groups::list(&bootstrap_server)?,
                GroupsAction::Describe { group } => {
                    corelog::tools::groups::describe(&bootstrap_server, &group)?
                }
            };
            print!("{out}");
            Ok(())
        }
    }
}

fn serve(cfg: BrokerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let _lock = corelog::io::file::lock_dir(&cfg.data_dir)?;
    let cluster_id = corelog::io::file::cluster_id(&cfg.data_dir)?;
    let signals = block_signals()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "shutting down");
            }
            runtime::request_shutdown();
        })?;
    let cfg = Arc::new(cfg);
    let ready = Arc::new(Barrier::new(cfg.cores));
    let shards = cfg.cores;
    let spin_us: u64 = cfg
        .prop("corelog.spin.before.park.us")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spin = (spin_us > 0).then(|| std::time::Duration::from_micros(spin_us));
    runtime::start_with(shards, spin, move |shard| {
        server::shard_main(shard, cfg.clone(), cluster_id.clone(), ready.clone())
    })?;
    tracing::info!("corelog stopped cleanly");
    Ok(())
}

/// Blocks SIGTERM and SIGINT in every thread (the mask is inherited), so
/// only the signal thread receives them.
fn block_signals() -> anyhow::Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    Ok(set)
}
