//! Building the application from its configuration: providers, shared state, routes and
//! the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpServer};
use otp_relay_providers::{
    http, registry, ChatDirectory, MessageProvider, ProviderContext, ProviderSettings, Providers,
    SettingError,
};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder, TracingLogger};

use crate::api;
use crate::api::error::{ApiError, ProblemCode};
use crate::api::state::AppState;
use crate::channel_fallback::{self, ChannelFallbacks};
use crate::config::Config;
use crate::dispatch::{DispatchPolicy, Dispatcher, UnknownRouteProvider};
use crate::followup::Followups;
use crate::prometheus;
use crate::records::Records;
use crate::send::SendService;
use crate::store::{self, Store, StoreError};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Provider(#[from] SettingError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Routes(#[from] UnknownRouteProvider),
    #[error("cannot listen for SIGINT and SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// A bound, not yet running, otp-relay server.
pub struct Application {
    port: u16,
    server: Server,
    followups: Followups,
}

impl Application {
    /// Builds the providers named in the configuration and binds the server.
    pub fn build(config: Config) -> Result<Self, StartupError> {
        let (store, records) = open_state(&config)?;
        let context = provider_context(&config, Arc::new(records.clone()));
        let providers = build_providers(&config, &context)?;
        Self::assemble(config, store, records, providers)
    }

    /// Binds the server with the given providers, in priority order, in place of the
    /// configured ones (for embedding and tests).
    pub fn build_with_providers(
        config: Config,
        providers: Vec<Arc<dyn MessageProvider>>,
    ) -> Result<Self, StartupError> {
        let store = store::open(&config.store).map_err(StartupError::Store)?;
        let records = Records::new(Arc::clone(&store), config.message_retention);
        // The configured providers' webhooks still answer (their settings verify them).
        let context = provider_context(&config, Arc::new(records.clone()));
        let webhooks = config
            .providers
            .iter()
            .flat_map(|settings| settings.webhooks(&context))
            .collect();
        let providers = Providers {
            list: providers,
            telegram_bot: None,
            webhooks,
        };
        Self::assemble(config, store, records, providers)
    }

    fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        records: Records,
        providers: Providers,
    ) -> Result<Self, StartupError> {
        // Everything the first send needs is loaded before the port is bound: a
        // connection accepted earlier would wait for it (the numbering plan alone loads
        // in ~150 ms).
        otp_relay_providers::phone::warm_up();
        prometheus::handle();
        release_free_heap();
        let listener =
            TcpListener::bind(config.bind_addr).map_err(|source| StartupError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: config.bind_addr,
                source,
            })?
            .port();
        let config = Arc::new(config);
        let send = send_service(&config, &store, &records, providers.list, Role::Server)?;
        let webhook_urls = api::webhooks::WebhookUrls::new(config.public_base_url.as_deref());
        let followups = send.followups().clone();
        let stop = stop_signal().map_err(StartupError::Signals)?;
        // In-flight sends get their whole deadline, plus a little, to finish on shutdown.
        let shutdown_grace = config.limits.request_deadline + Duration::from_secs(2);
        let access = web::Data::new(config.access.clone());
        let http = config.http.clone();
        let workers = config.workers;
        let state = web::Data::new(AppState {
            send,
            store,
            records,
            webhooks: providers.webhooks,
            webhook_urls,
            telegram_bot: providers.telegram_bot,
            followups: followups.clone(),
            config,
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(around_request))
                .wrap(TracingLogger::<RootSpan>::new())
                .app_data(access.clone())
                .app_data(state.clone())
                .service(web::resource("/api/sms").route(web::post().to(api::send::send)))
                .service(web::resource("/v1/messages").route(web::post().to(api::send::send)))
                .service(
                    web::resource("/v1/messages/{id}")
                        .route(web::get().to(api::messages::get_message)),
                )
                .service(
                    web::resource(api::webhooks::ROUTE)
                        .route(web::post().to(api::webhooks::receive))
                        .route(web::get().to(api::webhooks::receive)),
                )
                .service(
                    web::resource("/v1/compat/authentik")
                        .route(web::post().to(api::compat::authentik)),
                )
                .service(
                    web::resource("/v1/compat/keycloak-mfa-plugins")
                        .route(web::post().to(api::compat::keycloak_mfa_plugins)),
                )
                .service(web::resource("/health/live").route(web::get().to(api::health::live)))
                .service(web::resource("/health/ready").route(web::get().to(api::health::ready)))
                .service(web::resource("/metrics").route(web::get().to(api::health::metrics)))
                .service(web::resource("/openapi.json").route(web::get().to(api::openapi::openapi)))
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
                }))
        })
        .workers(workers)
        .shutdown_signal(stop)
        .shutdown_timeout(shutdown_grace.as_secs())
        // A client that never finishes its headers, idles, or trickles a body is dropped
        // within a bounded time (the body's bound is in `read_limited`): connections are
        // cheap for actix, but each one still costs a descriptor and a slot below.
        .client_request_timeout(http.header_timeout)
        .keep_alive(http.keep_alive)
        .client_disconnect_timeout(http.disconnect_timeout)
        .max_connections(http.max_connections_per_worker)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], port)),
            source,
        })?
        .run();
        tracing::info!(port, "otp-relay listening");
        Ok(Application {
            port,
            server,
            followups,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The status and price lookups, to wait on them (tests).
    pub fn followups(&self) -> Followups {
        self.followups.clone()
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting and lets in-flight
    /// requests finish within the grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Hands the heap's free memory back to the system. Loading the numbering plan leaves
/// about 1 MiB of freed, still resident heap behind, which glibc keeps for later
/// allocations; a server that idles most of the time is better off without it.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free pages of glibc's own heaps to the
        // system; it touches no memory in use and is safe to call from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. Both stop the server gracefully:
/// actix-web's own handling treats SIGINT as a fast stop that closes the connections of
/// sends in flight, and a login waiting on one would see its code lost. The listeners are
/// registered now, so a signal arriving before the server is first polled is not lost
/// to the default action.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(
            signal = name,
            "stopping: no new connections; finishing the sends in flight"
        );
    })
}

