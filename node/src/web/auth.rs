//! Accounts, sessions, the first-run setup code and login rate limits.
//!
//! Accounts live in redb (`users_v1`) with argon2id password hashes. Sessions live in memory
//! (a restart signs everyone out): a random token in an HttpOnly, SameSite=Strict cookie, and a
//! separate random CSRF token the app sends back in `X-CSRF-Token`.

use super::{ApiError, App, WebConfig};
use crate::store::Store;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::info;

const COOKIE: &str = "wm_session";
/// The most sessions kept; beyond it the one closest to expiry goes.
const MAX_SESSIONS: usize = 256;
/// Failed logins allowed per address per minute.
const MAX_FAILURES_PER_MINUTE: u32 = 5;
/// Addresses whose failures are tracked at once.
const MAX_TRACKED_ADDRESSES: usize = 1024;
/// The shortest password accepted.
const MIN_PASSWORD: usize = 8;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Everything, including accounts and invites.
    Owner,
    /// Trade by hand and set the automatic trader.
    Trader,
    /// Look only.
    Viewer,
}

impl Role {
    pub(crate) fn may_trade(self) -> bool {
        matches!(self, Role::Owner | Role::Trader)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    hash: String,
    role: Role,
}

/// A signed-in session, handed to handlers by the guard.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    token: String,
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) csrf: String,
    expires: Instant,
}

/// Accounts and sessions.
pub(crate) struct Auth {
    store: Store,
    sessions: Mutex<HashMap<String, Session>>,
    setup_code: Mutex<Option<String>>,
    setup_file: std::path::PathBuf,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    session_ttl: Duration,
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    pub(crate) async fn new(
        store: Store,
        cfg: &WebConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Auth> {
        let s = store.clone();
        let users = tokio::task::spawn_blocking(move || s.users()).await??;
        let setup_file = super::setup_code_path(data_dir);
        let setup_code = if users.is_empty() {
            // Ten digits in two groups: easy to read off a console and type on a phone.
            let mut b = [0u8; 8];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            let n = u64::from_le_bytes(b) % 10_000_000_000;
            let code = format!("{:05}-{:05}", n / 100_000, n % 100_000);
            let _ = std::fs::remove_file(&setup_file);
            crate::identity::write_new(&setup_file, &format!("{code}\n"))?;
            Some(code)
        } else {
            let _ = std::fs::remove_file(&setup_file);
            None
        };
        Ok(Auth {
            store,
            sessions: Mutex::new(HashMap::new()),
            setup_code: Mutex::new(setup_code),
            setup_file,
            failures: Mutex::new(HashMap::new()),
            session_ttl: Duration::from_secs(cfg.session_hours.clamp(1, 24 * 90) * 3600),
        })
    }

    pub(crate) fn setup_code(&self) -> Option<String> {
        lock(&self.setup_code).clone()
    }

    fn new_session(&self, user: &str, role: Role) -> Session {
        let s = Session {
            token: random_token(32),
            user: user.to_owned(),
            role,
            csrf: random_token(16),
            expires: Instant::now() + self.session_ttl,
        };
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, v| v.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(k) = sessions
                .iter()
                .min_by_key(|(_, v)| v.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&k);
            }
        }
        sessions.insert(s.token.clone(), s.clone());
        s
    }

    /// Counts a failed login from `ip`; false once it is over the limit.
    fn allow_attempt(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let mut f = lock(&self.failures);
        let now = Instant::now();
        if f.len() >= MAX_TRACKED_ADDRESSES {
            f.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        !f.get(&ip).is_some_and(|(t, n)| {
            now.duration_since(*t) < Duration::from_secs(60) && *n >= MAX_FAILURES_PER_MINUTE
        })
    }

    fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut f = lock(&self.failures);
        if f.len() >= MAX_TRACKED_ADDRESSES && !f.contains_key(&ip) {
            return;
        }
        let now = Instant::now();
        let e = f.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, ApiError> {
        let store = self.store.clone();
        let users = tokio::task::spawn_blocking(move || store.users())
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        Ok(users
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, b)| serde_json::from_slice(&b).ok()))
    }

    async fn put_user(&self, name: &str, password: &str, role: Role) -> Result<(), ApiError> {
        check_credentials(name, password)?;
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand_core::OsRng);
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        let rec = serde_json::to_vec(&UserRecord { hash, role }).map_err(ApiError::internal)?;
        let (store, name) = (self.store.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || store.put_user(&name, &rec))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    async fn verify(&self, name: &str, password: &str) -> Result<Option<Role>, ApiError> {
        let Some(rec) = self.user(name).await? else {
            return Ok(None);
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&rec.hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(ok.then_some(rec.role))
    }
}

