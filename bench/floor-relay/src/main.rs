//! The floor of otp-relay's stack, for `bench/run.sh` only: the same two HTTP exchanges
//! with the same libraries (actix-web in, one shared reqwest client out, configured as
//! otp-relay configures it) and nothing else: no parsing of the number or the body, no
//! guards, records, metrics or logs. What otp-relay costs above this is its own work.
//!
//! - `POST /api/sms` reads the body, sends one fixed Twilio Messages request to
//!   `--provider`, reads the reply and answers `200` with a small JSON body (`502` when
//!   the provider failed or did not answer 201).
//! - `GET /stats` answers `{"ok":..,"in_flight":..}`: 200 answers given, sends under way.
//! - `GET /health/ready` answers `200`.
//!
//! Usage: `floor-relay --provider http://127.0.0.1:9411 [--addr 127.0.0.1:0] [--workers N]`.
//! It prints `listening on <addr>` once bound (port 0 picks a free one).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

const PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const FORM: &str =
    "To=%2B5511966191717&Body=Your+SMS+code+is+123456+and+is+valid+for+5+minutes.&From=%2B14155550100";

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    in_flight: AtomicU64,
}

struct Relay {
    client: reqwest::Client,
    url: String,
    stats: Stats,
}

async fn send(relay: web::Data<Relay>, _body: web::Bytes) -> HttpResponse {
    relay.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let reply = relay
        .client
        .post(&relay.url)
        .basic_auth("AC0123456789abcdef0123456789abcdef", Some("x"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(FORM)
        .send()
        .await;
    let accepted = match reply {
        Ok(reply) => reply.status().as_u16() == 201 && reply.bytes().await.is_ok(),
        Err(_) => false,
    };
    relay.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    if !accepted {
        return HttpResponse::BadGateway().finish();
    }
    relay.stats.ok.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"queued"}"#)
}

async fn stats(relay: web::Data<Relay>) -> HttpResponse {
    let ok = relay.stats.ok.load(Ordering::Relaxed);
    let in_flight = relay.stats.in_flight.load(Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(r#"{{"ok":{ok},"in_flight":{in_flight}}}"#))
}

struct Options {
    addr: SocketAddr,
    provider: String,
    workers: usize,
}

fn options() -> Result<Options, String> {
    let mut opts = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        provider: String::new(),
        workers: std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => opts.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--provider" => opts.provider = value()?,
            "--workers" => {
                opts.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if opts.provider.is_empty() {
        return Err("--provider is required".into());
    }
    Ok(opts)
}

fn main() -> std::io::Result<()> {
    let opts = options().unwrap_or_else(|problem| {
        eprintln!("floor-relay: {problem}");
        std::process::exit(2)
    });
    // As otp-relay builds its provider client (providers/src/http.rs).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds");
    let relay = web::Data::new(Relay {
        client,
        url: format!("{}{PATH}", opts.provider.trim_end_matches('/')),
        stats: Stats::default(),
    });
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(relay.clone())
                .route("/api/sms", web::post().to(send))
                .route("/stats", web::get().to(stats))
                .route("/health/ready", web::get().to(HttpResponse::Ok))
        })
        .workers(opts.workers)
        .bind(opts.addr)?;
        for addr in server.addrs() {
            println!("listening on {addr}");
        }
        server.run().await
    })
}
