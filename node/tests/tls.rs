//! The web UI over HTTPS with the owner's certificate: a real node started with a self-signed
//! certificate made here, real TLS connections on loopback that trust only that certificate,
//! Secure session cookies, the Host and Origin checks over HTTPS, plain HTTP to the HTTPS
//! port left unanswered, a stop and restart, and clear start-up errors for a bad key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::http::{Resp, parse, request_text};
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wattmesh_node::node::{self, NodeOptions};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM into `dir`.
fn self_signed(dir: &Path, name: &str) -> CertificateDer<'static> {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), made.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        made.signing_key.serialize_pem(),
    )
    .unwrap();
    made.cert.der().clone()
}

/// A client that trusts `cert` and nothing else.
fn client(cert: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 request over TLS on a fresh connection, trusting only `cert`.
async fn https(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(20), client(cert).connect(name, tcp))
        .await
        .expect("the handshake finishes")
        .expect("the node's certificate is trusted");
    // The server offers HTTP/1.1 by ALPN when asked; this client does not ask.
    tls.write_all(request_text(addr, method, path, headers, body).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // A peer that closes without close_notify, after the whole answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    });
    read.await.expect("the server answers");
    parse(&raw)
}

fn tls_config(cert: &str, key: &str) -> wattmesh_node::config::Config {
    let mut cfg = test_config(vec![]);
    cfg.web.tls_cert = cert.into();
    cfg.web.tls_key = key.into();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_over_https_with_the_owners_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    found(&home);
    let cert = self_signed(&home, "web");
    // Relative paths are in the data directory.
    let node = TestNode::start(&home, tls_config("web.crt", "web.key")).await;
    let web = node.running.web.as_ref().expect("the web UI is on");
    let addr = web.addr;
    assert!(web.tls);
    assert_eq!(web.url(), format!("https://{addr}/"));
    let code = web
        .setup_code
        .clone()
        .expect("a fresh node has a setup code");

    // A real answer over HTTPS.
    let r = https(addr, &cert, "GET", "/api/setup", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["needed"], true);

    // Plain HTTP to the HTTPS port gets no HTTP answer: the connection just closes.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(request_text(addr, "GET", "/api/setup", &[], "").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut raw))
        .await
        .expect("the server closes the plain connection");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("HTTP/1.1") && !text.contains("needed"),
        "plain HTTP was answered: {text:?}"
    );

    // DNS rebinding is refused over HTTPS too.
    let r = https(
        addr,
        &cert,
        "GET",
        "/api/setup",
        &[("host", "evil.example:8443")],
        "",
    )
    .await;
    assert_eq!(r.status, 421);

    // Cross-site requests are refused, and over HTTPS an http:// origin is another site.
    let good = format!(r#"{{"code":"{code}","username":"owner","password":"correct horse"}}"#);
    for origin in ["https://evil.example".to_owned(), format!("http://{addr}")] {
        let r = https(
            addr,
            &cert,
            "POST",
            "/api/setup",
            &[("origin", &origin)],
            &good,
        )
        .await;
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
    }

    // Setup from the page itself: the session cookie is Secure.
    let origin = format!("https://{addr}");
    let r = https(
        addr,
        &cert,
        "POST",
        "/api/setup",
        &[("origin", &origin)],
        &good,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    for attr in ["; Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = r.json()["csrf"].as_str().unwrap().to_owned();

    let r = https(
        addr,
        &cert,
        "GET",
        "/api/session",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["name"], "owner");
    assert_eq!(r.json()["csrf"], csrf.as_str());

    // CSRF still guards state changes.
    let r = https(
        addr,
        &cert,
        "POST",
        "/api/logout",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = https(
        addr,
        &cert,
        "POST",
        "/api/logout",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));

    // Logging in again sets a Secure cookie too.
    let login = r#"{"username":"owner","password":"correct horse"}"#;
    let r = https(addr, &cert, "POST", "/api/login", &[], login).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));

    // The server stops with the node: the port closes and the database is let go of, and the
    // node starts again over HTTPS.
    node.handle.stop().await;
    let _ = node.running.task.await;
    let closed = eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "the HTTPS port closed when the node stopped"
    );
    let db = home.join("wattmesh.redb");
    let freed = eventually(Duration::from_secs(20), || async {
        wattmesh_node::store::Store::open(&db).ok().map(drop)
    })
    .await;
    assert!(freed.is_some(), "the stopped node let go of its database");

    let node = TestNode::start(&home, tls_config("web.crt", "web.key")).await;
    let addr = node.running.web.as_ref().unwrap().addr;
    let r = https(addr, &cert, "GET", "/api/setup", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["needed"], false);
    node.shutdown().await;
}

/// A bad certificate or key stops the node at start with a message naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_or_key_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    found(&home);
    self_signed(&home, "web");
    self_signed(&home, "other");
    let start = |cfg| {
        node::start(NodeOptions {
            data_dir: home.clone(),
            config: cfg,
        })
    };
    let cases = [
        (tls_config("web.crt", "other.key"), "does not match"),
        (tls_config("web.crt", "nowhere.key"), "cannot read"),
        (tls_config("web.key", "web.key"), "not usable PEM"),
        (tls_config("web.crt", ""), "go together"),
    ];
    for (cfg, expected) in cases {
        let err = match start(cfg).await {
            Ok(running) => {
                running.handle.stop().await;
                panic!("the node started with a bad TLS setting ({expected})");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
}