fn check_credentials(name: &str, password: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@".contains(c))
    {
        return Err(ApiError::bad(
            "a user name is 1 to 32 letters, digits or - _ . @",
        ));
    }
    if password.chars().count() < MIN_PASSWORD || password.len() > 256 {
        return Err(ApiError::bad(format!(
            "a password has {MIN_PASSWORD} to 256 characters"
        )));
    }
    Ok(())
}

/// The session a request's cookie names, if it is live.
pub(crate) fn session_of(app: &App, headers: &HeaderMap) -> Option<Session> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())?;
    let sessions = lock(&app.auth.sessions);
    sessions
        .get(&token)
        .filter(|s| s.expires > Instant::now())
        .cloned()
}

#[derive(Debug, Serialize)]
struct UserView {
    name: String,
    role: Role,
}

#[derive(Debug, Serialize)]
struct SignedIn {
    user: UserView,
    csrf: String,
}

/// The cookie attribute that keeps a session cookie off plain HTTP, when served over TLS.
fn secure(app: &App) -> &'static str {
    if app.tls { "; Secure" } else { "" }
}

fn signed_in(app: &App, s: &Session) -> Response {
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        s.token,
        app.auth.session_ttl.as_secs(),
        secure(app)
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(SignedIn {
            user: UserView {
                name: s.user.clone(),
                role: s.role,
            },
            csrf: s.csrf.clone(),
        }),
    )
        .into_response()
}

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/setup", get(setup_needed).post(setup))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .route("/api/users", get(users).post(add_user))
        .route("/api/users/{name}", delete(delete_user))
        .route("/api/password", post(change_password))
        .route("/api/keys/backup", post(key_backup))
}

async fn setup_needed(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "needed": app.auth.setup_code().is_some() }))
}

#[derive(Debug, Deserialize)]
struct SetupBody {
    code: String,
    username: String,
    password: String,
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Unwraps a JSON body, turning a malformed one into a clear 400.
pub(super) fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn peer_ip(ci: &Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    ci.as_ref().map(|Extension(ConnectInfo(a))| a.ip())
}

async fn setup(
    State(app): State<App>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    b: Body<SetupBody>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    let ip = peer_ip(&ci);
    let Some(code) = app.auth.setup_code() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this node is already set up; sign in".into(),
        ));
    };
    if !app.auth.allow_attempt(ip) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts; wait a minute".into(),
        ));
    }
    if !constant_time_eq(b.code.trim().as_bytes(), code.as_bytes()) {
        app.auth.failed(ip);
        return Err(ApiError::forbidden(
            "wrong setup code; the node prints it to its console and journal",
        ));
    }
    app.auth
        .put_user(&b.username, &b.password, Role::Owner)
        .await?;
    *lock(&app.auth.setup_code) = None;
    let _ = std::fs::remove_file(&app.auth.setup_file);
    info!(user = %b.username, "owner account created");
    let s = app.auth.new_session(&b.username, Role::Owner);
    Ok(signed_in(&app, &s))
}

#[derive(Debug, Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(app): State<App>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    b: Body<LoginBody>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    let ip = peer_ip(&ci);
    if !app.auth.allow_attempt(ip) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins; wait a minute".into(),
        ));
    }
    match app.auth.verify(&b.username, &b.password).await? {
        Some(role) => {
            let s = app.auth.new_session(&b.username, role);
            Ok(signed_in(&app, &s))
        }
        None => {
            app.auth.failed(ip);
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "wrong user name or password".into(),
            ))
        }
    }
}

