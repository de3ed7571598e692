//! The front door: which stack of request layers a request passes before its route.
//!
//! Browsers (grpc-web, REST, the dashboard) and curl go through the full stack: request id,
//! request span, CORS, request timeout. A native gRPC call (`content-type: application/grpc`,
//! `application/grpc+proto`, …, but not `application/grpc-web…`) cannot come from a browser, so
//! CORS has nothing to do for it, and it takes [`GrpcContext`] instead: the same request id, span
//! and timeout in one layer and one future. At 256 unary calls in flight those layers took about
//! 15 % of the request threads' CPU (docs/performance.md); the ingest path is mostly native gRPC.
//!
//! What a native gRPC caller sees is what it saw through the full stack: `x-request-id` on every
//! answer (its own, or a fresh UUIDv4 when it sent none), every log line of the call inside a
//! `request` span with `method`, `path` and `request_id`, and DEADLINE_EXCEEDED once the call
//! takes longer than the request timeout.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
    routing::future::RouteFuture,
};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use pin_project_lite::pin_project;

/// The request id header: taken from the caller, or set by the server, and echoed on the answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes each request to the stack its kind needs (see the module docs).
#[derive(Clone)]
pub struct Front {
    /// The gRPC services behind [`GrpcContextLayer`], for native gRPC calls.
    native: Router,
    /// Everything, behind the full stack of layers.
    full: Router,
}

impl Front {
    pub fn new(native: Router, full: Router) -> Self {
        Front { native, full }
    }
}

/// `application/grpc` and its `+codec` forms; not grpc-web, which browsers send.
pub fn is_native_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|c| c.starts_with(GRPC) && matches!(c.get(GRPC.len()), None | Some(b'+' | b';')))
}

impl<B> tower::Service<http::Request<B>> for Front
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are routers, which are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_native_grpc(request.headers()) { self.native.call(request) } else { self.full.call(request) }
    }
}

/// The request id, request span and request timeout of a native gRPC call (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct GrpcContextLayer {
    pub timeout: Duration,
}

impl<S> tower::Layer<S> for GrpcContextLayer {
    type Service = GrpcContext<S>;

    fn layer(&self, inner: S) -> GrpcContext<S> {
        GrpcContext { inner, timeout: self.timeout }
    }
}

/// [`GrpcContextLayer`]'s service around a native gRPC route.
#[derive(Clone, Debug)]
pub struct GrpcContext<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<Request> for GrpcContext<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GrpcContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %request_id.to_str().unwrap_or("-"),
        );
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        // What tower_http's TraceLayer logs at DEBUG for the full stack, at no cost when off.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        GrpcContextFuture {
            inner: tokio::time::timeout(self.timeout, inner),
            span,
            request_id,
            content_type,
            limit: self.timeout,
            started,
        }
    }
}

pin_project! {
    /// [`GrpcContext`]'s future: the call under its timeout, polled inside its span.
    pub struct GrpcContextFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        span: tracing::Span,
        request_id: HeaderValue,
        content_type: Option<HeaderValue>,
        limit: Duration,
        started: Option<std::time::Instant>,
    }
}

impl<F> Future for GrpcContextFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Err(_elapsed) => deadline_exceeded(*this.limit, this.content_type.take(), true),
        };
        response.headers_mut().insert(REQUEST_ID, this.request_id.clone());
        if let Some(started) = this.started {
            let latency_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(latency_ms, status = response.status().as_u16(), "finished processing request");
        }
        Poll::Ready(Ok(response))
    }
}

/// A fresh UUIDv4, as `tower_http`'s `MakeRequestUuid` makes for the full stack.
fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The answer to a call cut off by the request timeout: DEADLINE_EXCEEDED for gRPC and grpc-web
/// (in the caller's content type), 504 for REST.
pub fn deadline_exceeded(limit: Duration, content_type: Option<HeaderValue>, grpc: bool) -> Response {
    tracing::warn!(timeout_ms = limit.as_millis() as u64, "request cut off by the request timeout");
    let error = crate::error::Error::DeadlineExceeded(format!(
        "the call took longer than the server's request timeout ({} s)",
        limit.as_secs_f64()
    ));
    if grpc { crate::rest::grpc_status_response(error.into(), content_type) } else { error.into_response() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn native_grpc_is_told_from_grpc_web_and_rest() {
        for native in ["application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc;x=y"] {
            assert!(is_native_grpc(&with_content_type(native)), "{native}");
        }
        for other in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcx",
            "application/json",
            "text/plain",
        ] {
            assert!(!is_native_grpc(&with_content_type(other)), "{other}");
        }
        assert!(!is_native_grpc(&HeaderMap::new()));
    }

    #[test]
    fn request_ids_are_uuids() {
        let id = new_request_id();
        let text = id.to_str().unwrap_or_default();
        assert_eq!(uuid::Uuid::parse_str(text).map(|u| u.get_version_num()), Ok(4), "{text}");
        assert_ne!(new_request_id(), id);
    }
}
