//! The command line.

mod admin;
mod client;
mod demo;
mod kiss_monitor;
pub mod logfile;
mod outbox;
mod peers;
mod sim;
mod watch;

pub use admin::report_error;

use crate::chain::{pow, Address, Chain, NetworkParams};
use crate::config::{self, Config, DirLock};
use crate::driver::{self, wall_ms, DriverOptions};
use crate::link::LinkUrl;
use crate::node::{Node, NodeConfig};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

/// skywave: a store-and-forward blockchain node for slow, lossy radio links.
#[derive(Parser, Debug)]
#[command(name = "skywave", version, about)]
pub struct Cli {
    /// Data directory (config, keys, store). Default: $SKYWAVE_DATA_DIR or the per-user
    /// data directory + "skywave".
    #[arg(long, global = true, env = "SKYWAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "skywave=debug". Default:
    /// info; warn for `demo` and `sim`, which tell their story on stdout (and in `sim`
    /// the simulated nodes' own warnings only as errors).
    #[arg(long, global = true, env = "SKYWAVE_LOG")]
    pub log: Option<String>,
    /// `run`: where to keep the log besides stderr (default DATA_DIR/debug.log; over
    /// 10 MB it is renamed to debug.log.1 and started afresh).
    #[arg(long, global = true)]
    pub log_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a data directory: config, node key, wallet key, store.
    Init {
        /// Network: main or regtest.
        #[arg(long, default_value = "main")]
        network: String,
        /// Your callsign with SSID (identifies the station on radio links).
        #[arg(long)]
        callsign: String,
        /// Links to put in the config (repeatable): tcp://HOST:PORT and
        /// tcp-listen://ADDR:PORT (Noise-encrypted), kiss+tcp://, kiss+serial://,
        /// vara+tcp://, js8call:// (radio: never encrypted); tcp+plain:// and
        /// tcp-listen+plain:// only for tests and old nodes.
        #[arg(long = "link")]
        links: Vec<String>,
        /// API listen address to put in the config.
        #[arg(long)]
        api: Option<String>,
    },
    /// Run the node until Ctrl-C or SIGTERM.
    Run {
        /// API listen address (overrides the config).
        #[arg(long)]
        api: Option<String>,
        /// Extra links (repeatable), in addition to those in the config; the same URLs
        /// as `init --link`.
        #[arg(long = "link")]
        links: Vec<String>,
        /// Mine continuously, paying this data directory's wallet.
        #[arg(long)]
        mine: bool,
    },
    /// Mine blocks: through the running node's API on regtest (`POST /api/mine`), or
    /// into the local store when no node runs on it.
    Mine {
        /// How many blocks.
        #[arg(long, default_value_t = 1)]
        blocks: u64,
    },
    /// Show the running node's status.
    Status {
        /// Keep the view on screen and refresh it, like `rnstatus -m` (Ctrl-C ends).
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Version and build information.
    Version,
    /// Check the data directory's config, keys and store without starting the node.
    Config {
        /// What to do.
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Rebuild the store from the blocks it still yields (after corruption), carrying
    /// over the outbox, bans, address book and mempool; the old file is kept aside and
    /// peers supply the rest.
    Reindex,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `skywave manpage > skywave.1`.
    Manpage,
    /// List the running node's peer sessions with their misbehaviour scores.
    Peers {
        /// List the address book instead: addresses to dial, and where each came from
        /// (config, DNS seed, peer exchange).
        #[arg(long)]
        addrs: bool,
    },
    /// Manage the running node's ban list (IP addresses, CIDR subnets, callsigns).
    Ban {
        /// What to do.
        #[command(subcommand)]
        cmd: peers::BanCmd,
    },
    /// Wallet commands.
    Wallet {
        /// What to do.
        #[command(subcommand)]
        cmd: WalletCmd,
    },
    /// Transaction commands.
    Tx {
        /// What to do.
        #[command(subcommand)]
        cmd: TxCmd,
    },
    /// Inspect and steer the running node's outbox (what it owes its peers).
    Outbox {
        /// What to do.
        #[command(subcommand)]
        cmd: outbox::OutboxCmd,
    },
    /// Run a many-node simulation (virtual clock, seeded) and print its figures.
    Sim {
        /// Seed: same seed, same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of nodes.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// line, star, mesh or islands.
        #[arg(long, default_value = "islands")]
        topology: String,
        /// Hours of activity (virtual) before the heal phase.
        #[arg(long, default_value_t = 4.0)]
        hours: f64,
        /// Payments per node per hour (the load grows with the node count).
        #[arg(long)]
        payments: Option<f64>,
        /// Blocks mined per hour, network-wide.
        #[arg(long)]
        blocks: Option<f64>,
        /// Node crashes per hour, network-wide.
        #[arg(long)]
        restarts: Option<f64>,
    },
    /// Show skywave at work with nothing to configure: several nodes in this process,
    /// relaying freshly mined blocks and a transaction.
    Demo {
        /// Number of nodes, in a line.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Blocks to mine before finishing.
        #[arg(long, default_value_t = 5)]
        blocks: u64,
        /// Simulate the radio hop even when Direwolf is installed.
        #[arg(long)]
        simulated_radio: bool,
    },
    /// KISS TNC tools.
    Kiss {
        /// What to do.
        #[command(subcommand)]
        cmd: KissCmd,
    },
}

/// `kiss` subcommands.
#[derive(Subcommand, Debug)]
pub enum KissCmd {
    /// Print every frame the TNC hears (like axlisten), decoding skywave packets.
    Monitor {
        /// The TNC, e.g. kiss+tcp://127.0.0.1:8001 or kiss+serial:///dev/ttyUSB0?baud=9600.
        url: String,
        /// Exit after this many frames.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Report every problem `run` would stop at, and risky settings; non-zero exit if any
    /// problem.
    Check,
}

/// `wallet` subcommands.
#[derive(Subcommand, Debug)]
pub enum WalletCmd {
    /// Print this wallet's address (offline).
    Address,
    /// Ask the running node for this wallet's balance.
    Balance,
    /// Save the wallet key to a new file (mode 0600). Keep it offline.
    Backup {
        /// Where to write it (must not exist).
        file: PathBuf,
    },
    /// Make a backed-up key this data directory's wallet (no node may be running on it).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace a different wallet already here (it is kept aside, not deleted).
        #[arg(long)]
        replace: bool,
    },
}

/// `tx` subcommands.
#[derive(Subcommand, Debug)]
pub enum TxCmd {
    /// Sign a transfer with this wallet and print it as JSON without submitting it
    /// (to carry to another node, or to submit later with `POST /api/tx`).
    Sign {
        /// Recipient address (`sky1...` on main, `rsky1...` on regtest).
        #[arg(long)]
        to: String,
        /// Amount: a whole number is base units (500000); with a decimal point or the
        /// unit it is SKY (0.005, 1.5SKY). 1 SKY = 100000000 base units. Not zero.
        #[arg(long)]
        amount: String,
        /// Fee, in the same form (default: the network's minimum relay fee).
        #[arg(long)]
        fee: Option<String>,
        /// Sender nonce (default: asked from the running node).
        #[arg(long)]
        nonce: Option<u64>,
    },
    /// Sign a transfer with this wallet and submit it to the running node.
    Send {
        /// Recipient address (`sky1...` on main, `rsky1...` on regtest).
        #[arg(long)]
        to: String,
        /// Amount: a whole number is base units (500000); with a decimal point or the
        /// unit it is SKY (0.005, 1.5SKY). 1 SKY = 100000000 base units. Not zero.
        #[arg(long)]
        amount: String,
        /// Fee, in the same form (default: the network's minimum relay fee).
        #[arg(long)]
        fee: Option<String>,
    },
}

/// Set up logging to stderr.
pub fn init_tracing(filter: &str) {
    init_logging(filter, None);
}

/// Set up logging to stderr and, if given, to a size-capped log file (no colours there).
pub fn init_logging(filter: &str, file: Option<logfile::RotatingFile>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let file = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(f)
            .with_ansi(false)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
}

/// Logging for `skywave sim`: stderr, each line stamped with the simulated time.
fn init_sim_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_timer(crate::sim::SimTime)
        .try_init();
}

/// Run the parsed command line.
pub fn main(cli: Cli) -> Result<()> {
    let dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    // Not for `run` and `demo`: they write to sockets and to Direwolf's audio FIFOs,
    // where a peer that went away must be an error to handle, not a signal that kills.
    if !matches!(cli.cmd, Cmd::Run { .. } | Cmd::Demo { .. }) {
        admin::die_quietly_on_closed_stdout();
    }
    // `demo` and `sim` tell their story on stdout. In `sim` what the simulated nodes
    // complain of (a peer's rejection, a misbehaving peer) is the simulated world's
    // business, counted in the report, not the operator's.
    let default_filter = match cli.cmd {
        Cmd::Sim { .. } => "warn,skywave::node=error",
        Cmd::Demo { .. } => "warn",
        _ => "info",
    };
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| default_filter.to_string());
    let mut log_path = None;
    if matches!(cli.cmd, Cmd::Run { .. }) {
        // Only into a data directory that exists: `run` on a missing one fails below
        // with a message, and must not leave a directory holding just a log behind.
        let path = cli
            .log_file
            .clone()
            .or_else(|| dir.is_dir().then(|| dir.join(logfile::LOG_FILE)));
        match path.map(|p| logfile::RotatingFile::open(&p, logfile::DEFAULT_CAP_BYTES)) {
            Some(Ok(f)) => {
                log_path = Some(f.path());
                init_logging(&filter, Some(f));
            }
            Some(Err(e)) => {
                init_logging(&filter, None);
                tracing::warn!("cannot open the log file: {e}; logging to stderr only");
            }
            None => init_logging(&filter, None),
        }
    } else if matches!(cli.cmd, Cmd::Sim { .. }) {
        init_sim_logging(&filter);
    } else {
        init_logging(&filter, None);
    }
    match cli.cmd {
        Cmd::Init {
            network,
            callsign,
            links,
            api,
        } => init(&dir, &network, &callsign, links, api, cli.json),
        Cmd::Run { api, links, mine } => run(&dir, api, links, mine, log_path),
        Cmd::Mine { blocks } => mine(&dir, blocks, cli.json),
        Cmd::Status { watch, interval } => watch::status(&dir, watch, interval, cli.json),
        Cmd::Version => {
            admin::version(cli.json);
            Ok(())
        }
        Cmd::Config {
            cmd: ConfigCmd::Check,
        } => admin::config_check(&dir, cli.json),
        Cmd::Reindex => admin::reindex(&dir, cli.json),
        Cmd::Completions { shell } => {
            admin::completions(shell);
            Ok(())
        }
        Cmd::Manpage => admin::manpage(),
        Cmd::Peers { addrs: false } => peers::peers(&dir, cli.json),
        Cmd::Peers { addrs: true } => peers::addrs(&dir, cli.json),
        Cmd::Ban { cmd } => peers::ban(&dir, cmd, cli.json),
        Cmd::Wallet {
            cmd: WalletCmd::Address,
        } => {
            let network = client::network_of(&dir)?;
            let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
            let addr = crate::keys::address(&key).to_text(&network);
            if cli.json {
                println!("{}", json!({ "address": addr }));
            } else {
                println!("{addr}");
            }
            Ok(())
        }
        Cmd::Wallet {
            cmd: WalletCmd::Balance,
        } => client::balance(&dir, cli.json),
        Cmd::Wallet {
            cmd: WalletCmd::Backup { file },
        } => admin::wallet_backup(&dir, &file, cli.json),
        Cmd::Wallet {
            cmd: WalletCmd::Restore { file, replace },
        } => admin::wallet_restore(&dir, &file, replace, cli.json),
        Cmd::Tx {
            cmd: TxCmd::Send { to, amount, fee },
        } => client::send(&dir, &to, &amount, fee.as_deref(), cli.json),
        Cmd::Tx {
            cmd:
                TxCmd::Sign {
                    to,
                    amount,
                    fee,
                    nonce,
                },
        } => client::sign(&dir, &to, &amount, fee.as_deref(), nonce),
        Cmd::Demo {
            nodes,
            blocks,
            simulated_radio,
        } => demo::run(nodes, blocks, simulated_radio, cli.json),
        Cmd::Kiss {
            cmd: KissCmd::Monitor { url, count },
        } => kiss_monitor::run(&url, count, cli.json),
        Cmd::Outbox { cmd } => outbox::run(&dir, cmd, cli.json),
        Cmd::Sim {
            seed,
            nodes,
            topology,
            hours,
            payments,
            blocks,
            restarts,
        } => sim::run(
            sim::Sizing {
                seed,
                nodes,
                topology,
                hours,
                payments,
                blocks,
                restarts,
            },
            cli.json,
        ),
    }
}