/// The shared store and the message records over it, as configured.
fn open_state(config: &Config) -> Result<(Arc<dyn Store>, Records), StartupError> {
    let store = store::open(&config.store).map_err(StartupError::Store)?;
    let mut records = Records::new(Arc::clone(&store), config.message_retention);
    if let Some(ttl) = config.providers.iter().find_map(|p| match p {
        ProviderSettings::Telegram(settings) => Some(settings.link_ttl),
        _ => None,
    }) {
        records = records.with_link_ttl(ttl);
    }
    Ok((store, records))
}

/// Whether the process serves (and so sends the channel fallbacks that come due) or
/// sends one message and exits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    OneShot,
}

/// The send service over the given state and providers, with the follow-up lookups and
/// channel fallbacks it schedules after sends; refused when a route names a provider not
/// among `providers`. A one-shot process only schedules fallbacks: a worker it ran could
/// take one and exit before sending it.
fn send_service(
    config: &Arc<Config>,
    store: &Arc<dyn Store>,
    records: &Records,
    providers: Vec<Arc<dyn MessageProvider>>,
    role: Role,
) -> Result<SendService, StartupError> {
    let dispatcher = Arc::new(
        Dispatcher::new(providers.clone(), dispatch_policy(config)).with_routes(&config.routes)?,
    );
    let followups = Followups::start(
        providers,
        records.clone(),
        Arc::clone(store),
        config.followup.clone(),
    );
    let fallbacks = ChannelFallbacks::new(Arc::clone(store), config.fallback.clone());
    if fallbacks.enabled() {
        records.set_status_hook(Arc::new(fallbacks.clone()));
        if role == Role::Server {
            channel_fallback::worker::start(
                &fallbacks,
                records.clone(),
                Arc::clone(&dispatcher),
                followups.clone(),
                config.limits.request_deadline,
            );
        }
    }
    Ok(SendService::new(
        Arc::clone(config),
        dispatcher,
        Arc::clone(store),
        records.clone(),
        followups,
        fallbacks,
    ))
}

