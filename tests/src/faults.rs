//! A fault-injecting HTTP proxy for the S3 tests: it stands between velo and the S3 server on a
//! local port and, by a fixed schedule, answers a request with 503 or 429 itself, drops the
//! connection without an answer, or holds the answer back for a while before forwarding. The
//! rest it forwards unchanged (one request per connection: it asks both sides to close).
//!
//! The schedule is by request number, so a test is reproducible: `Faults { every: 3, .. }`
//! spoils every third request, cycling through the kinds it enables.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does, and how often.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Every `every`-th request gets a fault (0: none).
    pub every: u64,
    pub unavailable: bool,
    pub rate_limited: bool,
    pub dropped: bool,
    /// Hold the answer back this long (0: never).
    pub stall: Duration,
    /// Answer every request with 503: the server is down.
    pub down: bool,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            every: 0,
            unavailable: true,
            rate_limited: true,
            dropped: true,
            stall: Duration::ZERO,
            down: false,
        }
    }
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    pub port: u16,
    injected: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let (injected, requests, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (inj, req, st) = (injected.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = req.fetch_add(1, Ordering::Relaxed) + 1;
                let (faults, inj) = (faults.clone(), inj.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, n, &faults, &inj);
                });
            }
        });
        Proxy {
            port,
            injected,
            requests,
            stop,
        }
    }

    /// The AWS endpoint that goes through the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

enum Fault {
    Unavailable,
    RateLimited,
    Dropped,
    Stall,
}

fn fault_for(n: u64, f: &Faults) -> Option<Fault> {
    if f.down {
        return Some(Fault::Unavailable);
    }
    if f.every == 0 || !n.is_multiple_of(f.every) {
        return None;
    }
    let mut kinds = Vec::new();
    if f.unavailable {
        kinds.push(Fault::Unavailable);
    }
    if f.rate_limited {
        kinds.push(Fault::RateLimited);
    }
    if f.dropped {
        kinds.push(Fault::Dropped);
    }
    if !f.stall.is_zero() {
        kinds.push(Fault::Stall);
    }
    if kinds.is_empty() {
        return None;
    }
    let i = ((n / f.every) as usize) % kinds.len();
    Some(kinds.swap_remove(i))
}

/// One connection: one request read whole, then a fault or the upstream's answer.
fn serve(
    client: TcpStream,
    upstream: u16,
    n: u64,
    faults: &Faults,
    injected: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut client = client;
    let answer = |client: &mut TcpStream, status: &str| {
        injected.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 0\r\n\r\n"
        );
        client.write_all(text.as_bytes())
    };
    match fault_for(n, faults) {
        Some(Fault::Unavailable) => return answer(&mut client, "503 Service Unavailable"),
        Some(Fault::RateLimited) => return answer(&mut client, "429 Too Many Requests"),
        Some(Fault::Dropped) => {
            injected.fetch_add(1, Ordering::Relaxed);
            return client.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::Stall) => {
            injected.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(faults.stall);
        }
        None => {}
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}
