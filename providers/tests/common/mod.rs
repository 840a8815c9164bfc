//! Fixtures shared by the adapter tests: messages, a provider context, and readers for
//! what a mock provider received.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use otp_relay_providers::{
    http, CallbackUrls, Channel, MemoryChatDirectory, NoCallbacks, OutboundMessage, Phone,
    ProviderContext,
};
use wiremock::Request;

/// The message id every fixture message carries.
pub const MESSAGE_ID: &str = "01JD5X3QK8V7N2M4R6T8W0Y2Z4";

/// The QIAM pt_BR sentence, as it reaches an adapter after the server decoded the
/// Latin-1 body: proper Unicode.
pub const PT_BR_TEXT: &str = "Seu código SMS é 123456 e válido por 5 minutos.";

/// A message to `+5511966191717` on `channel`.
pub fn message(text: &str, code: Option<&str>, channel: Channel) -> OutboundMessage {
    OutboundMessage {
        id: MESSAGE_ID.to_owned(),
        to: Phone::parse("+5511966191717", None).unwrap(),
        channel,
        text: text.to_owned(),
        code: code.map(str::to_owned),
        ttl: Duration::from_secs(300),
    }
}

/// The fixture client's timeout: short enough for the timeout tests, long enough that
/// a loaded CI machine never turns a mock's prompt answer into a timeout.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A context with a short-timeout client and, optionally, a public URL for callbacks.
pub fn context(public_base_url: Option<&str>) -> ProviderContext {
    context_with_chats(public_base_url, Arc::new(MemoryChatDirectory::new(100)))
}

pub fn context_with_chats(
    public_base_url: Option<&str>,
    chats: Arc<MemoryChatDirectory>,
) -> ProviderContext {
    let callback_urls: Arc<dyn CallbackUrls> = match public_base_url {
        Some(base) => Arc::new(ServerUrls(base.to_owned())),
        None => Arc::new(NoCallbacks),
    };
    ProviderContext {
        client: http::client(CLIENT_TIMEOUT),
        callback_urls,
        chats,
    }
}

/// The server's layout: webhook `name` at `{base}/webhooks/{name}`.
pub struct ServerUrls(pub String);

impl CallbackUrls for ServerUrls {
    fn url(&self, webhook: &str) -> Option<String> {
        Some(format!("{}/webhooks/{webhook}", self.0))
    }

    fn setting(&self) -> &'static str {
        "PUBLIC_BASE_URL"
    }

    fn example(&self) -> &'static str {
        "https://otp.example.com"
    }
}

/// A delay longer than [`context`]'s client timeout, for mocks that must time out.
pub const SLOWER_THAN_TIMEOUT: Duration = Duration::from_secs(6);

/// A base URL on which nothing listens: connecting is refused.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The form fields of a request, in order of appearance, keys repeated as sent.
pub fn form(request: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&request.body).expect("form-urlencoded body")
}

/// The form fields as a map (for requests that do not repeat keys).
pub fn form_map(request: &Request) -> BTreeMap<String, String> {
    form(request).into_iter().collect()
}

pub fn json(request: &Request) -> serde_json::Value {
    serde_json::from_slice(&request.body).expect("JSON body")
}

pub fn header<'r>(request: &'r Request, name: &str) -> &'r str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The user and password of a Basic `Authorization` header.
pub fn basic_auth(request: &Request) -> (String, String) {
    use base64::Engine;
    let value = header(request, "authorization");
    let encoded = value.strip_prefix("Basic ").expect("Basic authorization");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    let (user, password) = decoded.split_once(':').unwrap();
    (user.to_owned(), password.to_owned())
}