/// The send service as the server would build it from `config` (its store, records and
/// providers), without a server: for the command line's `send`.
pub fn standalone_send_service(config: Config) -> Result<SendService, StartupError> {
    let (store, records) = open_state(&config)?;
    let providers = build_providers(
        &config,
        &provider_context(&config, Arc::new(records.clone())),
    )?;
    send_service(
        &Arc::new(config),
        &store,
        &records,
        providers.list,
        Role::OneShot,
    )
}

/// The dispatcher's time bounds and retry policy, from the configuration.
pub fn dispatch_policy(config: &Config) -> DispatchPolicy {
    let limits = &config.limits;
    DispatchPolicy {
        provider_timeout: limits.provider_timeout,
        request_deadline: limits.request_deadline,
        retry_max: limits.retry_max,
        circuit_failures: limits.circuit_failures,
        circuit_cooldown: limits.circuit_cooldown,
    }
}

/// What the adapters share: one HTTP client, their webhooks' public URLs, the Telegram
/// chat links.
pub fn provider_context(config: &Config, chats: Arc<dyn ChatDirectory>) -> ProviderContext {
    ProviderContext {
        client: http::client(config.limits.provider_timeout),
        callback_urls: Arc::new(api::webhooks::WebhookUrls::new(
            config.public_base_url.as_deref(),
        )),
        chats,
    }
}

/// The configured providers, in priority order, each built once (the Telegram bot
/// among them also answers the bot's webhook).
pub fn build_providers(
    config: &Config,
    context: &ProviderContext,
) -> Result<Providers, StartupError> {
    let providers = registry::build_all(&config.providers, context)?;
    if config.providers.iter().all(|settings| !settings.is_real()) {
        tracing::warn!(
            "no real provider is configured: messages are printed to stdout by the console \
             provider, not delivered; set PROVIDERS to send them"
        );
    }
    Ok(providers)
}

/// Around every request, inside the tracing span: refuses one whose line and headers
/// exceed `HttpLimits::max_header_bytes` with 431 (actix itself reads at most 96 headers
/// and 128 KiB of head per request), counts the answer by route, status and outcome
/// code, and echoes the span's request id in `X-Request-Id`, so that a caller's report
/// can be matched to the log lines. One middleware rather than three: each layer costs a
/// boxed future and a poll per request.
async fn around_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(usize::MAX, |state| state.config.http.max_header_bytes);
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    // Written into a header value straight from the id's bytes, with no string between.
    let request_id = req.extensions().get::<RequestId>().and_then(|id| {
        HeaderValue::from_str(
            id.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        )
        .ok()
    });
    let mut response = if head_size(&req) > limit {
        req.error_response(ApiError::HeadersTooLarge { limit })
            .map_into_right_body()
    } else {
        next.call(req).await?.map_into_left_body()
    };
    let status = response.status();
    let code = match response.response().extensions().get::<ProblemCode>() {
        Some(ProblemCode(code)) => *code,
        None if status.is_success() => "ok",
        None => "other",
    };
    prometheus::count_http_request(route, status.as_u16(), code);
    if let Some(value) = request_id {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}

/// The bytes of a request's line and headers, as HTTP/1.1 writes them.
fn head_size(req: &ServiceRequest) -> usize {
    let uri = req.uri();
    let target = uri.path().len() + uri.query().map_or(0, |query| query.len() + 1);
    let line = req.method().as_str().len() + target + " HTTP/1.1\r\n ".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": \r\n".len() + value.len())
        .sum();
    line + headers
}

/// The request span of `tracing-actix-web`, built only when it is recorded.
///
/// The default builder gathers the route, the connection info (formatting the peer
/// address) and more before it asks whether the span is wanted; at `RUST_LOG=warn` that
/// was work for nothing on every request. Errors are still logged at the end.
struct RootSpan;

impl RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        if tracing::span_enabled!(tracing::Level::INFO) {
            tracing_actix_web::root_span!(request)
        } else {
            tracing::Span::none()
        }
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
