//! Store methods of the ban list (schema migration 3).

use super::{params, Result, Store};

/// A ban row as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRow {
    /// IP address, CIDR subnet or callsign.
    pub key: String,
    /// Refused until then (ms since the Unix epoch).
    pub until_ms: u64,
    /// Why.
    pub reason: String,
    /// When the ban was made.
    pub created_ms: u64,
}

impl Store {
    /// Every ban, by key.
    pub fn bans_load(&self) -> Result<Vec<BanRow>> {
        let mut st = self
            .conn
            .prepare("SELECT key, until_ms, reason, created_ms FROM bans ORDER BY key")?;
        let rows = st.query_map([], |r| {
            Ok(BanRow {
                key: r.get(0)?,
                until_ms: r.get::<_, i64>(1)?.max(0) as u64,
                reason: r.get(2)?,
                created_ms: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Insert or replace a ban (durable with the input, see the module doc).
    pub fn ban_put(&mut self, b: &BanRow) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO bans(key, until_ms, reason, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET until_ms = excluded.until_ms,
                     reason = excluded.reason, created_ms = excluded.created_ms",
                params![
                    b.key,
                    b.until_ms.min(i64::MAX as u64) as i64,
                    b.reason,
                    b.created_ms.min(i64::MAX as u64) as i64
                ],
            )?;
            Ok(())
        })
    }

    /// Remove a ban; whether there was one.
    pub fn ban_delete(&mut self, key: &str) -> Result<bool> {
        self.write(|c| Ok(c.execute("DELETE FROM bans WHERE key = ?1", [key])? > 0))
    }

    /// Remove bans that ended at or before `now_ms`; how many.
    pub fn bans_expire(&mut self, now_ms: u64) -> Result<usize> {
        self.write(|c| {
            Ok(c.execute(
                "DELETE FROM bans WHERE until_ms <= ?1",
                [now_ms.min(i64::MAX as u64) as i64],
            )?)
        })
    }
}
