//! The load generator: N keep-alive HTTP/1.1 connections, each sending one request after
//! another and timing it. A hand-rolled client on purpose: it costs far less CPU per request
//! than a general HTTP client, which matters when load generator and gateway share two cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends a complete request and reads one response (Content-Length bodies only).
    pub async fn call(&mut self, request: &[u8]) -> std::io::Result<Reply> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buf.len() < header_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(Reply {
            status,
            body: self.buf[header_end..header_end + length].to_vec(),
        })
    }
}

/// Builds a request with a JSON body.
pub fn request(method: &str, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n");
    match body {
        Some(b) => {
            r.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            ));
        }
        None => r.push_str("\r\n"),
    }
    r.into_bytes()
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Responses with the expected status.
    pub ok: u64,
    /// Responses with another status, or failed connections.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of every successful request, sorted.
    pub latencies: Vec<Duration>,
    /// Per successful request: its sequence number, when its answer came, and the body.
    pub answers: Vec<(u64, Instant, Vec<u8>)>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How long a run lasts.
#[derive(Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    Count(u64),
}

/// Runs `clients` connections against `addr` until `until`, each request built by `make(seq)`
/// and expected to answer `expect`. With `keep_answers`, every answer's body is kept.
pub async fn run(
    addr: SocketAddr,
    clients: usize,
    until: Until,
    expect: u16,
    keep_answers: bool,
    make: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    progress: Option<Arc<AtomicU64>>,
) -> LoadResult {
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (seq, stop, make, progress) =
            (seq.clone(), stop.clone(), make.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = LoadResult::default();
            let mut conn = match Conn::open(addr).await {
                Ok(c) => c,
                Err(_) => {
                    out.errors += 1;
                    return out;
                }
            };
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                match until {
                    Until::Count(total) if n >= total => break,
                    Until::Elapsed(d) if started.elapsed() >= d => break,
                    _ => {}
                }
                let req = make(n);
                let t0 = Instant::now();
                match conn.call(&req).await {
                    Ok(reply) if reply.status == expect => {
                        let now = Instant::now();
                        out.ok += 1;
                        out.latencies.push(now - t0);
                        if keep_answers {
                            out.answers.push((n, now, reply.body));
                        }
                        if let Some(p) = &progress {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => out.errors += 1,
                    Err(_) => {
                        out.errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        if let Ok(part) = t.await {
            total.ok += part.ok;
            total.errors += part.errors;
            total.latencies.extend(part.latencies);
            total.answers.extend(part.answers);
        }
    }
    stop.store(true, Ordering::Relaxed);
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}
