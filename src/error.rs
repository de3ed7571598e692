//! The one error type every face answers with. Each variant has one meaning, which maps to both a
//! gRPC code and an HTTP status, so the gRPC, grpc-web and REST faces never disagree.

use std::fmt;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::json;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::validation::FieldViolation;

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke one or more rules; every broken rule is listed, field by field.
    #[error("{}", invalid_summary(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request could not be decoded at all (malformed JSON, wrong types).
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The service is overloaded (ingest queue full); retry with backoff.
    #[error("{0}")]
    ResourceExhausted(String),
    /// No token, or one that is unknown, expired or revoked. The message says which and never
    /// repeats the token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose scope (or worker prefix) does not cover the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The token's request rate is over its limit; retry after the given time.
    #[error("{message}")]
    RateLimited { message: String, retry_after: std::time::Duration },
    /// The call took longer than the configured request timeout.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The database is unreachable or failing, or the service is shutting down; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state; logged with its cause, reported to the client briefly.
    #[error("internal error")]
    Internal(String),
}

fn invalid_summary(violations: &[FieldViolation]) -> String {
    let fields: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!("invalid request: {}", fields.join("; "))
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// Logs the cause of an internal error and hides it from the client.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Error::Internal(cause.to_string())
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::Malformed(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::TooLarge(_) | Error::ResourceExhausted(_) | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_) | Error::Malformed(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn violations(&self) -> &[FieldViolation] {
        match self {
            Error::InvalidArgument(v) => v,
            _ => &[],
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if let Error::RateLimited { retry_after, .. } = &err {
            let details = ErrorDetails::with_retry_info(Some(*retry_after));
            return tonic::Status::with_error_details(err.code(), err.to_string(), details);
        }
        let violations = err.violations();
        if violations.is_empty() {
            return tonic::Status::new(err.code(), err.to_string());
        }
        let mut details = ErrorDetails::new();
        for v in violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        tonic::Status::with_error_details(err.code(), err.to_string(), details)
    }
}

/// The REST body, shaped as grpc-gateway shapes errors: the numeric gRPC code, the message, and
/// `google.rpc.BadRequest` details for invalid arguments.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let violations: Vec<_> =
            self.violations().iter().map(|v| json!({ "field": v.field, "description": v.description })).collect();
        let details = if violations.is_empty() {
            vec![]
        } else {
            vec![json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": violations,
            })]
        };
        let mut details = details;
        let retry_after = match &self {
            Error::RateLimited { retry_after, .. } => {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retry_delay": format!("{:.3}s", retry_after.as_secs_f64()),
                }));
                Some(retry_after.as_secs().max(1))
            }
            _ => None,
        };
        let body = json!({
            "code": self.code() as i32,
            "status": code_name(self.code()),
            "message": self.to_string(),
            "details": details,
        });
        let mut response = (self.http_status(), Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        if matches!(self, Error::Unauthenticated(_)) {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"runwarden\""));
        }
        response
    }
}

/// The canonical upper-case name of a gRPC code, as it appears in logs and metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        metrics::counter!("runwarden_db_errors_total").increment(1);
        tracing::warn!(error = %err, "database error");
        Error::Unavailable("database unavailable; retry later".into())
    }
}
