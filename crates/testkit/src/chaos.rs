//! A fault-injecting TCP proxy for outage tests: it listens on `127.0.0.1:0`, forwards to
//! an upstream (the test cluster's TCP port), and its [`Mode`] switches at runtime, so a
//! server whose database URL points at the proxy sees its database vanish, hang, slow down
//! or cut connections, and come back.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything both ways.
    Pass,
    /// Close new connections as soon as they are accepted; open ones keep working.
    DropNew,
    /// Reset (RST) every open connection, and every new one as it arrives.
    Reset,
    /// Accept and keep sockets but forward nothing, as a database host that vanished from
    /// the network; what was sent meanwhile is held and delivered when the mode changes
    /// (TCP would retransmit it).
    Blackhole,
    /// Delay every chunk, either way, by this much.
    Latency(Duration),
    /// Close a connection once it has carried this many bytes (both ways together).
    CloseAfter(usize),
    /// The connections open now go silent for good, as after a failover that moved the
    /// database's address: nothing more passes on them whatever the mode later; new
    /// connections pass.
    Strand,
}

/// The running proxy; it stops (and ends every connection) when dropped.
pub struct ChaosProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    /// Connections numbered below this are stranded ([`Mode::Strand`]).
    stranded_below: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// A proxy to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the chaos proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let stranded_below = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let stranded = stranded_below.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let id = count.fetch_add(1, Ordering::SeqCst) as u64;
                let stranded = Stranded {
                    id,
                    below: stranded.clone(),
                };
                let _ = client.set_nodelay(true);
                let current = *rx.borrow();
                match current {
                    Mode::DropNew => drop(client),
                    Mode::Reset => reset(client),
                    _ => {
                        tokio::spawn(connection(client, upstream, rx.clone(), stranded));
                    }
                }
            }
        });
        ChaosProxy {
            addr,
            mode,
            accepted,
            stranded_below,
            task,
        }
    }

    /// The address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the behaviour; takes effect at once for open connections too.
    pub fn set_mode(&self, mode: Mode) {
        if mode == Mode::Strand {
            self.stranded_below.store(
                self.accepted.load(Ordering::SeqCst) as u64,
                Ordering::SeqCst,
            );
        }
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes with RST instead of FIN. (A zero linger does not block the thread on close, which
/// is what the deprecation warns about.)
#[allow(deprecated)]
fn reset(s: TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// A connection's number, and the proxy's stranding boundary.
#[derive(Clone)]
struct Stranded {
    id: u64,
    below: Arc<AtomicU64>,
}

impl Stranded {
    fn is(&self) -> bool {
        self.id < self.below.load(Ordering::SeqCst)
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stranded: Stranded,
) {
    // A blackholed connection gets nowhere until the mode changes.
    if mode.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = server.set_nodelay(true);
    let carried = AtomicUsize::new(0);
    let was_reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let mut reset_rx = mode.clone();
        tokio::select! {
            _ = pump(cr, sw, mode.clone(), &carried, &stranded) => false,
            _ = pump(sr, cw, mode.clone(), &carried, &stranded) => false,
            r = reset_rx.wait_for(|m| *m == Mode::Reset) => r.is_ok(),
        }
    };
    if was_reset || *mode.borrow_and_update() == Mode::Reset {
        reset(client);
        reset(server);
    }
}

/// Copies one direction under the current mode; returns when either side closes, an error
/// occurs, or the mode says to close.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut mode: watch::Receiver<Mode>,
    carried: &AtomicUsize,
    stranded: &Stranded,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stranded.is() {
            // Silent for good; ends with the proxy.
            let _ = mode.wait_for(|_| false).await;
            return;
        }
        // Held while blackholed.
        let m = match mode.wait_for(|m| *m != Mode::Blackhole).await {
            Ok(m) => *m,
            Err(_) => return,
        };
        let mut chunk = &buf[..n];
        let mut last = false;
        match m {
            Mode::Latency(d) => tokio::time::sleep(d).await,
            Mode::CloseAfter(limit) => {
                let before = carried.fetch_add(n, Ordering::Relaxed);
                if before + n >= limit {
                    chunk = &chunk[..limit.saturating_sub(before).min(n)];
                    last = true;
                }
            }
            Mode::Reset => return,
            Mode::Pass | Mode::DropNew | Mode::Blackhole | Mode::Strand => {}
        }
        if to.write_all(chunk).await.is_err() || last {
            return;
        }
    }
}
