//! The data directory: config file, keys, store, and the files a running node leaves for
//! the other commands (its API address, its lock).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Config file name inside the data directory.
pub const CONFIG_FILE: &str = "skywave.toml";
/// Node identity key.
pub const NODE_KEY_FILE: &str = "node.key";
/// Wallet key.
pub const WALLET_KEY_FILE: &str = "wallet.key";
/// SQLite store.
pub const STORE_FILE: &str = "chain.sqlite";
/// Written by `run`: the address its API listens on.
pub const API_ADDR_FILE: &str = "api.addr";
/// Held (flock) by the process that owns the store.
pub const LOCK_FILE: &str = "skywave.lock";

/// `skywave.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Network name (`main`, `regtest`).
    pub network: String,
    /// Operator's callsign with SSID, e.g. `N0CALL-1`; sent to peers, required on radio.
    #[serde(default)]
    pub callsign: String,
    /// Links to open at start (URLs).
    #[serde(default)]
    pub links: Vec<String>,
    /// Address of the HTTP API (loopback by default).
    #[serde(default = "default_api")]
    pub api: String,
    /// Password for the API, required when `api` is beyond loopback (at least 16
    /// characters); sent as `Authorization: Bearer <api_token>`. On loopback the token
    /// in `DATA_DIR/.cookie` is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// Mine continuously while running.
    #[serde(default)]
    pub mine: bool,
    /// Misbehaviour scoring and automatic bans.
    #[serde(default)]
    pub peers: PeersConfig,
}

/// `[peers]` in `skywave.toml`: how misbehaviour is scored and punished.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// Score at which an IP address or callsign is banned.
    pub ban_threshold: u32,
    /// Length of an automatic ban, in hours.
    pub ban_hours: f64,
    /// Points forgiven per hour.
    pub decay_per_hour: u32,
    /// Ban loopback peers automatically too (operator bans always apply).
    pub ban_loopback: bool,
    /// Long-run share of air time a radio link may take, in percent (1-100).
    pub duty_cycle_percent: u8,
    /// Sessions held at once per link.
    pub max_peers_per_link: usize,
    /// Sessions held at once per IP address or callsign.
    pub max_sessions_per_address: usize,
    /// Messages per second one TCP peer may send, sustained (10 s bursts pass).
    pub max_msgs_per_sec: u64,
    /// KiB per second one TCP peer may send, sustained (10 s bursts pass).
    pub max_kib_per_sec: u64,
    /// Shared network key (any passphrase): peers must prove it at the handshake.
    /// It authenticates, it does not encrypt (radio links carry no encryption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_key: Option<String>,
    /// Exchange TCP addresses with peers and dial some of those learned.
    pub peer_exchange: bool,
    /// Outbound TCP sessions kept up by dialling learned addresses.
    pub max_outbound: usize,
    /// Address (`ip:port`) other nodes can dial this one at; given to peers. Unset: the
    /// `tcp-listen` address if it names one IP (not 0.0.0.0 or ::).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Host names whose A and AAAA records are nodes to dial (at the network's default
    /// port), resolved at start and again when short of outbound peers. Dialled through
    /// peer exchange's link: needs `peer_exchange` and a `tcp` or `tcp-listen` link.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_seeds: Vec<String>,
    /// DNS server (`ip:port`) to ask for `dns_seeds` directly over UDP. Unset: the
    /// system resolver (`/etc/hosts`, then the system's DNS servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_resolver: Option<String>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        let p = crate::node::PeerPolicy::default();
        PeersConfig {
            ban_threshold: p.ban_threshold,
            ban_hours: p.ban_duration_ms as f64 / 3_600_000.0,
            decay_per_hour: p.decay_per_hour,
            ban_loopback: p.ban_loopback,
            duty_cycle_percent: p.duty_cycle_pct,
            max_peers_per_link: p.max_peers_per_link,
            max_sessions_per_address: p.max_sessions_per_key,
            max_msgs_per_sec: p.msgs_per_sec,
            max_kib_per_sec: p.bytes_per_sec / 1024,
            network_key: None,
            peer_exchange: p.peer_exchange,
            max_outbound: p.max_outbound,
            advertise: None,
            dns_seeds: Vec::new(),
            dns_resolver: None,
        }
    }
}

