//! The web API against a real running node, over real HTTP on loopback: first-run setup with
//! the code, sessions, CSRF, cross-site and DNS-rebinding refusals, rate-limited logins, bad
//! input as clear 4xx, live power over server-sent events, CSV downloads and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::http::http;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_session_and_refuses_cross_site_requests() {
    let dir = tempfile::tempdir().unwrap();
    found(&dir.path().join("a"));
    let mut cfg = test_config(vec![]);
    cfg.meter.source = wattmesh_node::metering::SourceKind::Simulated;
    cfg.meter.poll_secs = 1;
    cfg.web.metrics_token = "s3cret-token".into();
    let node = TestNode::start(&dir.path().join("a"), cfg).await;
    let web = node.running.web.as_ref().expect("the web UI is on");
    let addr = web.addr;
    let code = web
        .setup_code
        .clone()
        .expect("a fresh node has a setup code");
    // The code is also in the data directory for the owner (mode 0600).
    let on_disk = std::fs::read_to_string(wattmesh_node::web::setup_code_path(&node.dir)).unwrap();
    assert_eq!(on_disk.trim(), code);

    // Nothing without a session.
    for path in [
        "/api/status",
        "/api/trades",
        "/api/export/trades.csv",
        "/api/live",
    ] {
        let r = http(addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("sign in"));
    }
    assert_eq!(
        http(addr, "GET", "/api/setup", &[], "").await.json()["needed"],
        true
    );
    // DNS rebinding: a foreign host name is refused everywhere.
    let r = http(
        addr,
        "GET",
        "/api/setup",
        &[("host", "evil.example:8080")],
        "",
    )
    .await;
    assert_eq!(r.status, 421);

    // Setup: the wrong code is refused; malformed input is a clear 400.
    let bad = r#"{"code":"00000-00000","username":"owner","password":"correct horse"}"#;
    assert_eq!(http(addr, "POST", "/api/setup", &[], bad).await.status, 403);
    let r = http(addr, "POST", "/api/setup", &[], "{not json").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    let short = format!(r#"{{"code":"{code}","username":"owner","password":"short"}}"#);
    assert_eq!(
        http(addr, "POST", "/api/setup", &[], &short).await.status,
        400
    );
    // A cross-site page cannot even try.
    let good = format!(r#"{{"code":"{code}","username":"owner","password":"correct horse"}}"#);
    let r = http(
        addr,
        "POST",
        "/api/setup",
        &[("origin", "http://evil.example")],
        &good,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = http(addr, "POST", "/api/setup", &[], &good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie_header = r.header("set-cookie").unwrap().to_owned();
    assert!(cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Strict"));
    let cookie = cookie_header.split(';').next().unwrap().to_owned();
    let csrf = r.json()["csrf"].as_str().unwrap().to_owned();
    assert!(!wattmesh_node::web::setup_code_path(&node.dir).exists());
    // Setup happens once.
    assert_eq!(
        http(addr, "POST", "/api/setup", &[], &good).await.status,
        409
    );
    assert_eq!(
        http(addr, "GET", "/api/setup", &[], "").await.json()["needed"],
        false
    );

    let auth = [("cookie", cookie.as_str())];
    let r = http(addr, "GET", "/api/status", &auth, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["node_id"].as_str().unwrap().len(), 64);

    // State changes need the CSRF token and a same-site origin.
    let offer = r#"{"side":"sell","quantity_wh":400,"price":9000}"#;
    assert_eq!(
        http(addr, "POST", "/api/offers", &auth, offer).await.status,
        403
    );
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let cross = [
        ("cookie", cookie.as_str()),
        ("x-csrf-token", csrf.as_str()),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(
        http(addr, "POST", "/api/offers", &cross, offer)
            .await
            .status,
        403
    );
    let r = http(addr, "POST", "/api/offers", &with_csrf, offer).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let nonce = r.json()["nonce"].as_u64().unwrap();
    let book = http(addr, "GET", "/api/offers", &auth, "").await.json();
    assert!(
        book.as_array()
            .unwrap()
            .iter()
            .any(|o| o["nonce"] == nonce && o["mine"] == true)
    );
    // Bad input: a clear 4xx, never a 5xx.
    for body in [
        r#"{"side":"sideways","quantity_wh":1,"price":1}"#,
        r#"{"side":"sell","quantity_wh":-1,"price":1}"#,
        r#"{"side":"sell","quantity_wh":400,"price":99999999}"#,
        "[]",
    ] {
        let r = http(addr, "POST", "/api/offers", &with_csrf, body).await;
        assert!((400..500).contains(&r.status), "{body}: {}", r.status);
        assert!(r.json()["error"].is_string());
    }
    let r = http(addr, "DELETE", "/api/offers/notanumber", &with_csrf, "").await;
    assert_eq!(r.status, 400);
    let r = http(addr, "GET", "/api/readings?from=10&to=5", &auth, "").await;
    assert_eq!(r.status, 400);
    let r = http(addr, "GET", "/api/readings?step=fortnight", &auth, "").await;
    assert_eq!(r.status, 400);
    let r = http(addr, "GET", "/api/nowhere", &auth, "").await;
    assert_eq!(r.status, 404);
    // The trades come a page at a time; bad paging or filters are a clear 400.
    let r = http(addr, "GET", "/api/trades?limit=20&side=sell", &auth, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    assert!(page["trades"].as_array().unwrap().is_empty());
    assert_eq!(page["total"], 0);
    assert!(page["next_cursor"].is_null());
    for (q, word) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=yesterday", "cursor"),
        ("status=lost", "status"),
        ("side=sideways", "side"),
        ("from=10&to=5", "from"),
    ] {
        let r = http(addr, "GET", &format!("/api/trades?{q}"), &auth, "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(word),
            "{q}: {}",
            r.body
        );
    }
    let zeros = "0".repeat(64);
    let r = http(addr, "GET", &format!("/api/trades/{zeros}/1"), &auth, "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http(addr, "GET", "/api/trades/nobody/1", &auth, "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(addr, "GET", &format!("/api/trades/{zeros}/x"), &auth, "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Withdrawing a document this node never sent is refused with the reason.
    let r = http(
        addr,
        "POST",
        &format!("/api/documents/{zeros}"),
        &with_csrf,
        r#"{"decision":"withdraw"}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("you sent no document")
    );
    let r = http(
        addr,
        "POST",
        &format!("/api/documents/{zeros}"),
        &with_csrf,
        r#"{"decision":"shred"}"#,
    )
    .await;
    assert!((400..500).contains(&r.status), "{}", r.body);
    let r = http(
        addr,
        "DELETE",
        &format!("/api/offers/{nonce}"),
        &with_csrf,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Accounts: a viewer may look but not trade.
    let viewer = r#"{"username":"kid","password":"looking only","role":"viewer"}"#;
    assert_eq!(
        http(addr, "POST", "/api/users", &with_csrf, viewer)
            .await
            .status,
        200
    );
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[],
        r#"{"username":"kid","password":"looking only"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let kid_cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let kid_csrf = r.json()["csrf"].as_str().unwrap().to_owned();
    let kid = [
        ("cookie", kid_cookie.as_str()),
        ("x-csrf-token", kid_csrf.as_str()),
    ];
    assert_eq!(http(addr, "GET", "/api/trades", &kid, "").await.status, 200);
    assert_eq!(
        http(addr, "POST", "/api/offers", &kid, offer).await.status,
        403
    );
    assert_eq!(http(addr, "GET", "/api/users", &kid, "").await.status, 403);

    // Meter calibration: everyone sees the live per-channel readings; the simulated meter has
    // nothing to calibrate, which a change says plainly (409); a viewer may not try at all;
    // malformed calibrations are a clear 400.
    let view = eventually(Duration::from_secs(20), || async {
        let r = http(addr, "GET", "/api/meter/calibration", &kid, "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        (!v["live"].as_array()?.is_empty()).then_some(v)
    })
    .await
    .expect("live readings per channel");
    assert_eq!(view["source"], "simulated");
    assert_eq!(view["calibratable"], false);
    assert!(view["calibration"].is_null());
    assert!(
        view["note"]
            .as_str()
            .unwrap()
            .contains("needs no calibration")
    );
    assert!(
        view["live"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "grid" && c["power_w"].is_number())
    );
    let cal = r#"{"calibration":{"volts_per_count":0.43,"channels":[{"name":"grid","legs":[{"amps_per_count":0.3,"phase_lead_deg":1.5}]}]}}"#;
    let r = http(addr, "PUT", "/api/meter/calibration", &kid, cal).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(addr, "PUT", "/api/meter/calibration", &with_csrf, cal).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("needs no calibration")
    );
    for body in [
        r#"{"calibration":{"volts":1}}"#,
        r#"{"calibration":{"volts_per_count":"high","channels":[]}}"#,
        r#"{"calibration":{"volts_per_count":null,"channels":[{"name":"grid","legs":[{"amps_per_count":1e999,"phase_lead_deg":0}]}]}}"#,
        "[]",
    ] {
        let r = http(addr, "PUT", "/api/meter/calibration", &with_csrf, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }

    // Live power arrives by itself.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /api/live HTTP/1.1\r\nhost: {addr}\r\ncookie: {cookie}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("event: power") && seen.contains("grid_w") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no power event: {seen}");
    assert!(seen.contains("text/event-stream"));

    // The dashboard's figures and the downloads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = http(addr, "GET", "/api/summary", &auth, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["self_sufficiency"].is_number());
    let r = http(addr, "GET", "/api/readings?step=minute", &auth, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(addr, "GET", "/api/export/trades.csv", &auth, "").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert!(r.body.starts_with("slot_start_ms,role,side,counterparty"));
    let r = http(addr, "GET", "/api/export/readings.csv", &auth, "").await;
    assert!(r.body.starts_with("slot_start_ms,import_wh"));
    let r = http(addr, "GET", "/api/openapi.json", &[], "").await;
    assert_eq!(r.json()["openapi"], "3.0.3");

    // Metrics need the token, not a session.
    assert_eq!(http(addr, "GET", "/metrics", &auth, "").await.status, 401);
    let r = http(
        addr,
        "GET",
        "/metrics",
        &[("authorization", "Bearer s3cret-token")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("wattmesh_peers 0"));

    // The key backup: the owner only, the password asked again, a passphrase long enough; the
    // file opens with the passphrase to this node's key.
    let backup = r#"{"password":"correct horse","passphrase":"a long backup phrase"}"#;
    assert_eq!(
        http(addr, "POST", "/api/keys/backup", &kid, backup)
            .await
            .status,
        403
    );
    let short = r#"{"password":"correct horse","passphrase":"too short"}"#;
    let r = http(addr, "POST", "/api/keys/backup", &with_csrf, short).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(addr, "POST", "/api/keys/backup", &auth, backup).await;
    assert_eq!(r.status, 403, "no CSRF token: {}", r.body);
    let r = http(addr, "POST", "/api/keys/backup", &with_csrf, backup).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    let key = wattmesh_node::backup::open(&r.body, "a long backup phrase").unwrap();
    let own = wattmesh_node::identity::load(&node.dir.join("node.key")).unwrap();
    assert_eq!(key.node_id(), own.node_id());
    assert!(wattmesh_node::backup::open(&r.body, "another phrase!!").is_err());
    let wrong_password = r#"{"password":"not the password","passphrase":"a long backup phrase"}"#;
    assert_eq!(
        http(addr, "POST", "/api/keys/backup", &with_csrf, wrong_password)
            .await
            .status,
        403
    );

    // The readings retention: anyone signed in may read it, the owner sets it, within bounds.
    let r = http(addr, "GET", "/api/settings/retention", &kid, "").await;
    assert_eq!(r.json()["days"], 400);
    let thirty = r#"{"days":30}"#;
    assert_eq!(
        http(addr, "PUT", "/api/settings/retention", &kid, thirty)
            .await
            .status,
        403
    );
    let r = http(
        addr,
        "PUT",
        "/api/settings/retention",
        &with_csrf,
        r#"{"days":3}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(addr, "PUT", "/api/settings/retention", &with_csrf, thirty).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(addr, "GET", "/api/settings/retention", &auth, "").await;
    assert_eq!(r.json()["days"], 30);

    // Logins are rate-limited.
    let wrong = r#"{"username":"owner","password":"not the password"}"#;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(http(addr, "POST", "/api/login", &[], wrong).await.status);
    }
    // Five failures a minute per address (the wrong setup code and the wrong password for the
    // key backup above were the first two).
    assert_eq!(&statuses[..3], &[401; 3]);
    assert_eq!(&statuses[3..], &[429; 4]);
    let right = r#"{"username":"owner","password":"correct horse"}"#;
    assert_eq!(
        http(addr, "POST", "/api/login", &[], right).await.status,
        429
    );

    // Signing out ends the session.
    assert_eq!(
        http(addr, "POST", "/api/logout", &with_csrf, "")
            .await
            .status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/api/status", &auth, "").await.status,
        401
    );
    node.handle.stop().await;
}

/// A P1 meter's read counters (telegrams, CRC errors...) reach `wattmesh status` (the Status
/// response) and `/metrics`. The meter is a loopback TCP port (a P1-to-network bridge) that
/// sends one good telegram and one whose CRC is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_read_errors_show_in_the_status_and_the_metrics() {
    use wattmesh_node::meter::p1::P1Transport;
    const EXAMPLE: &[u8] = include_bytes!("../src/meter/p1/dsmr5-example.txt");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut bad = EXAMPLE.to_vec();
    let at = bad.len() - 3; // the CRC's last hex digit, before "\r\n"
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    let bridge = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(EXAMPLE).await.unwrap();
        s.write_all(&bad).await.unwrap();
        s.write_all(EXAMPLE).await.unwrap();
        // Keep the connection open, as a bridge does between telegrams.
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    let dir = tempfile::tempdir().unwrap();
    found(&dir.path().join("a"));
    let mut cfg = test_config(vec![]);
    cfg.meter.source = wattmesh_node::metering::SourceKind::P1;
    cfg.meter.poll_secs = 1;
    cfg.meter.p1.transport = P1Transport::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    cfg.web.metrics_token = "s3cret-token".into();
    let node = TestNode::start(&dir.path().join("a"), cfg).await;
    let health = eventually(Duration::from_secs(30), || async {
        let h = node.handle.status().await.ok()?.meter.health?;
        (h.counters.get("telegrams") >= Some(&2) && h.counters.get("crc_errors") >= Some(&1))
            .then_some(h)
    })
    .await
    .expect("the status shows the P1 counters");
    assert_eq!(health.source, "p1");
    assert_eq!(health.counters["crc_errors"], 1);
    assert_eq!(health.error, None, "good telegrams keep arriving");
    let addr = node.running.web.as_ref().expect("web UI on").addr;
    let r = http(
        addr,
        "GET",
        "/metrics",
        &[("authorization", "Bearer s3cret-token")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("wattmesh_meter_source_events_total{source=\"p1\",counter=\"crc_errors\"} 1"),
        "{}",
        r.body
    );
    assert!(r.body.contains("wattmesh_meter_fault 0"), "{}", r.body);
    node.handle.stop().await;
    bridge.abort();
}

/// What the owner sets in the web UI (the trader's limits, the readings retention) is stored
/// and outlives a restart, overriding the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_settings_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    found(&home);
    let node = TestNode::start(&home, test_config(vec![])).await;
    let mut limits = node.handle.trader().await.unwrap().limits;
    assert_ne!(limits.min_sell_price, 8_250);
    limits.enabled = true;
    limits.min_sell_price = 8_250;
    node.handle
        .set_trader(limits.clone())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(node.handle.retention_days().await.unwrap(), 30);
    node.handle.set_retention_days(30).await.unwrap().unwrap();
    node.handle.stop().await;
    let _ = node.running.task.await;
    // The web server lets go of the database once its last connection ends.
    let db = home.join("wattmesh.redb");
    let freed = eventually(Duration::from_secs(20), || async {
        wattmesh_node::store::Store::open(&db).ok().map(drop)
    })
    .await;
    assert!(freed.is_some(), "the stopped node let go of its database");

    let node = TestNode::start(&home, test_config(vec![])).await;
    assert_eq!(node.handle.trader().await.unwrap().limits, limits);
    assert_eq!(node.handle.retention_days().await.unwrap(), 30);
    node.handle.stop().await;
}
