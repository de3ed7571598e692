//! The web dashboard: serves the bundle built from `dashboard/` (committed in `dashboard/dist/`
//! and embedded in the binary at compile time, so serving it needs no Node.js and no files on
//! disk) at `/` and `/assets/…`. The page is a grpc-web client of the same services; this module
//! serves only static files and must not grow routes the browser would call for data.
//!
//! Caching: `index.html` is `no-cache` (revalidated on every load, so a new binary's page is seen
//! at once); files under `assets/` carry a content hash in their name and are `immutable`. A file
//! with a precompressed `.gz` sibling is sent gzip-encoded to clients that accept it.

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// Every file of `dashboard/dist/`, by its path relative to it (see `build.rs`).
static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/dashboard_files.rs"));

const INDEX: &str = "index.html";
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// The dashboard's routes, to merge into the server's router.
pub fn routes() -> Router {
    Router::new().route("/", get(index)).route("/index.html", get(index)).route("/assets/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers, NO_CACHE)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{file}"), &headers, IMMUTABLE)
}

fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(name, _)| *name == path).map(|(_, bytes)| *bytes)
}

/// The embedded file at `path`, gzip-encoded when the client accepts it and a `.gz` exists.
fn serve(path: &str, request: &HeaderMap, cache_control: HeaderValue) -> Response {
    // `.gz` files are variants of others, never served under their own name.
    let Some(plain) = file(path).filter(|_| !path.ends_with(".gz")) else {
        tracing::debug!(path, "no such dashboard file");
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n")
            .into_response();
    };
    let gzipped = accepts_gzip(request).then(|| file(&format!("{path}.gz"))).flatten();
    let mut response = gzipped.unwrap_or(plain).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped.is_some() {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused =
                parts.any(|p| matches!(p.trim().replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_encoding(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(&with_encoding("gzip, deflate, br")));
        assert!(accepts_gzip(&with_encoding("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with_encoding("*")));
        assert!(!accepts_gzip(&with_encoding("gzip;q=0")));
        assert!(!accepts_gzip(&with_encoding("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_bundle_has_an_index_and_hashed_assets() {
        assert!(file(INDEX).is_some(), "dashboard/dist/index.html is embedded");
        for (name, _) in FILES.iter().filter(|(name, _)| name.starts_with("assets/") && !name.ends_with(".gz")) {
            let stem = name.rsplit_once('.').map_or(*name, |(stem, _)| stem);
            assert!(stem.rsplit_once('-').is_some_and(|(_, hash)| hash.len() >= 8), "{name} carries a content hash");
        }
    }
}
