//! Closed-loop WebSocket echo load generator.
//!
//! N clients connect to an echo endpoint; each one sends a text message, waits for its
//! echo, and sends the next one. After a warm-up period, messages completed during the
//! measurement window are counted and their round-trip times recorded.
//!
//! Usage:
//!   ws-load [URL] [--clients N] [--size BYTES] [--warmup SECS] [--duration SECS] [--threads N]
//!
//! The last line printed is machine readable: `RESULT {json}`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client waiting longer than this for its echo gives up and reports an error.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    url: String,
    clients: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    threads: usize,
}

const USAGE: &str = "usage: ws-load [URL] [--clients N] [--size BYTES] [--warmup SECS] \
                     [--duration SECS] [--threads N]";

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        url: "ws://127.0.0.1:8000/".to_owned(),
        clients: 32,
        size: 64,
        warmup: 2.0,
        duration: 6.0,
        threads: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let bad = |name: &str, v: &str| format!("invalid value for {name}: {v:?}\n{USAGE}");
        match arg.as_str() {
            "-c" | "--clients" => {
                let v = value("--clients")?;
                opts.clients = v.parse().map_err(|_| bad("--clients", &v))?;
            }
            "-s" | "--size" => {
                let v = value("--size")?;
                opts.size = v.parse().map_err(|_| bad("--size", &v))?;
            }
            "-w" | "--warmup" => {
                let v = value("--warmup")?;
                opts.warmup = v.parse().map_err(|_| bad("--warmup", &v))?;
            }
            "-d" | "--duration" => {
                let v = value("--duration")?;
                opts.duration = v.parse().map_err(|_| bad("--duration", &v))?;
            }
            "-t" | "--threads" => {
                let v = value("--threads")?;
                opts.threads = v.parse().map_err(|_| bad("--threads", &v))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}\n{USAGE}"));
            }
            other => opts.url = other.to_owned(),
        }
    }
    if opts.clients == 0 || opts.threads == 0 || opts.duration <= 0.0 || opts.warmup < 0.0 {
        return Err(format!(
            "clients, threads and duration must be positive\n{USAGE}"
        ));
    }
    Ok(opts)
}

/// What one client saw during the measurement window.
#[derive(Default)]
struct ClientStats {
    messages: u64,
    /// Round-trip times in microseconds.
    rtts_us: Vec<u32>,
    error: Option<String>,
}

async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _resp) = connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(ws)
}

/// Send, wait for the echo, repeat, until `end`.
async fn client_loop(mut ws: Ws, payload: Utf8Bytes, start: Instant, end: Instant) -> ClientStats {
    let mut stats = ClientStats::default();
    let size = payload.len();
    'outer: loop {
        let sent_at = Instant::now();
        if sent_at >= end {
            break;
        }
        if let Err(e) = ws.send(Message::Text(payload.clone())).await {
            stats.error = Some(format!("send: {e}"));
            break;
        }
        loop {
            let Ok(next) = tokio::time::timeout(RECV_TIMEOUT, ws.next()).await else {
                stats.error = Some(format!("no echo within {RECV_TIMEOUT:?}"));
                break 'outer;
            };
            match next {
                Some(Ok(Message::Text(t))) if t.len() == size => break,
                Some(Ok(Message::Binary(b))) if b.len() == size => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    stats.error = Some(format!("server closed the connection: {frame:?}"));
                    break 'outer;
                }
                Some(Ok(other)) => {
                    stats.error = Some(format!("unexpected echo of {} bytes", other.len()));
                    break 'outer;
                }
                Some(Err(e)) => {
                    stats.error = Some(format!("receive: {e}"));
                    break 'outer;
                }
                None => {
                    stats.error = Some("connection ended".to_owned());
                    break 'outer;
                }
            }
        }
        let done = Instant::now();
        if done >= start && done < end {
            stats.messages += 1;
            let rtt = done.duration_since(sent_at).as_micros();
            stats.rtts_us.push(u32::try_from(rtt).unwrap_or(u32::MAX));
        }
    }
    if stats.error.is_none() {
        // Best effort: a clean close so the server does not log aborted connections.
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    stats
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run(opts: Options) -> Result<bool, String> {
    let payload: Utf8Bytes = "x".repeat(opts.size).into();

    let mut sockets = Vec::with_capacity(opts.clients);
    let connects: Vec<_> = (0..opts.clients)
        .map(|_| {
            let url = opts.url.clone();
            tokio::spawn(async move { connect(&url).await })
        })
        .collect();
    for handle in connects {
        let ws = handle.await.map_err(|e| e.to_string())??;
        sockets.push(ws);
    }

    let start = Instant::now() + Duration::from_secs_f64(opts.warmup);
    let end = start + Duration::from_secs_f64(opts.duration);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(client_loop(ws, payload.clone(), start, end)))
        .collect();

    let mut total = 0u64;
    let mut rtts = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await.map_err(|e| e.to_string())?;
        total += stats.messages;
        rtts.extend_from_slice(&stats.rtts_us);
        if let Some(e) = stats.error {
            errors.push(e);
        }
    }
    rtts.sort_unstable();

    let rate = total as f64 / opts.duration;
    let (p50, p99, max) = (
        percentile(&rtts, 50.0),
        percentile(&rtts, 99.0),
        rtts.last().copied().unwrap_or(0),
    );
    println!(
        "{} clients, {}-byte text messages, {:.1}s warm-up, {:.1}s measured",
        opts.clients, opts.size, opts.warmup, opts.duration
    );
    println!("  messages: {total}");
    println!("  messages/s: {rate:.1}");
    println!("  round trip p50 {p50}us  p99 {p99}us  max {max}us");
    for e in &errors {
        eprintln!("  client error: {e}");
    }
    println!(
        "RESULT {{\"messages\": {total}, \"msgs_per_s\": {rate:.1}, \"p50_us\": {p50}, \
         \"p99_us\": {p99}, \"max_us\": {max}, \"errors\": {}, \"clients\": {}, \
         \"size\": {}, \"duration\": {}}}",
        errors.len(),
        opts.clients,
        opts.size,
        opts.duration
    );
    Ok(errors.is_empty())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ws-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ws-load: {e}");
            ExitCode::FAILURE
        }
    }
}
