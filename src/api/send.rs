//! `POST /api/sms` and `POST /v1/messages`: one handler for the QIAM payload and the
//! canonical one. The HTTP side of a send only: the body is read and decoded here, the
//! send itself is the send service's (`crate::send`), and its outcome is rendered here.

use actix_web::http::{header, header::ContentType, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use otp_relay_providers::Channel;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::api::body::{decode_text, parse_json, read_limited};
use crate::api::caller::Caller;
use crate::api::error::{send_problem_json, send_retry_after, send_status, ApiError, PROBLEM_JSON};
use crate::api::state::AppState;
use crate::dispatch::Attempt;
use crate::send::{self, Outcome, Render, SendError, Sent};
use crate::store::StoredAnswer;

/// A string, or a number some callers send where a string is meant.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Number(serde_json::Number),
}

impl Scalar {
    pub fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// The send request; unknown fields (QIAM's `used`) are ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SendRequest {
    /// Destination, normalized to E.164 (`DEFAULT_REGION` for national formats).
    #[schema(value_type = Option<String>, example = "+5511966191717")]
    pub mobile: Option<Scalar>,
    /// The message text; 4-10 digits alone are a bare code rendered by the template.
    #[schema(value_type = Option<String>, example = "Your SMS code is 123456 and is valid for 5 minutes.")]
    pub totp: Option<Scalar>,
    /// Explicit text (wins over `totp`).
    pub message: Option<String>,
    /// Explicit code (4-10 digits); otherwise the first 4-8 digit run of the text.
    #[schema(value_type = Option<String>)]
    pub code: Option<Scalar>,
    /// `sms`, `whatsapp` or `telegram`; default `DEFAULT_CHANNEL`.
    pub channel: Option<String>,
    /// Picks `MESSAGE_TEMPLATE_<LOCALE>` for bare codes.
    pub locale: Option<String>,
    /// Seconds the code stays valid (1-86400); default `MESSAGE_TTL`.
    pub ttl: Option<u64>,
}

impl From<SendRequest> for send::Request {
    fn from(request: SendRequest) -> Self {
        send::Request {
            mobile: request.mobile.map(Scalar::into_string),
            totp: request.totp.map(Scalar::into_string),
            message: request.message,
            code: request.code.map(Scalar::into_string),
            channel: request.channel,
            locale: request.locale,
            ttl: request.ttl,
        }
    }
}

/// The answer to a successful send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SendResponse<'a> {
    /// otp-relay's id for the message (a ULID).
    id: &'a str,
    /// `queued`, `sent`, `delivered`, `failed` or `undelivered`.
    status: &'a str,
    #[schema(value_type = String, example = "sms")]
    channel: Channel,
    provider: &'a str,
    provider_message_id: Option<&'a str>,
    attempts: &'a [Attempt],
}

/// Reads a send request out of a body's text, in one caller's dialect.
pub type Dialect = fn(&HttpRequest, &str) -> Result<SendRequest, ApiError>;

/// `POST /api/sms` and `POST /v1/messages`.
pub async fn send(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_send(req, caller, payload, state, |_, text| parse_json(text)).await
}

/// The whole send, for any dialect: the body read and decoded, then the send service.
pub async fn serve_send(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
    dialect: Dialect,
) -> Result<HttpResponse, ApiError> {
    let received_at = Instant::now();
    let request = match read_request(&req, payload, &state, dialect).await {
        Ok(request) => request,
        Err(error) => {
            // Measured like the sends the service sees.
            send::observe(received_at, error.code());
            return Err(error);
        }
    };
    // A header that is not visible ASCII is kept as its bytes read lossily: the
    // idempotency stage refuses it as an invalid key, in its turn.
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let context = send::Context {
        caller: caller.identity,
        idempotency_key,
        received_at,
    };
    match state.send.send(request, context, &HttpAnswers).await? {
        Outcome::Sent { answer, .. } => Ok(HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(answer.body)),
        Outcome::Replayed(answer) => Ok(replay(answer)),
    }
}

/// The body, within its own bound (a client still sending holds no send slot, and a
/// slow one does not spend the send's time), read in the route's dialect.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    dialect: Dialect,
) -> Result<send::Request, ApiError> {
    let body = read_limited(req, payload, state.config.http.body_timeout).await?;
    Ok(dialect(req, &decode_text(&body))?.into())
}

/// A repeat's answer: the first one's status and body, marked as replayed.
fn replay(answer: StoredAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        ContentType::json()
    } else {
        ContentType(PROBLEM_JSON.parse().expect("a valid media type"))
    };
    let mut response = HttpResponse::build(status);
    response
        .content_type(content_type)
        .insert_header(("Idempotent-Replayed", "true"));
    if let Some(seconds) = answer.retry_after {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    response.body(answer.body)
}

/// Sends' answers as the HTTP API gives them: the JSON success document, or the
/// problem document of the failure; stored so under an idempotency key, so that a
/// repeat gets the same status and body.
pub struct HttpAnswers;

/// Bytes reserved for a send's answer before it is written.
const ANSWER_JSON_CAPACITY: usize = 320;

impl Render for HttpAnswers {
    fn sent(&self, sent: &Sent) -> StoredAnswer {
        let delivery = &sent.delivery;
        let receipt = &delivery.receipt;
        let response = SendResponse {
            id: &sent.id,
            status: receipt.status.as_str(),
            channel: delivery.channel,
            provider: &receipt.provider,
            provider_message_id: receipt.provider_message_id.as_deref(),
            attempts: &delivery.attempts,
        };
        // Room for the whole answer at once (some 200 bytes with one attempt).
        let mut body = Vec::with_capacity(ANSWER_JSON_CAPACITY);
        serde_json::to_writer(&mut body, &response).expect("the response serializes");
        StoredAnswer {
            status: 200,
            body: String::from_utf8(body).expect("serde_json writes UTF-8"),
            retry_after: None,
        }
    }

    fn failed(&self, error: &SendError) -> StoredAnswer {
        StoredAnswer {
            status: send_status(error).as_u16(),
            body: send_problem_json(error),
            retry_after: send_retry_after(error),
        }
    }
}