fn init(
    dir: &Path,
    network: &str,
    callsign: &str,
    links: Vec<String>,
    api: Option<String>,
    as_json: bool,
) -> Result<()> {
    let params = NetworkParams::by_name(network).with_context(|| {
        format!(
            "unknown network '{network}' (known: {})",
            NetworkParams::names().join(", ")
        )
    })?;
    let callsign = crate::callsign::station(callsign).map_err(anyhow::Error::msg)?;
    crate::callsign::check_amateur(&callsign, network).map_err(anyhow::Error::msg)?;
    for l in &links {
        LinkUrl::parse(l).map_err(anyhow::Error::msg)?;
    }
    if dir.join(config::CONFIG_FILE).exists() {
        bail!("{} already holds a skywave config", dir.display());
    }
    config::create_data_dir(dir)?;
    let cfg = Config {
        network: network.to_string(),
        callsign,
        links,
        api: api.unwrap_or_else(|| format!("127.0.0.1:{}", params.default_port + 80)),
        api_token: None,
        mine: false,
        peers: Default::default(),
    };
    let node_key = crate::keys::generate();
    let wallet_key = crate::keys::generate();
    crate::keys::save(&dir.join(config::NODE_KEY_FILE), &node_key)?;
    crate::keys::save(&dir.join(config::WALLET_KEY_FILE), &wallet_key)?;
    let store = Store::open(&dir.join(config::STORE_FILE))?;
    let chain = Chain::open(params, store)?;
    cfg.save(dir)?;
    let addr = crate::keys::address(&wallet_key).to_text(&cfg.network);
    if as_json {
        println!(
            "{}",
            json!({"data_dir": dir, "network": cfg.network, "callsign": cfg.callsign,
                   "address": addr, "genesis": chain.tip().hash})
        );
    } else {
        println!("created {} for network {}", dir.display(), cfg.network);
        println!("callsign: {}", cfg.callsign);
        println!("wallet address: {addr}");
        let beyond_loopback = cfg
            .api
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if beyond_loopback {
            println!(
                "the API ({}) is beyond loopback: add api_token = \"<16+ characters>\" to {} before `run`",
                cfg.api,
                dir.join(config::CONFIG_FILE).display()
            );
        }
        println!("next: skywave --data-dir {} run", dir.display());
    }
    Ok(())
}

