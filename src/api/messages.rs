//! `GET /v1/messages/{id}`: what is known of a sent message, for the caller that sent
//! it; anyone else is told it does not exist.

use actix_web::{web, HttpResponse};

use crate::api::caller::Caller;
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::guards::access::Identity;

pub async fn get_message(
    caller: Caller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // Ids are ULIDs; anything else cannot name a record.
    if id.len() != 26 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::MessageNotFound);
    }
    // A caller whose address could not be known cannot be told from another such one.
    if caller.identity == Identity::Unknown {
        return Err(ApiError::MessageNotFound);
    }
    match state.records.get(&id, &caller.identity.to_string()).await? {
        Some(record) => Ok(HttpResponse::Ok().json(record)),
        None => Err(ApiError::MessageNotFound),
    }
}
