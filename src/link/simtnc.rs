//! Simulated KISS TNCs sharing one simulated half-duplex radio channel, in process and in
//! real time. The demo uses it for a radio hop when no radio (or Direwolf) is at hand: the
//! node's real KISS link talks KISS to a simulated TNC, which "transmits" each frame by
//! holding the channel for the frame's air time at the channel's bit rate, then delivers
//! it to every other TNC on the channel.

use super::kiss::KissIo;
use crate::rng::Rng;
use crate::wire::kiss::{self, KissDecoder};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Frames a simulated TNC holds for its host before dropping (like a full TNC buffer).
const RX_QUEUE: usize = 256;
/// Key-up delay per transmission (TXDELAY).
const TXDELAY: Duration = Duration::from_millis(300);

struct Air {
    bitrate: u64,
    loss_ppm: u64,
    rng: Rng,
    stations: Vec<mpsc::Sender<Vec<u8>>>,
    /// Seconds of air used, for the demo's summary.
    air_ms: u64,
    frames: u64,
}

/// A shared simulated channel.
#[derive(Clone)]
pub struct SimChannel {
    air: Arc<Mutex<Air>>,
    /// Held while a station transmits: one transmitter at a time (half duplex).
    ptt: Arc<tokio::sync::Mutex<()>>,
}

impl SimChannel {
    /// A channel at `bitrate` bit/s losing `loss_ppm` frames per million.
    pub fn new(bitrate: u64, loss_ppm: u64, seed: u64) -> SimChannel {
        SimChannel {
            air: Arc::new(Mutex::new(Air {
                bitrate: bitrate.max(1),
                loss_ppm,
                rng: Rng::new(seed),
                stations: Vec::new(),
                air_ms: 0,
                frames: 0,
            })),
            ptt: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Air time used so far (milliseconds) and frames sent.
    pub fn usage(&self) -> (u64, u64) {
        self.air
            .lock()
            .map(|a| (a.air_ms, a.frames))
            .unwrap_or((0, 0))
    }

    /// Attach a TNC to the channel; returns the host side of its KISS byte stream.
    pub fn attach(&self) -> Box<dyn KissIo> {
        let (host, tnc) = tokio::io::duplex(64 * 1024);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(RX_QUEUE);
        let me = match self.air.lock() {
            Ok(mut a) => {
                a.stations.push(tx);
                a.stations.len() - 1
            }
            Err(_) => usize::MAX,
        };
        let (mut rd, mut wr) = tokio::io::split(tnc);
        // Host -> air.
        let chan = self.clone();
        tokio::spawn(async move {
            let mut dec = KissDecoder::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                dec.push(&buf[..n]);
                while let Some(f) = dec.next_frame() {
                    let Ok(f) = f else { continue };
                    if f.command != 0 {
                        continue; // parameters: nothing to simulate
                    }
                    chan.transmit(me, f.payload).await;
                }
            }
        });
        // Air -> host.
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let mut out = Vec::with_capacity(frame.len() + 4);
                kiss::encode_frame(0, 0, &frame, &mut out);
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        Box::new(host)
    }

    async fn transmit(&self, from: usize, frame: Vec<u8>) {
        let _ptt = self.ptt.lock().await;
        let bitrate = self.air.lock().map(|a| a.bitrate).unwrap_or(1200);
        // AX.25 flags and FCS, ~3 % bit stuffing.
        let bits = (frame.len() as u64 + 4) * 8 * 103 / 100;
        let air = TXDELAY + Duration::from_millis(bits * 1000 / bitrate);
        tokio::time::sleep(air).await;
        let targets: Vec<mpsc::Sender<Vec<u8>>> = match self.air.lock() {
            Ok(mut a) => {
                a.air_ms += air.as_millis() as u64;
                a.frames += 1;
                let lost = a.loss_ppm > 0 && a.rng.below(1_000_000) < a.loss_ppm;
                if lost {
                    Vec::new()
                } else {
                    a.stations
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != from)
                        .map(|(_, s)| s.clone())
                        .collect()
                }
            }
            Err(_) => Vec::new(),
        };
        for t in targets {
            let _ = t.try_send(frame.clone());
        }
    }
}