fn mine(dir: &Path, blocks: u64, as_json: bool) -> Result<()> {
    let cfg = Config::load(dir)?;
    // A node running on this directory holds the lock: ask it instead.
    let Ok(_lock) = DirLock::acquire(dir) else {
        return mine_through_node(dir, &cfg, blocks, as_json);
    };
    let mut chain = admin::open_chain(dir, &cfg)?;
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let to = crate::keys::address(&key);
    let mut mined = Vec::new();
    for _ in 0..blocks {
        let mut block = chain.block_template(to, wall_ms() / 1000);
        while !pow::mine(&mut block.header, 1_000_000) {}
        let hash = block.hash();
        let height = block.header.height;
        let txs = block.txs.len();
        chain.submit_block(block, wall_ms() / 1000)?;
        if !as_json {
            println!("mined block {height} {hash} ({txs} transactions)");
        }
        mined.push(json!({"height": height, "hash": hash, "txs": txs}));
    }
    if as_json {
        println!(
            "{}",
            json!({ "mined": mined, "height": chain.tip().height })
        );
    }
    Ok(())
}

/// `mine` while a node runs: `POST /api/mine` (regtest only), paying this wallet.
fn mine_through_node(dir: &Path, cfg: &Config, blocks: u64, as_json: bool) -> Result<()> {
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let to = crate::keys::address(&key).to_text(&cfg.network);
    let v = client::Api::open(dir)?.call(
        reqwest::Method::POST,
        "/api/mine",
        Some(json!({ "blocks": blocks, "to": to })),
    )?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    for b in v["mined"].as_array().into_iter().flatten() {
        println!(
            "mined block {} {} ({} transactions)",
            b["height"],
            b["hash"].as_str().unwrap_or(""),
            b["txs"]
        );
    }
    Ok(())
}