impl PeersConfig {
    /// How to resolve `dns_seeds`; errors on a name or resolver that cannot be used.
    pub fn dns(&self) -> Result<crate::dns::Resolver> {
        if self.dns_seeds.len() > crate::dns::MAX_SEEDS {
            bail!("peers.dns_seeds: at most {} names", crate::dns::MAX_SEEDS);
        }
        for name in &self.dns_seeds {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !ok {
                bail!("peers.dns_seeds: '{name}' is not a host name");
            }
        }
        match &self.dns_resolver {
            Some(r) => r
                .parse::<std::net::SocketAddr>()
                .map(crate::dns::Resolver::Server)
                .map_err(|_| anyhow::anyhow!("peers.dns_resolver '{r}' is not ip:port")),
            None => Ok(crate::dns::Resolver::System),
        }
    }

    /// The node's policy; errors on values that make no sense.
    /// The network key, if configured, is derived for `network` (its id, the salt).
    pub fn policy(&self, network: [u8; 4]) -> Result<crate::node::PeerPolicy> {
        let max_h = (crate::node::MAX_BAN_MS / 3_600_000) as f64;
        if !(self.ban_hours > 0.0 && self.ban_hours <= max_h) {
            bail!("peers.ban_hours must be above 0 and at most {max_h}");
        }
        if self.ban_threshold == 0 {
            bail!("peers.ban_threshold must be at least 1");
        }
        if !(1..=100).contains(&self.duty_cycle_percent) {
            bail!("peers.duty_cycle_percent must be 1-100");
        }
        if self.max_peers_per_link == 0 || self.max_sessions_per_address == 0 {
            bail!("peers.max_peers_per_link and max_sessions_per_address must be at least 1");
        }
        if self.max_msgs_per_sec == 0 || self.max_kib_per_sec == 0 {
            bail!("peers.max_msgs_per_sec and max_kib_per_sec must be at least 1");
        }
        let network_key = match &self.network_key {
            Some(k) if k.trim().is_empty() => bail!("peers.network_key is empty"),
            Some(k) => Some(crate::node::network_key(k, network)?),
            None => None,
        };
        let advertise = match &self.advertise {
            Some(a) => Some(
                a.parse::<std::net::SocketAddr>()
                    .map_err(|_| anyhow::anyhow!("peers.advertise '{a}' is not ip:port"))?,
            ),
            None => None,
        };
        Ok(crate::node::PeerPolicy {
            ban_threshold: self.ban_threshold,
            ban_duration_ms: (self.ban_hours * 3_600_000.0) as u64,
            decay_per_hour: self.decay_per_hour,
            ban_loopback: self.ban_loopback,
            duty_cycle_pct: self.duty_cycle_percent,
            max_peers_per_link: self.max_peers_per_link,
            max_sessions_per_key: self.max_sessions_per_address,
            msgs_per_sec: self.max_msgs_per_sec,
            bytes_per_sec: self.max_kib_per_sec.saturating_mul(1024),
            network_key,
            peer_exchange: self.peer_exchange,
            max_outbound: self.max_outbound,
            advertise,
        })
    }
}

fn default_api() -> String {
    "127.0.0.1:7380".to_string()
}

impl Config {
    /// Read `DIR/skywave.toml`.
    pub fn load(dir: &Path) -> Result<Config> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (create the data directory with `skywave --data-dir {} init`)",
                path.display(),
                dir.display()
            )
        })?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if crate::chain::NetworkParams::by_name(&cfg.network).is_none() {
            bail!(
                "{}: unknown network '{}' (known: {})",
                path.display(),
                cfg.network,
                crate::chain::NetworkParams::names().join(", ")
            );
        }
        Ok(cfg)
    }

    /// Write `DIR/skywave.toml`, readable by the owner only (it may hold the network
    /// key and the API token), atomically: a crash leaves the old file or the new one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)?;
        write_private(&dir.join(CONFIG_FILE), text.as_bytes())
    }
}