async fn logout(State(app): State<App>, Extension(s): Extension<Session>) -> Response {
    lock(&app.auth.sessions).remove(&s.token);
    (
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
                secure(&app)
            ),
        )],
        Json(serde_json::json!({ "ok": true })),
    )
        .into_response()
}

async fn session(State(app): State<App>, Extension(s): Extension<Session>) -> Response {
    let _ = app;
    Json(SignedIn {
        user: UserView {
            name: s.user.clone(),
            role: s.role,
        },
        csrf: s.csrf.clone(),
    })
    .into_response()
}

fn owner_only(s: &Session) -> Result<(), ApiError> {
    if s.role == Role::Owner {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the owner account may do that"))
    }
}

async fn users(
    State(app): State<App>,
    Extension(s): Extension<Session>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    owner_only(&s)?;
    let store = app.store.clone();
    let users = tokio::task::spawn_blocking(move || store.users())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(
        users
            .into_iter()
            .filter_map(|(name, b)| {
                let r: UserRecord = serde_json::from_slice(&b).ok()?;
                Some(UserView { name, role: r.role })
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct NewUser {
    username: String,
    password: String,
    role: Role,
}

async fn add_user(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Body<NewUser>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owner_only(&s)?;
    let b = body(b)?;
    if app.auth.user(&b.username).await?.is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("there is already an account {:?}", b.username),
        ));
    }
    app.auth.put_user(&b.username, &b.password, b.role).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

async fn delete_user(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owner_only(&s)?;
    if name == s.user {
        return Err(ApiError::bad(
            "you cannot delete the account you are signed in with",
        ));
    }
    let store = app.store.clone();
    let n = name.clone();
    let existed = tokio::task::spawn_blocking(move || store.delete_user(&n))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if !existed {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no account {name:?}"),
        ));
    }
    lock(&app.auth.sessions).retain(|_, v| v.user != name);
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Debug, Deserialize)]
struct PasswordBody {
    old: String,
    new: String,
}

async fn change_password(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    b: Body<PasswordBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = body(b)?;
    let ip = peer_ip(&ci);
    if !app.auth.allow_attempt(ip) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts; wait a minute".into(),
        ));
    }
    let Some(role) = app.auth.verify(&s.user, &b.old).await? else {
        app.auth.failed(ip);
        return Err(ApiError::forbidden("the current password is wrong"));
    };
    app.auth.put_user(&s.user, &b.new, role).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Debug, Deserialize)]
struct BackupBody {
    /// The owner's password, asked again.
    password: String,
    /// What the backup is sealed with.
    passphrase: String,
}

/// The node's key sealed with a passphrase, as a file to download (owner only; the password is
/// asked again, and attempts count toward the login rate limit).
async fn key_backup(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    b: Body<BackupBody>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    if s.role != Role::Owner {
        return Err(ApiError::forbidden(
            "only the owner may back up the node's key",
        ));
    }
    if b.passphrase.chars().count() < crate::backup::MIN_PASSPHRASE || b.passphrase.len() > 1024 {
        return Err(ApiError::bad(format!(
            "the backup passphrase needs {} to 1024 characters",
            crate::backup::MIN_PASSPHRASE
        )));
    }
    let ip = peer_ip(&ci);
    if !app.auth.allow_attempt(ip) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts; wait a minute".into(),
        ));
    }
    if app.auth.verify(&s.user, &b.password).await?.is_none() {
        app.auth.failed(ip);
        return Err(ApiError::forbidden("the password is wrong"));
    }
    let text = app
        .node
        .key_backup(b.passphrase)
        .await
        .map_err(|_| ApiError::stopping())?
        .map_err(|e| ApiError::bad(e.to_string()))?;
    info!(user = %s.user, "key backup downloaded");
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"wattmesh-key.backup\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}