/// The address to give peers when the operator set none: the one `tcp-listen` link's,
/// if it names a single IP (a wildcard bind says nothing about how others reach us).
fn advertised_listen_addr(urls: &[LinkUrl]) -> Option<std::net::SocketAddr> {
    let mut listen = urls.iter().filter_map(|u| {
        u.transport()
            .listens_on()?
            .parse::<std::net::SocketAddr>()
            .ok()
    });
    let first = listen.next()?;
    (listen.next().is_none() && !first.ip().is_unspecified()).then_some(first)
}

fn run(
    dir: &Path,
    api: Option<String>,
    extra_links: Vec<String>,
    mine: bool,
    log_path: Option<PathBuf>,
) -> Result<()> {
    let cfg = Config::load(dir)?;
    crate::callsign::check_amateur(&cfg.callsign, &cfg.network)
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "{} (set callsign in {})",
                cfg.callsign,
                dir.join(config::CONFIG_FILE).display()
            )
        })?;
    let lock = DirLock::acquire(dir)?;
    let mut urls = Vec::new();
    for l in cfg.links.iter().chain(extra_links.iter()) {
        urls.push(LinkUrl::parse(l).map_err(anyhow::Error::msg)?);
    }
    let chain = admin::open_chain(dir, &cfg)?;
    let node_key = crate::keys::load(&dir.join(config::NODE_KEY_FILE))?;
    let wallet = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let network = crate::chain::NetworkParams::by_name(&cfg.network)
        .with_context(|| format!("unknown network '{}'", cfg.network))?
        .network_id();
    let mut peers = cfg.peers.policy(network)?;
    let resolver = cfg.peers.dns()?;
    if peers.advertise.is_none() {
        peers.advertise = advertised_listen_addr(&urls);
    }
    let mut node = Node::new(
        chain,
        NodeConfig {
            node_key,
            callsign: cfg.callsign.clone(),
            seed: rand::random(),
            user_agent: format!("skywave/{}", env!("CARGO_PKG_VERSION")),
            peers,
        },
    );
    let configured: Vec<std::net::SocketAddr> = urls
        .iter()
        .filter_map(|u| u.transport().dials()?.parse().ok())
        .collect();
    node.add_addresses(
        driver::now_ms(),
        &configured,
        crate::node::AddrSource::Config,
        None,
    );
    let seeds = (!cfg.peers.dns_seeds.is_empty()).then(|| {
        let port = node.chain().params().default_port;
        (cfg.peers.dns_seeds.clone(), port, resolver)
    });
    if seeds.is_some() && !(cfg.peers.peer_exchange && urls.iter().any(LinkUrl::is_tcp)) {
        tracing::warn!("peers.dns_seeds are dialled through peer exchange: they need peer_exchange = true and a tcp or tcp-listen link");
    }
    let api_addr = api.unwrap_or(cfg.api.clone());
    let mine_to = (mine || cfg.mine).then(|| crate::keys::address(&wallet));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&api_addr)
            .await
            .with_context(|| format!("cannot bind the API to {api_addr}"))?;
        let bound = listener.local_addr()?;
        let auth = std::sync::Arc::new(crate::api::ApiAuth::start(
            dir,
            bound,
            cfg.api_token.as_deref(),
        )?);
        let addr_file = dir.join(config::API_ADDR_FILE);
        std::fs::write(&addr_file, bound.to_string())
            .with_context(|| format!("cannot write {}", addr_file.display()))?;
        let links_text: Vec<String> = urls.iter().map(|u| u.transport().role()).collect();
        let (shared, drive) = driver::start(
            node,
            DriverOptions {
                links: urls,
                mine_to,
                callsign: cfg.callsign.clone(),
                custom_links: Vec::new(),
                mine_until_height: None,
            },
        );
        banner(
            &shared,
            dir,
            &cfg.callsign,
            &links_text,
            bound,
            auth.cookie_path(),
            log_path.as_deref(),
            mine_to.is_some(),
        );
        tokio::spawn(log_tips(shared.clone()));
        if let Some((names, port, how)) = seeds {
            tokio::spawn(crate::dns::seed(shared.clone(), names, port, how));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut api_task = tokio::spawn(crate::api::serve(listener, shared.clone(), auth, async {
            let _ = stop_rx.await;
        }));
        let mut driver_task = tokio::spawn(drive);
        // Runs until a signal, or until the driver or the API ends by itself: that is a
        // fault (a dead link task, a poisoned node, a panic), and a node limping on
        // without its driver would still answer its API. Stop, and exit non-zero.
        let outcome: Result<()> = tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("signal received, stopping");
                Ok(())
            }
            r = &mut driver_task => Err(match r {
                Ok(Ok(())) => anyhow::anyhow!("the driver stopped by itself"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("the driver task failed: {e}"),
            }),
            r = &mut api_task => Err(match r {
                Ok(Ok(())) => anyhow::anyhow!("the API server stopped by itself"),
                Ok(Err(e)) => anyhow::anyhow!("the API server failed: {e:#}"),
                Err(e) => anyhow::anyhow!("the API task failed: {e}"),
            }),
        };
        if let Err(e) = &outcome {
            tracing::error!("fatal: {e:#}; stopping the node");
        }
        driver::stop(&shared);
        let _ = stop_tx.send(());
        // Bounded: after a fault, a task may be wedged on the very thing that failed.
        let grace = std::time::Duration::from_secs(10);
        if !driver_task.is_finished() {
            let _ = tokio::time::timeout(grace, &mut driver_task).await;
        }
        if !api_task.is_finished() {
            let _ = tokio::time::timeout(grace, &mut api_task).await;
        }
        let _ = std::fs::remove_file(&addr_file);
        drop(lock);
        outcome
    })?;
    Ok(())
}

