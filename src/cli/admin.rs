//! Commands about the installation rather than the network: `version`, `config check`,
//! completions and the man page, wallet backup and restore, the store's guards and
//! `reindex`, and how errors reach the operator.

use crate::chain::{Chain, NetworkParams, TxOutcome};
use crate::config::{self, Config, DirLock};
use crate::link::LinkUrl;
use crate::store::{old_mempool, Carried, Store};
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// `skywave version`: the version and what it was built from.
pub fn version(as_json: bool) {
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("SKYWAVE_GIT_COMMIT"),
        "target": env!("SKYWAVE_TARGET"),
        "profile": env!("SKYWAVE_PROFILE"),
        "rustc": env!("SKYWAVE_RUSTC"),
        "networks": NetworkParams::names(),
    });
    if as_json {
        println!("{v}");
    } else {
        println!("skywave {}", env!("CARGO_PKG_VERSION"));
        println!("commit   {}", env!("SKYWAVE_GIT_COMMIT"));
        println!(
            "target   {} ({} build)",
            env!("SKYWAVE_TARGET"),
            env!("SKYWAVE_PROFILE")
        );
        println!("compiler {}", env!("SKYWAVE_RUSTC"));
        println!("networks {}", NetworkParams::names().join(", "));
    }
}

/// `skywave config check`: everything `run` would refuse, found without starting the
/// node (and while one runs). Lists every problem, not just the first.
pub fn config_check(dir: &Path, as_json: bool) -> Result<()> {
    let path = dir.join(config::CONFIG_FILE);
    let cfg = Config::load(dir)?;
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if let Err(e) = crate::callsign::check_amateur(&cfg.callsign, &cfg.network) {
        problems.push(e);
    }
    for l in &cfg.links {
        if let Err(e) = LinkUrl::parse(l) {
            problems.push(e.to_string());
        }
    }
    if cfg.links.is_empty() {
        warnings.push("no links: the node will talk to nobody".into());
    }
    match cfg.api.parse::<std::net::SocketAddr>() {
        Err(_) => problems.push(format!("api '{}' is not ip:port", cfg.api)),
        Ok(a) if !a.ip().is_loopback() => match &cfg.api_token {
            Some(t) if t.len() >= 16 => warnings.push(format!(
                "the API ({a}) is reachable beyond this machine; keep api_token secret"
            )),
            _ => problems.push(format!(
                "api {a} is beyond loopback: set api_token (16 characters or more)"
            )),
        },
        Ok(_) => {}
    }
    let network_id = NetworkParams::by_name(&cfg.network)
        .map(|p| p.network_id())
        .unwrap_or_default();
    if let Err(e) = cfg.peers.policy(network_id) {
        problems.push(e.to_string());
    }
    for f in [config::NODE_KEY_FILE, config::WALLET_KEY_FILE] {
        if let Err(e) = crate::keys::load(&dir.join(f)) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Err(e) = store_guard(dir) {
        problems.push(format!("{e:#}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        if let Ok(m) = mode(dir) {
            if m & 0o077 != 0 {
                warnings.push(format!(
                    "{} is mode {m:o}: others can read it (chmod 700)",
                    dir.display()
                ));
            }
        }
        if let Ok(m) = mode(&path) {
            if m & 0o077 != 0 {
                warnings.push(format!(
                    "{} is mode {m:o}: it may hold secrets (chmod 600)",
                    path.display()
                ));
            }
        }
    }
    let ok = problems.is_empty();
    if as_json {
        println!(
            "{}",
            json!({ "ok": ok, "config": path, "network": cfg.network,
                    "problems": problems, "warnings": warnings })
        );
    } else {
        for w in &warnings {
            println!("warning: {w}");
        }
        for p in &problems {
            println!("problem: {p}");
        }
        if ok {
            println!("{}: OK (network {})", path.display(), cfg.network);
        }
    }
    if !ok {
        bail!("{}: {} problem(s) found", path.display(), problems.len());
    }
    Ok(())
}

/// `skywave completions SHELL`: a completion script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "skywave", &mut std::io::stdout());
}

/// `skywave manpage`: the man page (roff) on stdout.
pub fn manpage() -> Result<()> {
    let man = clap_mangen::Man::new(super::Cli::command());
    man.render(&mut std::io::stdout())?;
    Ok(())
}

/// A wallet backup file: the key with what it belongs to, so that a restore cannot
/// put a key on the wrong network without saying so.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletBackup {
    network: String,
    address: String,
    /// The secret seed, hex.
    key: String,
}

