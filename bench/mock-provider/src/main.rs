//! A fast stand-in for Twilio's Messages endpoint, for `bench/run.sh` only.
//!
//! - `POST /2010-04-01/Accounts/{Sid}/Messages.json` answers `201` with a Message
//!   resource whose `sid` is unique (`SM` + 32 hex digits) and `status` `queued`, after
//!   `--delay-ms` when given. The body is read whole; a request without Basic auth or
//!   without a `To` field is `400`, so a relay that sent nonsense is not counted as a
//!   message.
//! - `GET /stats` answers `{"requests":..,"messages":..,"connections":..,"open":..}`:
//!   requests served (other than `/stats`), 201 answers given, connections accepted, connections
//!   open now.
//!
//! Usage: `mock-provider [--addr 127.0.0.1:9411] [--delay-ms 0] [--threads 1]`.
//! It prints `listening on <addr>` once bound (port 0 picks a free one).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    messages: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
}

struct Options {
    addr: SocketAddr,
    delay: Duration,
    threads: usize,
}

fn options() -> Result<Options, String> {
    let mut opts = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 9411)),
        delay: Duration::ZERO,
        threads: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => opts.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--delay-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?;
                opts.delay = Duration::from_millis(ms);
            }
            "--threads" => {
                opts.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
                if opts.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                return Err(
                    "usage: mock-provider [--addr IP:PORT] [--delay-ms N] [--threads N]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !opts.addr.ip().is_loopback() {
        return Err("--addr must be a loopback address: this is a benchmark mock".into());
    }
    Ok(opts)
}

fn main() {
    let opts = match options() {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("mock-provider: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(error) = runtime.block_on(serve(opts)) {
        eprintln!("mock-provider: {error}");
        std::process::exit(1);
    }
}

async fn serve(opts: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(opts.addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let stats = Arc::new(Stats::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: keep serving the connections we have.
            Err(error) => {
                eprintln!("mock-provider: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        let delay = opts.delay;
        tokio::spawn(async move {
            let service = service_fn(|req| answer(req, Arc::clone(&stats), delay));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn is_messages_path(path: &str) -> bool {
    path.strip_prefix("/2010-04-01/Accounts/")
        .and_then(|rest| rest.strip_suffix("/Messages.json"))
        .is_some_and(|sid| !sid.is_empty() && !sid.contains('/'))
}

async fn answer(
    req: Request<Incoming>,
    stats: Arc<Stats>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/stats" {
        let body = format!(
            r#"{{"requests":{},"messages":{},"connections":{},"open":{}}}"#,
            stats.requests.load(Ordering::Relaxed),
            stats.messages.load(Ordering::Relaxed),
            stats.connections.load(Ordering::Relaxed),
            stats.open.load(Ordering::Relaxed),
        );
        return Ok(reply(StatusCode::OK, body));
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.method() != Method::POST || !is_messages_path(req.uri().path()) {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            r#"{"code":20404,"message":"not found","status":404}"#,
        ));
    }
    let basic = req
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Basic "));
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "{}")),
    };
    let has_to = body
        .split(|&b| b == b'&')
        .any(|field| field.starts_with(b"To="));
    if !basic || !has_to {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            r#"{"code":21604,"message":"A 'To' phone number and Basic auth are required.","status":400}"#,
        ));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let n = stats.messages.fetch_add(1, Ordering::Relaxed) + 1;
    let body = format!(
        r#"{{"sid":"SM{n:032x}","status":"queued","num_segments":"1","error_code":null,"error_message":null}}"#
    );
    Ok(reply(StatusCode::CREATED, body))
}