/// The start-up banner, as Direwolf prints one: what this node is and where its parts are.
#[allow(clippy::too_many_arguments)]
fn banner(
    shared: &driver::Shared,
    dir: &Path,
    callsign: &str,
    links: &[String],
    api: std::net::SocketAddr,
    cookie: Option<&Path>,
    log: Option<&Path>,
    mining: bool,
) {
    let driver::Summary {
        network,
        height,
        tip,
        header_height: headers,
    } = shared.summary();
    tracing::info!("skywave {} on {network}", env!("CARGO_PKG_VERSION"));
    tracing::info!("callsign {callsign}, data directory {}", dir.display());
    if links.is_empty() {
        tracing::warn!("no links configured: this node talks to nobody (add --link)");
    }
    for (i, l) in links.iter().enumerate() {
        tracing::info!("link {}: {l}", i + 1);
    }
    match cookie {
        Some(c) => tracing::info!("API on http://{api}/ (token in {})", c.display()),
        None => tracing::info!("API on http://{api}/ (token from api_token in the config)"),
    }
    if let Some(l) = log {
        tracing::info!("log file {}", l.display());
    }
    tracing::info!(
        "chain at height {height} (tip {tip}), best header {headers}{}",
        if mining { "; mining" } else { "" }
    );
}

/// Sync progress in the log, as bitcoind's `UpdateTip` lines: each new tip with the best
/// header height and the share of it reached.
async fn log_tips(shared: std::sync::Arc<driver::Shared>) {
    let mut rx = shared.events.subscribe();
    loop {
        match rx.recv().await {
            Ok(crate::node::NodeEvent::TipChanged {
                tip,
                disconnected,
                from,
                header_height: headers,
                ..
            }) => {
                let time = driver::utc_text(tip.time.saturating_mul(1000));
                let progress = if headers == 0 {
                    100.0
                } else {
                    tip.height as f64 * 100.0 / headers as f64
                };
                let how = match from {
                    Some(_) => "from a peer",
                    None => "mined here",
                };
                let reorg = if disconnected > 0 {
                    format!(", reorganised {disconnected} block(s)")
                } else {
                    String::new()
                };
                tracing::info!(
                    "UpdateTip: height={} best_header={headers} progress={progress:.1}% tip={} time={} ({how}{reorg})",
                    tip.height,
                    tip.hash,
                    time,
                );
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

/// Parse an address argument for `network`, with a message that says what to use.
pub(crate) fn parse_address(s: &str, network: &str) -> Result<Address> {
    Address::parse(s, network).map_err(anyhow::Error::msg)
}
