//! The web UI and its JSON API, served by the node itself (axum).
//!
//! - The built browser app (`web-ui/dist`, made by `scripts/build-ui`) is embedded in the
//!   binary; a binary built without it serves a page that says how to build it.
//! - Every route except the first-run setup, login and the static assets needs a session
//!   (an HttpOnly, SameSite=Strict cookie). State-changing requests need the session's CSRF
//!   token in `X-CSRF-Token`, and an `Origin`, when sent, must be this host. The `Host` header
//!   must name this node (an IP address, `localhost`, the machine's host name or a configured
//!   name), which defeats DNS rebinding.
//! - `/metrics` (Prometheus text) needs a bearer token from the config, not a session.
//! - With `tls_cert` and `tls_key` set, everything is served over HTTPS only (see `tls`), and
//!   the session cookie is `Secure`.
//! - The API is described by `openapi.json`, served at `/api/openapi.json`.

mod api;
mod auth;
pub mod export;
pub mod paging;
pub mod tls;

use crate::node::NodeHandle;
use crate::store::Store;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

/// Web server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Whether to serve the web UI.
    pub enabled: bool,
    /// The address and port to listen on (`0.0.0.0:8080` to reach it from the LAN).
    pub listen: String,
    /// Host names, besides IP addresses, `localhost` and the machine's own name, that
    /// browsers may use to reach the UI (a name in the home router's DNS, say).
    pub allowed_hosts: Vec<String>,
    /// The bearer token `/metrics` requires; empty turns `/metrics` off.
    pub metrics_token: String,
    /// Sign a session out after this many hours.
    pub session_hours: u64,
    /// The certificate (PEM, the node's own first, then any intermediates) to serve the UI
    /// over HTTPS with; empty for plain HTTP. Relative paths are inside the data directory.
    pub tls_cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); set with `tls_cert`.
    pub tls_key: PathBuf,
}

impl WebConfig {
    /// The certificate and key files, resolved against the data directory, when TLS is on.
    pub fn tls_files(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<Option<(PathBuf, PathBuf)>, tls::TlsError> {
        let (cert, key) = (&self.tls_cert, &self.tls_key);
        match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some((data_dir.join(cert), data_dir.join(key)))),
            _ => Err(tls::TlsError::OnlyOne),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            allowed_hosts: Vec::new(),
            metrics_token: String::new(),
            session_hours: 24 * 7,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

/// The embedded browser app.
#[derive(rust_embed::RustEmbed)]
#[folder = "../web-ui/dist"]
#[allow_missing = true]
struct Assets;

/// What the web server shares between requests.
#[derive(Clone)]
pub(crate) struct App {
    node: NodeHandle,
    store: Store,
    cfg: Arc<WebConfig>,
    auth: Arc<auth::Auth>,
    hostname: Arc<String>,
    /// Served over TLS: cookies are `Secure` and only `https://` origins are this site.
    tls: bool,
}

/// An API error: a status and a message for the owner.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn forbidden(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::FORBIDDEN, msg.into())
    }
    fn stopping() -> ApiError {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        )
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        warn!("web: {e}");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the node could not do that: {e}"),
        )
    }
}

