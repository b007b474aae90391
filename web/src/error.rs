//! Errors as responses: a page for the browser (`WebError` itself), JSON for the API
//! (`ApiError`). Nothing reveals paths, SQL or whether a foreign object exists.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse::admin::AdminError;
use gatehouse::store::StoreError;
use maud::html;

#[derive(Debug)]
pub enum WebError {
    BadRequest(String),
    Unauthorized,
    Forbidden(String),
    NotFound,
    Conflict(String),
    TooMany,
    TooLarge,
    /// The store stayed locked past its busy timeout, or could not be read.
    Unavailable,
    /// The store is damaged: no retry will help, an administrator must restore it.
    Damaged,
    /// The request was not received and answered within `web.request_timeout`.
    TimedOut,
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::TooMany => StatusCode::TOO_MANY_REQUESTS,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Unavailable | WebError::Damaged => StatusCode::SERVICE_UNAVAILABLE,
            WebError::TimedOut => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn message(&self) -> String {
        match self {
            WebError::BadRequest(m) | WebError::Forbidden(m) | WebError::Conflict(m) => m.clone(),
            WebError::Unauthorized => "sign-in required".to_string(),
            WebError::NotFound => "not found".to_string(),
            WebError::TooMany => "too many requests; try again in a minute".to_string(),
            WebError::TooLarge => "the request body is too large".to_string(),
            WebError::Unavailable => "the key store is busy; try again shortly".to_string(),
            WebError::Damaged => "the key store is damaged; the administrators must restore it".to_string(),
            WebError::TimedOut => "the request took too long".to_string(),
        }
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> WebError {
        match e {
            StoreError::NoSuchUser(_) | StoreError::NoSuchKey { .. } | StoreError::NoSuchGrant { .. } => {
                WebError::NotFound
            }
            // Whose key it is stays private: the owner's name is not repeated.
            StoreError::KeyTaken { .. } => WebError::Conflict("this key is already registered".to_string()),
            StoreError::UserExists(u) => WebError::Conflict(format!("user {u} already exists")),
            StoreError::TooManyKeys { max, .. } => WebError::Conflict(format!("at most {max} keys per user")),
            StoreError::ScopeOutsidePolicy { scope, policy } => {
                WebError::BadRequest(format!("scope {scope} is wider than the account allows ({policy})"))
            }
            StoreError::Busy { .. }
            | StoreError::UidsExhausted { .. }
            | StoreError::Unavailable { .. }
            | StoreError::IndexRace { .. }
            | StoreError::Version { .. } => WebError::Unavailable,
            StoreError::Corrupt { .. } => WebError::Damaged,
        }
    }
}

impl From<AdminError> for WebError {
    fn from(e: AdminError) -> WebError {
        match e {
            AdminError::Store(s) => s.into(),
            AdminError::Refused(m) => WebError::BadRequest(m),
            AdminError::Io(_) | AdminError::OutputClosed => WebError::Unavailable,
        }
    }
}

/// A page error: the error page, with the error's status.
impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = html! { p.error { (self.message()) } p { a href="/keys" { "Back to your keys" } } };
        (self.status(), crate::layout::page("Error", None, body)).into_response()
    }
}

/// An API error: `{"error": "…"}`.
pub struct ApiError(pub WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0.message() });
        (self.0.status(), axum::Json(body)).into_response()
    }
}
