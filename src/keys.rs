//! Key files: 32-byte Ed25519 secret seeds stored as hex, readable by the owner only.

use crate::chain::Address;
use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use std::path::Path;

/// A fresh key from the operating system's RNG.
pub fn generate() -> SigningKey {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Write `key` to `path` (mode 0600), refusing to overwrite an existing key.
pub fn save(path: &Path, key: &SigningKey) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))?;
    f.sync_all()?;
    Ok(())
}

/// Read a key written by [`save`].
pub fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let mut seed = [0u8; 32];
    if hex::decode_to_slice(text.trim(), &mut seed).is_err() {
        bail!("{}: not a 64-hex-digit key", path.display());
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// The address (public key) of a key.
pub fn address(key: &SigningKey) -> Address {
    Address(key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = generate();
        save(&p, &k).unwrap();
        assert_eq!(load(&p).unwrap().to_bytes(), k.to_bytes());
        assert!(save(&p, &generate()).is_err());
        std::fs::write(&p, "zz").unwrap();
        assert!(load(&p).is_err());
    }
}
