//! Who may talk to the API.
//!
//! - Every request that changes state (any method but GET/HEAD) carries a token:
//!   `Authorization: Bearer <token>`. A fresh token is drawn at start-up and written to
//!   `DATA_DIR/.cookie` (mode 0600), as bitcoind does, so local commands read it and a
//!   web page cannot: that stops cross-site POSTs from any page the operator browses.
//! - The Host header must name localhost or an IP address the API is bound to: a page
//!   that rebinds its own DNS name to 127.0.0.1 sends its name, and is refused.
//! - Bound beyond loopback, the API starts only with a token in the config
//!   (`api_token`), and then every request but `/api/health` needs a token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the cookie file in the data directory.
pub const COOKIE_FILE: &str = ".cookie";

/// Shortest token accepted in the config: a guessable token is no token.
pub const MIN_CONFIGURED_TOKEN: usize = 16;

/// The API's access rules for one run. Dropping it removes the cookie file.
pub struct ApiAuth {
    bound: SocketAddr,
    tokens: Vec<String>,
    cookie: Option<PathBuf>,
}

impl ApiAuth {
    /// Rules for an API bound to `bound`, with the operator's `configured` token if any.
    /// Draws a fresh token and writes it to `dir/.cookie`. Refuses a bind beyond
    /// loopback without a configured token.
    pub fn start(
        dir: &Path,
        bound: SocketAddr,
        configured: Option<&str>,
    ) -> anyhow::Result<ApiAuth> {
        let configured = configured.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = configured {
            if t.len() < MIN_CONFIGURED_TOKEN {
                anyhow::bail!(
                    "api_token in the config is too short ({} characters): use at least {MIN_CONFIGURED_TOKEN}",
                    t.len()
                );
            }
        }
        if !bound.ip().is_loopback() {
            if configured.is_none() {
                anyhow::bail!(
                    "the API would listen on {bound}, beyond this machine, without a password: \
                     set api_token in {} (at least {MIN_CONFIGURED_TOKEN} characters) or bind it to 127.0.0.1",
                    dir.join(crate::config::CONFIG_FILE).display()
                );
            }
            tracing::warn!(
                api = %bound,
                "the API is reachable beyond this machine: every request needs the token; \
                 plain HTTP, so use it only on a network you trust"
            );
        }
        let cookie_token = new_token();
        let path = dir.join(COOKIE_FILE);
        crate::config::write_private(&path, cookie_token.as_bytes())?;
        tracing::info!(cookie = %path.display(), "API token written (the CLI reads it)");
        let mut tokens = vec![cookie_token];
        tokens.extend(configured.map(String::from));
        Ok(ApiAuth {
            bound,
            tokens,
            cookie: Some(path),
        })
    }

    /// Rules without a cookie file (tests and in-process nodes): `token` only.
    pub fn with_token(bound: SocketAddr, token: &str) -> ApiAuth {
        ApiAuth {
            bound,
            tokens: vec![token.to_string()],
            cookie: None,
        }
    }

    /// Where the token is, for the start-up log.
    pub fn cookie_path(&self) -> Option<&Path> {
        self.cookie.as_deref()
    }

    /// Is `host` (a Host header value) one a browser sends only when the user meant
    /// this node? Names other than `localhost` are refused: DNS rebinding needs a name.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => ip,
                _ => return false,
            },
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let Ok(ip) = name.parse::<IpAddr>() else {
            return false;
        };
        ip.is_loopback() || ip == self.bound.ip() || self.bound.ip().is_unspecified()
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given = given.trim().as_bytes();
        // Every token compared in full, whatever matches, so timing says nothing.
        self.tokens
            .iter()
            .fold(false, |ok, t| ct_eq(t.as_bytes(), given) | ok)
    }
}

impl Drop for ApiAuth {
    fn drop(&mut self) {
        if let Some(p) = &self.cookie {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// 32 bytes from the operating system's RNG, hex.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Constant-time equality for equal lengths (a length mismatch is no secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(code: StatusCode, msg: String) -> Response {
    let mut r = (code, Json(json!({ "error": msg }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"skywave\""),
        );
    }
    r
}

/// The middleware that applies [`ApiAuth`] to every request.
pub async fn guard(State(auth): State<Arc<ApiAuth>>, req: Request, next: Next) -> Response {
    // A browser always sends Host; a request without one did not come from a page.
    if let Some(host) = req.headers().get(header::HOST) {
        let ok = host.to_str().map(|h| auth.host_allowed(h)).unwrap_or(false);
        if !ok {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {:?} refused: use localhost or the API's IP address ({})",
                    String::from_utf8_lossy(host.as_bytes()),
                    auth.bound
                ),
            );
        }
    }
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let open = read_only && (auth.bound.ip().is_loopback() || req.uri().path() == "/api/health");
    if !open && !auth.token_ok(req.headers()) {
        let where_ = auth
            .cookie
            .as_ref()
            .map(|p| {
                format!(
                    " (the token is in {}; skywave commands read it)",
                    p.display()
                )
            })
            .unwrap_or_default();
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("this request needs the API token: Authorization: Bearer <token>{where_}"),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(bound: &str) -> ApiAuth {
        ApiAuth::with_token(bound.parse().unwrap(), "t")
    }

    #[test]
    fn hosts_are_names_a_rebinding_page_cannot_send() {
        let a = auth("127.0.0.1:7380");
        for ok in [
            "127.0.0.1:7380",
            "localhost:7380",
            "LOCALHOST",
            "[::1]:7380",
            "127.0.0.2",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:7380",
            "10.0.0.1:7380",
            "[::1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        let lan = auth("192.168.1.5:7380");
        assert!(lan.host_allowed("192.168.1.5:7380"));
        assert!(!lan.host_allowed("192.168.1.6:7380"));
        let any = auth("0.0.0.0:7380");
        assert!(any.host_allowed("192.168.1.6:7380"));
        assert!(!any.host_allowed("node.example:7380"));
    }

    #[test]
    fn beyond_loopback_needs_a_configured_token() {
        let dir = tempfile::tempdir().unwrap();
        let lan: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let e = ApiAuth::start(dir.path(), lan, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("api_token"), "{e}");
        assert!(ApiAuth::start(dir.path(), lan, Some("short")).is_err());
        let a = ApiAuth::start(dir.path(), lan, Some("a-long-enough-password")).unwrap();
        let cookie = dir.path().join(COOKIE_FILE);
        assert!(cookie.exists());
        drop(a);
        assert!(!cookie.exists(), "cookie removed when the API stops");
    }
}