/// Create the data directory (and its parents) readable by the owner only: it holds
/// keys, the API token and the config.
pub fn create_data_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // An existing directory keeps the mode it was made with: tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// Write `bytes` to `path` with mode 0600, atomically: into a temporary file in the same
/// directory, synced, then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates the file 0600 on Unix.
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The default data directory: `$SKYWAVE_DATA_DIR`, else the user's data dir + `skywave`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKYWAVE_DATA_DIR") {
        return PathBuf::from(d);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("skywave")
}

/// An exclusive lock on the data directory, released when dropped (or when the process
/// dies, however it dies: the kernel drops flocks).
pub struct DirLock(#[allow(dead_code)] std::fs::File);

impl DirLock {
    /// Take the lock or explain who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => Ok(DirLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "a skywave node is already running on {} (stop it first, or talk to it with `status`)",
                dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_network() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            network: "regtest".into(),
            callsign: "N0CALL-1".into(),
            links: vec!["tcp-listen://127.0.0.1:1".into()],
            api: default_api(),
            api_token: None,
            mine: false,
            peers: PeersConfig {
                ban_loopback: true,
                ban_hours: 0.5,
                ..PeersConfig::default()
            },
        };
        cfg.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), cfg);
        std::fs::write(dir.path().join(CONFIG_FILE), "network = \"nope\"\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown network"), "{e}");
    }

    #[test]
    fn peers_section_is_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "network = \"regtest\"\n").unwrap();
        let cfg = Config::load(dir.path()).unwrap();
        let p = cfg.peers.policy([0; 4]).unwrap();
        assert_eq!(p, crate::node::PeerPolicy::default());
        let bad = PeersConfig {
            ban_hours: 0.0,
            ..PeersConfig::default()
        };
        assert!(bad.policy([0; 4]).is_err());
        let bad = PeersConfig {
            ban_threshold: 0,
            ..PeersConfig::default()
        };
        assert!(bad.policy([0; 4]).is_err());
    }

    #[test]
    fn dns_seeds_and_resolver_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "network = \"regtest\"\n[peers]\ndns_seeds = [\"seed.example.net\"]\n\
             dns_resolver = \"127.0.0.1:5353\"\n",
        )
        .unwrap();
        let cfg = Config::load(dir.path()).unwrap();
        assert_eq!(cfg.peers.dns_seeds, ["seed.example.net"]);
        assert_eq!(
            cfg.peers.dns().unwrap(),
            crate::dns::Resolver::Server("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            PeersConfig::default().dns().unwrap(),
            crate::dns::Resolver::System
        );
        for (seeds, resolver) in [
            (vec!["bad name"], None),
            (vec!["a..b"], None),
            (vec![""], None),
            (vec!["seed.example.net"], Some("localhost")),
        ] {
            let p = PeersConfig {
                dns_seeds: seeds.iter().map(|s| s.to_string()).collect(),
                dns_resolver: resolver.map(String::from),
                ..PeersConfig::default()
            };
            assert!(p.dns().is_err(), "{seeds:?} {resolver:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn config_and_data_dir_are_private_and_written_whole() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_data_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let cfg = Config {
            network: "regtest".into(),
            callsign: "N0CALL-1".into(),
            links: vec![],
            api: default_api(),
            api_token: Some("a-long-enough-password".into()),
            mine: false,
            peers: PeersConfig::default(),
        };
        // A config left world-readable by an older version is replaced, not rewritten in place.
        std::fs::write(dir.join(CONFIG_FILE), "old").unwrap();
        std::fs::set_permissions(
            dir.join(CONFIG_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        cfg.save(&dir).unwrap();
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        assert_eq!(Config::load(&dir).unwrap(), cfg);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn second_lock_on_a_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = DirLock::acquire(dir.path()).unwrap();
        let e = DirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(e.contains("already running"), "{e}");
    }
}