impl From<crate::node::Stopped> for ApiError {
    fn from(_: crate::node::Stopped) -> Self {
        ApiError::stopping()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// A running web server.
#[derive(Debug)]
pub struct WebServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it serves HTTPS (`[web] tls_cert` and `tls_key`) rather than plain HTTP.
    pub tls: bool,
    /// The one-time setup code, while no account exists.
    pub setup_code: Option<String>,
    /// The same routes, to serve requests in-process (the dashboard benchmark drives them
    /// with `tower::ServiceExt::oneshot`, without a socket), until the server stops: the
    /// router holds the database open, so it is let go of with the server's.
    router: Arc<std::sync::Mutex<Option<Router>>>,
}

impl WebServer {
    /// The UI's address for a browser: `https://` with TLS, else `http://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The web server's router (every route, with its middleware and state), for serving
    /// requests in-process; `None` once the server has stopped. A clone kept keeps the
    /// database open.
    pub fn router(&self) -> Option<Router> {
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The file the setup code is written to (mode 0600) while no account exists, so that the
/// owner, or the testnet, can read it besides the console and the journal.
pub fn setup_code_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("setup-code")
}

/// The web server's TLS configuration when `[web] tls_cert` and `tls_key` are set (relative
/// paths in the data directory); the node loads it before it starts anything else, so that a
/// bad certificate or key is the start-up error.
pub fn load_tls(
    cfg: &WebConfig,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<rustls::ServerConfig>>, tls::TlsError> {
    match cfg.tls_files(data_dir)? {
        Some((cert, key)) => Ok(Some(tls::server_config(&cert, &key)?)),
        None => Ok(None),
    }
}

/// Starts the web server for a node: HTTPS with `tls` (from [`load_tls`]), else plain HTTP.
pub async fn spawn(
    cfg: &WebConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    node: NodeHandle,
    store: Store,
    data_dir: &std::path::Path,
) -> anyhow::Result<WebServer> {
    let auth = Arc::new(auth::Auth::new(store.clone(), cfg, data_dir).await?);
    let setup_code = auth.setup_code();
    let app = App {
        node,
        store,
        cfg: Arc::new(cfg.clone()),
        auth,
        hostname: Arc::new(machine_hostname()),
        tls: tls.is_some(),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("the web UI cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let node = app.node.clone();
    let router = router(app);
    let shared = Arc::new(std::sync::Mutex::new(Some(router.clone())));
    let in_process = shared.clone();
    let server = WebServer {
        addr,
        tls: tls.is_some(),
        setup_code,
        router: shared,
    };
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Stops with the node, letting go of the database (live streams end with it).
    let stopped = async move { node.stopped().await };
    let served = match tls {
        None => tokio::spawn(
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
        Some(config) => {
            // `tap_io` with nothing to do: axum gives the peer's address (the login rate
            // limit's key) to handlers for any listener wrapped so.
            let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| ());
            tokio::spawn(
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
    };
    tokio::spawn(async move {
        match served.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("the web server stopped: {e}"),
            Err(e) => warn!("the web server stopped: {e}"),
        }
        in_process.lock().unwrap_or_else(|e| e.into_inner()).take();
    });
    info!(%addr, url = %server.url(), "web UI listening");
    if let Some(code) = &server.setup_code {
        info!(
            "first-run setup code: {code} (open the web UI at {} to create the owner account)",
            server.url()
        );
    }
    Ok(server)
}

/// The whole router (used in-process by the tests).
pub(crate) fn router(app: App) -> Router {
    let api = api::routes()
        .merge(auth::routes())
        .layer(middleware::from_fn_with_state(app.clone(), guard));
    Router::new()
        .merge(api)
        .route("/metrics", axum::routing::get(api::metrics))
        .fallback(asset)
        .layer(middleware::from_fn_with_state(app.clone(), check_host))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(app)
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a `Host` header's name is one this node answers to.
fn host_allowed(host: &str, own: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || (!own.is_empty() && (name == own || name == format!("{own}.local")))
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Refuses requests whose `Host` is not this node (DNS rebinding).
async fn check_host(State(app): State<App>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &app.hostname, &app.cfg.allowed_hosts) {
        return ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this node does not answer to the host name {host:?}; add it to \
                 [web] allowed_hosts in its config"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Routes anyone may reach without a session.
fn is_public(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET", "/api/setup")
            | ("POST", "/api/setup")
            | ("POST", "/api/login")
            | ("GET", "/api/openapi.json")
    )
}

/// Whether a request's `Origin`, if any, is this same host (and scheme: `https://` when the
/// UI is served over TLS).
fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let o = if tls {
        origin.strip_prefix("https://")
    } else {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
    }
    .unwrap_or("");
    !host.is_empty() && o.eq_ignore_ascii_case(host)
}

/// Sessions and cross-site request forgery: every API route but the public ones needs a
/// session, and every state-changing one the session's CSRF token; a cross-site `Origin` is
/// refused outright.
async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let changes_state = !matches!(method, Method::GET | Method::HEAD);
    if changes_state && !same_origin(req.headers(), app.tls) {
        return ApiError::forbidden("cross-site request refused").into_response();
    }
    let session = auth::session_of(&app, req.headers());
    if !is_public(&method, &path) {
        let Some(session) = session else {
            return ApiError(StatusCode::UNAUTHORIZED, "sign in first".into()).into_response();
        };
        if changes_state {
            let token = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::constant_time_eq(token.as_bytes(), session.csrf.as_bytes()) {
                return ApiError::forbidden("missing or wrong X-CSRF-Token").into_response();
            }
        }
        req.extensions_mut().insert(session);
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serves the embedded app; unknown paths get `index.html` (the app routes by hash).
async fn asset(req: Request) -> Response {
    let path = req.uri().path().trim_start_matches('/');
    if path.starts_with("api/") {
        return ApiError(StatusCode::NOT_FOUND, "no such API route".into()).into_response();
    }
    let file = Assets::get(path).or_else(|| Assets::get("index.html"));
    let Some(file) = file else {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            Body::from(
                "<!doctype html><title>wattmesh</title><h1>wattmesh</h1><p>This wattmesh binary \
                 was built without its web UI. Build it with <code>scripts/build-ui</code> and \
                 then rebuild the binary (<code>cargo build --release</code>); the JSON API at \
                 <code>/api/</code> works without it.</p>",
            ),
        )
            .into_response();
    };
    let served = if Assets::get(path).is_some() {
        path
    } else {
        "index.html"
    };
    let mime = match served.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    };
    let cache = if served == "index.html" {
        "no-cache"
    } else {
        "public, max-age=3600"
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_names_are_accepted_as_hosts() {
        let own = "solar-pi";
        let extra = vec!["wattmesh.home".to_string()];
        for ok in [
            "192.168.1.20:8080",
            "127.0.0.1",
            "[::1]:8080",
            "localhost:8080",
            "solar-pi:8080",
            "solar-pi.local",
            "WATTMESH.home:80",
        ] {
            assert!(host_allowed(ok, own, &extra), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "",
            "solar-pi.evil.example",
            "[nonsense]",
        ] {
            assert!(!host_allowed(bad, own, &extra), "{bad}");
        }
    }

    #[test]
    fn origins_must_match_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h, false));
        assert!(same_origin(&h, true));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, false));
        // Over TLS the page's origin is https://; an http:// one is another site.
        assert!(!same_origin(&h, true));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, true));
        assert!(same_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, true));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h, false));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, false));
        assert!(!same_origin(&h, true));
    }

    #[test]
    fn tls_needs_both_files_resolved_in_the_data_directory() {
        let dir = std::path::Path::new("/var/lib/wattmesh");
        let mut cfg = WebConfig::default();
        assert!(cfg.tls_files(dir).unwrap().is_none());
        cfg.tls_cert = "web.crt".into();
        let err = cfg.tls_files(dir).unwrap_err().to_string();
        assert!(err.contains("tls_cert and tls_key go together"), "{err}");
        cfg.tls_key = "/etc/wattmesh/web.key".into();
        assert_eq!(
            cfg.tls_files(dir).unwrap(),
            Some((
                PathBuf::from("/var/lib/wattmesh/web.crt"),
                PathBuf::from("/etc/wattmesh/web.key")
            ))
        );
        cfg.tls_cert = PathBuf::new();
        assert!(cfg.tls_files(dir).is_err());
    }
}
