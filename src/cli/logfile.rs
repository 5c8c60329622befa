//! The node's log file: `debug.log` in the data directory (or `--log-file`), capped in
//! size. When a write would take it over the cap, it is renamed to `NAME.1` (replacing
//! the previous one) and a fresh file is started, so at most twice the cap is on disk: a
//! Raspberry Pi's SD card does not fill up with a node that runs for months.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Default log file name in the data directory.
pub const LOG_FILE: &str = "debug.log";
/// Default size cap.
pub const DEFAULT_CAP_BYTES: u64 = 10 << 20;

struct Inner {
    path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
}

/// A log file that rotates once to `.1` when over its cap. Cheap to clone.
#[derive(Clone)]
pub struct RotatingFile(Arc<Mutex<Inner>>);

impl RotatingFile {
    /// Open (append to) `path`, rotating at `cap` bytes.
    pub fn open(path: &Path, cap: u64) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile(Arc::new(Mutex::new(Inner {
            path: path.to_path_buf(),
            file,
            len,
            cap: cap.max(1),
        }))))
    }

    /// Where it writes.
    pub fn path(&self) -> PathBuf {
        self.0.lock().map(|i| i.path.clone()).unwrap_or_default()
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut i = self
            .0
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        if i.len > 0 && i.len.saturating_add(buf.len() as u64) > i.cap {
            let _ = i.file.flush();
            std::fs::rename(&i.path, rotated(&i.path))?;
            i.file = OpenOptions::new().create(true).append(true).open(&i.path)?;
            i.len = 0;
        }
        i.file.write_all(buf)?;
        i.len = i.len.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock() {
            Ok(mut i) => i.file.flush(),
            Err(_) => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_to_dot_1_at_its_cap_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("debug.log");
        let mut f = RotatingFile::open(&path, 1000).unwrap();
        let line = [b'x'; 99];
        for _ in 0..50 {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(now <= 1000 && now > 0, "{now}");
        assert!(old <= 1000 && old > 0, "{old}");
        // 50 lines of 100 bytes: what is kept is the newest, at most two caps.
        assert!(now + old <= 2000);
    }
}
