//! The `corelog` binary: parse the command line, start the shards, wait for
//! a signal. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use anyhow::Context;
use clap::{Parser, Subcommand};

use corelog::cluster::controller::{ControllerClient, ControllerConfig};
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
        #[arg(long, default_value = "127.0.0.1:9092", value_parser = resolve_addr)]
        listen: SocketAddr,
        /// Address Metadata tells clients to use (defaults to --listen).
        #[arg(long, value_parser = resolve_addr)]
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
        /// This node's id (Kafka's node.id / broker.id).
        #[arg(long)]
        node_id: Option<i32>,
        /// Address the controller quorum listens on (with --controller-voters).
        #[arg(long, value_parser = resolve_addr)]
        controller_listen: Option<SocketAddr>,
        /// The controller quorum: 1@127.0.0.1:9093,2@127.0.0.1:9193,...
        /// Without it the node is a complete one-node cluster.
        #[arg(long)]
        controller_voters: Option<String>,
        /// broker, controller, or broker,controller.
        #[arg(long, default_value = "broker,controller")]
        roles: String,
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
            node_id,
            controller_listen,
            controller_voters,
            roles,
        } => {
            let mut set = set;
            if let Some(id) = node_id {
                set.push(format!("broker.id={id}"));
            }
            if controller_voters.is_none() {
                set.push("corelog.single.node=true".into());
            }
            let cfg =
                BrokerConfig::load(listen, advertise, data_dir, cores, config.as_deref(), &set)?;
            anyhow::ensure!(
                (0..1 << 22).contains(&cfg.node_id),
                "node id must be between 0 and {} (producer ids embed it)",
                (1 << 22) - 1
            );
            let roles = Roles::parse(&roles)?;
            let voters = controller_voters.as_deref().map(parse_voters).transpose()?;
            serve(cfg, roles, voters, controller_listen)
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

struct Roles {
    broker: bool,
    controller: bool,
}

impl Roles {
    fn parse(s: &str) -> anyhow::Result<Self> {
        let mut r = Roles {
            broker: false,
            controller: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "broker" => r.broker = true,
                "controller" => r.controller = true,
                other => anyhow::bail!("--roles: unknown role {other:?} (broker, controller)"),
            }
        }
        anyhow::ensure!(r.broker || r.controller, "--roles names no role");
        Ok(r)
    }
}

/// The shards share the Kafka port through SO_REUSEPORT, which would also
/// let a second broker on the same address start and silently take part of
/// the connections. Someone still accepting there after a few seconds is
/// refused: a broker just killed keeps its listening socket for some
/// milliseconds after it is gone (until the kernel has torn down its
/// io_uring), so one look would refuse a quick restart. (A plain bind cannot
/// tell either: the TIME_WAIT connections a SIGKILLed broker leaves on its
/// port make it fail for a minute although the port is free to reuse.)
fn refuse_taken_listen_address(listen: SocketAddr) -> anyhow::Result<()> {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(if probe.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_secs(1)).is_err()
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("--listen {listen}: address in use (something has been accepting connections there for 5 s)")
}

/// `HOST:PORT` with an IP literal or a host name (`localhost:9092`); a name
/// resolving to several addresses gives its first IPv4 one, as the brokers
/// advertise and bind IPv4 loopback addresses.
fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("{s:?} is not HOST:PORT or does not resolve: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// `1@host:port,2@host:port` into (node id, address) pairs.
fn parse_voters(s: &str) -> anyhow::Result<Vec<(i32, SocketAddr)>> {
    let voters: Vec<(i32, SocketAddr)> = s
        .split(',')
        .map(|v| {
            let (id, addr) = v
                .trim()
                .split_once('@')
                .with_context(|| format!("--controller-voters: {v:?} is not id@host:port"))?;
            let addr =
                resolve_addr(addr).map_err(|e| anyhow::anyhow!("--controller-voters: {e}"))?;
            Ok((
                id.parse().context("--controller-voters: bad node id")?,
                addr,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!voters.is_empty(), "--controller-voters is empty");
    Ok(voters)
}

fn serve(
    cfg: BrokerConfig,
    roles: Roles,
    voters: Option<Vec<(i32, SocketAddr)>>,
    controller_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let _lock = corelog::io::file::lock_dir(&cfg.data_dir)?;
    if roles.broker {
        refuse_taken_listen_address(cfg.listen)?;
    }
    let signals = block_signals()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = ?sig, "shutting down");
            }
            runtime::request_shutdown();
        })?;
    let node_id = cfg.node_id;
    let metadata_dir = cfg.data_dir.join("__cluster_metadata-0");
    // The controller: this node's voter (if it is one), or an embedded
    // single-voter quorum when no voters are configured.
    let (controller, client_voters, cluster_id) = match &voters {
        None => {
            let local: SocketAddr = "127.0.0.1:0".parse().expect("literal");
            let handle = corelog::cluster::controller::start(ControllerConfig {
                node_id,
                listen: local,
                voters: vec![(node_id, local)],
                dir: metadata_dir,
                props: cfg.props.clone(),
            })?;
            let addr = handle.local_addr();
            let cluster_id = corelog::io::file::cluster_id(&cfg.data_dir)?;
            (Some(handle), vec![(node_id, addr)], cluster_id)
        }
        Some(voters) => {
            let handle = if roles.controller {
                anyhow::ensure!(
                    voters.iter().any(|(id, _)| *id == node_id),
                    "node {node_id} has the controller role but is not in --controller-voters"
                );
                let listen = controller_listen
                    .or_else(|| voters.iter().find(|(id, _)| *id == node_id).map(|v| v.1))
                    .expect("checked");
                Some(corelog::cluster::controller::start(ControllerConfig {
                    node_id,
                    listen,
                    voters: voters.clone(),
                    dir: metadata_dir,
                    props: cfg.props.clone(),
                })?)
            } else {
                None
            };
            (handle, voters.clone(), cluster_id_of(voters))
        }
    };
    if !roles.broker {
        tracing::info!(node_id, "controller-only node ready");
        while !runtime::shutting_down() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(controller);
        tracing::info!("corelog stopped cleanly");
        return Ok(());
    }
    let link = server::ClusterLink {
        controller: Arc::new(ControllerClient::new(client_voters)),
        incarnation: uuid::Uuid::new_v4().as_u128() as u64,
    };
    let cfg = Arc::new(cfg);
    let ready = Arc::new(Barrier::new(cfg.cores));
    let shards = cfg.cores;
    let spin_us: u64 = cfg
        .prop("corelog.spin.before.park.us")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spin = (spin_us > 0).then(|| std::time::Duration::from_micros(spin_us));
    runtime::start_with(shards, spin, move |shard| {
        server::shard_main(
            shard,
            cfg.clone(),
            cluster_id.clone(),
            link.clone(),
            ready.clone(),
        )
    })?;
    drop(controller);
    tracing::info!("corelog stopped cleanly");
    Ok(())
}

/// Every node of a cluster derives the same cluster id from the voter list.
fn cluster_id_of(voters: &[(i32, SocketAddr)]) -> String {
    let text: Vec<String> = voters.iter().map(|(i, a)| format!("{i}@{a}")).collect();
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in text.join(",").bytes() {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    uuid::Uuid::from_u128(hash).simple().to_string()
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
