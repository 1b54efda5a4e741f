//! A TCP proxy a test controls, between a client and a broker on loopback:
//! it passes bytes, delays them, holds them (a peer that stops answering,
//! sockets open) or cuts every connection and refuses new ones.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Delay(Duration),
    /// Keep connections open but forward nothing (like a SIGSTOP'd peer).
    Hold,
    /// Close every connection and refuse new ones.
    Cut,
}

/// The mode and how many cuts there were: a pump ends when the count moves,
/// even if the mode is back to `Pass` before the pump got to run.
#[derive(Clone, Copy)]
struct Setting {
    mode: Mode,
    cuts: u64,
}

pub struct Proxy {
    pub addr: String,
    mode: watch::Sender<Setting>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        // Bound here, adopted by the proxy's runtime (tests call this from
        // inside their own runtime, where block_on is not allowed).
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap().to_string();
        let (mode, rx) = watch::channel(Setting { mode: Mode::Pass, cuts: 0 });
        let upstream = upstream.to_owned();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((down, _)) = listener.accept().await else { continue };
                let cuts = rx.borrow().cuts;
                if rx.borrow().mode == Mode::Cut {
                    drop(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(&upstream).await else { continue };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, rx.clone(), cuts));
                tokio::spawn(pump(ur, dw, rx.clone(), cuts));
            }
        });
        Proxy { addr, mode, runtime: Some(runtime) }
    }

    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_modify(|s| {
            s.mode = mode;
            if mode == Mode::Cut {
                s.cuts += 1;
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Copies one direction under the current mode; ends both halves on a cut
/// made after the connection was opened.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Setting>,
    cuts: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|s| s.cuts != cuts) => return,
        };
        loop {
            let current = *mode.borrow_and_update();
            if current.cuts != cuts {
                return;
            }
            match current.mode {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Cut => return,
                Mode::Hold => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
