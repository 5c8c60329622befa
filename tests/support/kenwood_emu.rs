//! An emulated Kenwood TM-D710 / TH-D72 TNC on a pseudo-terminal, built to what the
//! published tools send it: tmd710_tncsetup (`TC 1`, `TN 2,0`, `HBAUD n`, `KISS ON`,
//! `RESTART`, each line ending in CR) and the TNC-2 style command mode whose prompt is
//! `cmd:`. socat joins two ptys; the link under test opens one, the emulator the other.
//!
//! Model: the TNC is either in command mode or in KISS mode. In command mode it answers
//! each CR-terminated line with the `cmd:` prompt (`?EH` first for a line it does not
//! know); `TC 1` hands the port to the radio's PC commands (the TNC says nothing until
//! `TN 2,x` turns it on again); `KISS ON` then `RESTART` enters KISS mode, silently. In
//! KISS mode it decodes KISS frames and records them; `C0 FF C0` returns to command mode.
//! A power cycle (test hook) drops KISS: the TNC comes up in command mode and prints
//! its prompt. That sign-on text is this emulator's assumption, not checked on a radio.

use skywave::wire::kiss::{KissDecoder, KissFrame};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the TNC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Text commands, `cmd:` prompt.
    Command,
    /// KISS frames only.
    Kiss,
}

struct State {
    mode: Mode,
    /// The TNC is on (after `TN 2,x`), not handed to the radio's PC commands (`TC 1`).
    tnc_on: bool,
    kiss_on: bool,
    hbaud: Option<u32>,
    /// Command lines received, in order (trimmed, as sent).
    lines: Vec<String>,
    /// KISS frames received in KISS mode.
    frames: Vec<KissFrame>,
    /// Bytes that were neither printable text nor CR/LF while in command mode.
    binary_in_command_mode: usize,
}

/// One emulated radio.
pub struct KenwoodTnc {
    dir: PathBuf,
    host: PathBuf,
    state: Arc<Mutex<State>>,
    port: Arc<Mutex<File>>,
    socat: Child,
    stop: Arc<AtomicBool>,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

impl KenwoodTnc {
    /// Start the radio, already in KISS mode (`kiss`) or in command mode.
    pub fn start(kiss: bool) -> std::io::Result<KenwoodTnc> {
        let dir = std::env::temp_dir().join(format!(
            "skywave-kenwood-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)?;
        let (radio, host) = (dir.join("radio"), dir.join("host"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", radio.display()))
            .arg(format!("pty,raw,echo=0,link={}", host.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(radio.exists() && host.exists()) {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("socat ptys did not appear"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let file = OpenOptions::new().read(true).write(true).open(&radio)?;
        let reader = file.try_clone()?;
        let state = Arc::new(Mutex::new(State {
            mode: if kiss { Mode::Kiss } else { Mode::Command },
            tnc_on: true,
            kiss_on: kiss,
            hbaud: None,
            lines: Vec::new(),
            frames: Vec::new(),
            binary_in_command_mode: 0,
        }));
        let port = Arc::new(Mutex::new(file));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, p, st) = (state.clone(), port.clone(), stop.clone());
        std::thread::spawn(move || run(reader, s, p, st));
        Ok(KenwoodTnc {
            dir,
            host,
            state,
            port,
            socat,
            stop,
        })
    }

    /// The pty the link opens.
    pub fn path(&self) -> &Path {
        &self.host
    }

    /// Where the TNC is now.
    pub fn mode(&self) -> Mode {
        lock(&self.state).mode
    }

    /// Command lines received so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }

    /// KISS frames received so far.
    pub fn frames(&self) -> Vec<KissFrame> {
        lock(&self.state).frames.clone()
    }

    /// Host speed set with HBAUD.
    pub fn hbaud(&self) -> Option<u32> {
        lock(&self.state).hbaud
    }

    /// Binary bytes that reached the command interpreter.
    pub fn binary_in_command_mode(&self) -> usize {
        lock(&self.state).binary_in_command_mode
    }

    /// Power off and on: KISS is gone, the TNC prints its prompt.
    pub fn power_cycle(&self) {
        {
            let mut s = lock(&self.state);
            s.mode = Mode::Command;
            s.kiss_on = false;
            s.tnc_on = true;
        }
        say(&self.port, b"\r\ncmd:");
    }

    /// Send raw bytes to the host, as if the TNC received them (KISS frames).
    pub fn send(&self, bytes: &[u8]) {
        say(&self.port, bytes);
    }
}

impl Drop for KenwoodTnc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn say(port: &Mutex<File>, bytes: &[u8]) {
    let mut f = port.lock().unwrap_or_else(|p| p.into_inner());
    let _ = f.write_all(bytes);
    let _ = f.flush();
}

fn run(mut rd: File, state: Arc<Mutex<State>>, port: Arc<Mutex<File>>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut dec = KissDecoder::new();
    while !stop.load(Ordering::SeqCst) {
        let n = match rd.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            let mode = lock(&state).mode;
            match mode {
                Mode::Kiss => {
                    dec.push(&[b]);
                    while let Some(f) = dec.next_frame() {
                        let Ok(f) = f else { continue };
                        let mut s = lock(&state);
                        if f.port == 15 && f.command == 15 && f.payload.is_empty() {
                            // C0 FF C0: leave KISS.
                            s.mode = Mode::Command;
                            s.kiss_on = false;
                            drop(s);
                            say(&port, b"\r\ncmd:");
                        } else {
                            s.frames.push(f);
                        }
                    }
                }
                Mode::Command => match b {
                    b'\r' => {
                        let text = String::from_utf8_lossy(&line).trim().to_string();
                        line.clear();
                        let reply = command(&mut lock(&state), &text);
                        if mode_now(&state) == Mode::Kiss {
                            dec = KissDecoder::new();
                        }
                        if let Some(r) = reply {
                            say(&port, r.as_bytes());
                        }
                    }
                    b'\n' => {}
                    0x20..=0x7e => line.push(b),
                    _ => lock(&state).binary_in_command_mode += 1,
                },
            }
        }
    }
}

fn mode_now(state: &Mutex<State>) -> Mode {
    lock(state).mode
}

/// One command line; returns what the TNC prints.
fn command(s: &mut State, text: &str) -> Option<String> {
    s.lines.push(text.to_string());
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    match words.as_slice() {
        // The radio's PC commands: TC 1 hands the port to them, TN 2,x turns the
        // TNC on in packet mode on band A (0) or B (1).
        ["TC", "1"] => {
            s.tnc_on = false;
            s.kiss_on = false;
            None
        }
        ["TN", "2,0" | "2,1"] => {
            s.tnc_on = true;
            Some("\r\ncmd:".into())
        }
        _ if !s.tnc_on => None,
        [] => Some("\r\ncmd:".into()),
        ["HBAUD", n] => match n.parse::<u32>() {
            Ok(b @ (1200 | 9600)) => {
                s.hbaud = Some(b);
                Some("\r\ncmd:".into())
            }
            _ => Some("\r\n?bad\r\ncmd:".into()),
        },
        ["KISS", "ON"] => {
            s.kiss_on = true;
            Some("\r\ncmd:".into())
        }
        ["RESTART"] if s.kiss_on => {
            s.mode = Mode::Kiss;
            None
        }
        _ => Some("\r\n?EH\r\ncmd:".into()),
    }
}