/// `skywave wallet backup FILE`: write the wallet key to FILE (mode 0600), never over an
/// existing file.
pub fn wallet_backup(dir: &Path, file: &Path, as_json: bool) -> Result<()> {
    let network = Config::load(dir)?.network;
    let key = crate::keys::load(&dir.join(config::WALLET_KEY_FILE))?;
    let address = crate::keys::address(&key).to_text(&network);
    let b = WalletBackup {
        network,
        address: address.clone(),
        key: hex::encode(key.to_bytes()),
    };
    let text = format!(
        "# skywave wallet backup: whoever holds this file can spend from {address}\n{}",
        toml::to_string(&b)?
    );
    if file.exists() {
        bail!("{} exists: choose a new file", file.display());
    }
    config::write_private(file, text.as_bytes())?;
    if as_json {
        println!("{}", json!({ "backup": file, "address": address }));
    } else {
        println!("wallet {address} saved to {}", file.display());
        println!("keep it offline: it holds the key");
    }
    Ok(())
}

/// `skywave wallet restore FILE`: make the backed-up key this data directory's wallet.
/// A different wallet already there is kept aside as `wallet.key.replaced-<secs>`, and
/// only with `replace`.
pub fn wallet_restore(dir: &Path, file: &Path, replace: bool, as_json: bool) -> Result<()> {
    let network = Config::load(dir)?.network;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let b: WalletBackup = toml::from_str(&text)
        .with_context(|| format!("{} is not a skywave wallet backup", file.display()))?;
    if b.network != network {
        bail!(
            "{} is a {} wallet; this data directory is on {network}",
            file.display(),
            b.network
        );
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(b.key.trim(), &mut seed)
        .map_err(|_| anyhow::anyhow!("{}: the key is not 64 hex digits", file.display()))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let address = crate::keys::address(&key).to_text(&network);
    if address != b.address {
        bail!(
            "{}: the key does not match the address it names ({}): the file is damaged",
            file.display(),
            b.address
        );
    }
    // A running node holds the wallet key it started with.
    let _lock = DirLock::acquire(dir)?;
    let path = dir.join(config::WALLET_KEY_FILE);
    let mut kept = None;
    if let Ok(old) = crate::keys::load(&path) {
        if old.to_bytes() == key.to_bytes() {
            if as_json {
                println!("{}", json!({ "restored": address, "unchanged": true }));
            } else {
                println!("wallet {address} is already this data directory's wallet");
            }
            return Ok(());
        }
        if !replace {
            bail!(
                "{} holds another wallet ({}); back it up, then restore with --replace",
                path.display(),
                crate::keys::address(&old).to_text(&network)
            );
        }
        let aside = dir.join(format!(
            "{}.replaced-{}",
            config::WALLET_KEY_FILE,
            crate::driver::wall_ms() / 1000
        ));
        std::fs::rename(&path, &aside)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        kept = Some(aside);
    }
    config::write_private(&path, format!("{}\n", b.key.trim()).as_bytes())?;
    if as_json {
        println!(
            "{}",
            json!({ "restored": address, "previous_kept_at": kept })
        );
    } else {
        println!("wallet {address} restored");
        if let Some(k) = kept {
            println!("the previous wallet key is kept at {}", k.display());
        }
    }
    Ok(())
}

/// Refuse a store that is missing or empty next to existing keys: the node would start
/// a new chain there and silently forget the old one.
pub fn store_guard(dir: &Path) -> Result<()> {
    let store = dir.join(config::STORE_FILE);
    let keys = dir.join(config::NODE_KEY_FILE).exists();
    let len = std::fs::metadata(&store).map(|m| m.len());
    match len {
        Ok(0) if keys => bail!(
            "{} is empty, but this data directory has keys: the chain is gone. \
             Restore the file from a backup, or start a fresh one with \
             `skywave --data-dir {} reindex` to sync from peers",
            store.display(),
            dir.display()
        ),
        Err(_) if keys => bail!(
            "{} is missing, but this data directory has keys. Restore the file from a \
             backup, or create an empty one with `skywave --data-dir {} reindex` to sync from peers",
            store.display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// Open the data directory's store and chain (the caller holds the lock), with the
/// guards of [`store_guard`]; a store that cannot be read names the file and the way out.
pub fn open_chain(dir: &Path, cfg: &Config) -> Result<Chain> {
    let params = NetworkParams::by_name(&cfg.network)
        .with_context(|| format!("unknown network '{}'", cfg.network))?;
    store_guard(dir)?;
    let path = dir.join(config::STORE_FILE);
    let corrupt = |e: String| {
        anyhow::anyhow!(
            "the store {} cannot be read ({e}). Rebuild it with `skywave --data-dir {} reindex` \
             (keeps the blocks that can still be read, then syncs the rest from peers)",
            path.display(),
            dir.display()
        )
    };
    let store = Store::open(&path).map_err(|e| corrupt(e.to_string()))?;
    Chain::open(params, store).map_err(|e| corrupt(e.to_string()))
}

/// `skywave reindex`: build a fresh store from the main-chain blocks the old one still
/// yields, in order, stopping at the first that cannot be read or does not connect, and
/// carry over what the node owes and knows besides the chain: the outbox (with its
/// message ids), bans, address book, seen-set and the mempool's transactions that still
/// fit. What could not be carried is reported. The old file is kept as
/// `chain.sqlite.old-<secs>`; peers supply the rest when the node runs. Also makes a
/// missing store.
pub fn reindex(dir: &Path, as_json: bool) -> Result<()> {
    let cfg = Config::load(dir)?;
    let params = NetworkParams::by_name(&cfg.network)
        .with_context(|| format!("unknown network '{}'", cfg.network))?;
    let _lock = DirLock::acquire(dir)?;
    let path = dir.join(config::STORE_FILE);
    let fresh_path = dir.join(format!("{}.reindex", config::STORE_FILE));
    for p in [
        &fresh_path,
        &sidecar(&fresh_path, "-wal"),
        &sidecar(&fresh_path, "-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
    let mut fresh = Chain::open(params.clone(), Store::open(&fresh_path)?)?;
    let mut copied = 0u64;
    let mut stopped = None;
    let mut carried = Carried::default();
    let mut mempool = (0u64, Vec::new());
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        match Store::open(&path).and_then(|s| Ok((s.load_main_chain()?, s))) {
            Err(e) => stopped = Some(format!("the old store cannot be opened: {e}")),
            Ok((hashes, old)) => {
                for h in hashes.iter().skip(1) {
                    let block = match old.get_block(h) {
                        Ok(Some(b)) => b,
                        Ok(None) => {
                            stopped = Some(format!("block {h} is missing"));
                            break;
                        }
                        Err(e) => {
                            stopped = Some(format!("block {h} cannot be read: {e}"));
                            break;
                        }
                    };
                    let height = block.header.height;
                    if let Err(e) = fresh.submit_block(block, crate::driver::wall_ms() / 1000) {
                        stopped = Some(format!("block {height} does not connect: {e}"));
                        break;
                    }
                    copied += 1;
                }
            }
        }
        // Read apart from the chain, as plain SQLite: a store too damaged to open as a
        // chain may still hold its outbox and bans.
        match rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) {
            Ok(old) => {
                carried = fresh.store_mut().carry_from(&old)?;
                let now = crate::driver::wall_ms();
                for tx in old_mempool(&old, &mut carried) {
                    match fresh.submit_tx(tx, now) {
                        Ok(TxOutcome::Accepted) => mempool.0 += 1,
                        Ok(_) => {}
                        Err(e) => mempool.1.push(e.to_string()),
                    }
                }
            }
            Err(e) => carried.problem(format!("the old store cannot be opened: {e}")),
        }
    }
    let height = fresh.tip().height;
    drop(fresh);
    let kept = if path.exists() {
        let aside = dir.join(format!(
            "{}.old-{}",
            config::STORE_FILE,
            crate::driver::wall_ms() / 1000
        ));
        std::fs::rename(&path, &aside)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        for s in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sidecar(&path, s));
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&fresh_path, &path)
        .with_context(|| format!("cannot put the new store at {}", path.display()))?;
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&fresh_path, s));
    }
    if as_json {
        println!(
            "{}",
            json!({
                "height": height, "blocks": copied, "stopped": stopped, "old_store": kept,
                "carried": carried, "mempool": mempool.0, "mempool_refused": mempool.1,
            })
        );
    } else {
        println!(
            "rebuilt {} up to height {height} ({copied} blocks)",
            path.display()
        );
        if let Some(s) = stopped {
            println!("stopped early: {s}; peers supply the rest when the node runs");
        }
        println!(
            "carried over: {} outbox item(s), {} ban(s), {} address-book entr(ies), \
             {} seen message(s), {} mempool transaction(s)",
            carried.outbox, carried.bans, carried.peers, carried.seen, mempool.0
        );
        if carried.problem_count > 0 {
            println!(
                "NOT carried ({} problem(s); the old store keeps what it holds):",
                carried.problem_count
            );
            for p in &carried.problems {
                println!("  {p}");
            }
        }
        for e in &mempool.1 {
            println!("mempool transaction not carried: {e}");
        }
        if let Some(k) = kept {
            println!("the old store is kept at {}", k.display());
        }
    }
    Ok(())
}

/// `chain.sqlite` + `-wal`: SQLite's companion files.
fn sidecar(p: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Print an error as the operator asked: `error: ...` on stderr, or with `--json` a
/// `{"error": ...}` object on stdout, where the answers of the other commands go.
pub fn report_error(e: &anyhow::Error, as_json: bool) {
    if as_json {
        println!("{}", json!({ "error": format!("{e:#}") }));
    } else {
        eprintln!("error: {e:#}");
    }
}

/// Let a closed stdout (`skywave ... | head`) end the process quietly, as it ends `cat`,
/// instead of panicking in `println!`. Not for commands that write to pipes or sockets
/// of their own (`run`, `demo`): there a closed peer is an error to handle.
pub fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called at start-up before any thread is spawned; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
