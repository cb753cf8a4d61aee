//! The dashboard's API with a year of per-minute readings stored (issue 10), and the size of
//! that year on disk.
//!
//! Setup, before anything is timed: a neighbourhood is founded in a temporary data directory,
//! a year of per-minute readings of a home on the simulated meter (the node's default
//! `[meter.sim]`, polled every 10 s and averaged per minute as the node's meter loop does) is
//! written into the node's redb database through `Store::put_readings` (the node's own API and
//! durability, a day per transaction), and the database file is measured: as written, after a
//! redb compaction of a copy, and, for comparison, a week written the way a running node
//! writes it (one minute per transaction, a durable commit every slot).
//!
//! Then a real node starts on that data directory (simulated meter on, mDNS and UPnP off, web
//! UI on loopback), the owner account is created through `POST /api/setup` with the node's
//! setup code, and every route the dashboard page calls on load and while it is open is timed
//! in-process through the node's real axum router (`tower::ServiceExt::oneshot`, with the
//! session cookie, the `Host` check, the compression layer and `Accept-Encoding: gzip, br` as
//! a browser sends it), reading the whole response body.
//!
//! Run with `cargo bench -p wattmesh-node --bench dashboard` (`scripts/bench-web` runs it and
//! prints the figures). `WATTMESH_BENCH_DAYS` changes the days of readings (365).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::Criterion;
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use wattmesh_node::config::{ClockCheck, Config};
use wattmesh_node::meter::MeterSource;
use wattmesh_node::meter::sim::{SimConfig, SimMeter, home_id};
use wattmesh_node::metering::{Minute, SourceKind};
use wattmesh_node::node::{self, NodeOptions};
use wattmesh_node::store::Store;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// The node's default poll interval (`[meter] poll_secs`).
const POLL_MS: u64 = 10_000;

fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

/// Writes per-minute readings of the simulated home for minutes in `[from, to)` through
/// `write` in batches of `batch` minutes, averaged over polls every 10 s as the node's meter
/// loop does. Returns how many minutes were written.
fn simulate(from: u64, to: u64, batch: usize, mut write: impl FnMut(&[(u64, Vec<u8>)])) -> u64 {
    let mut meter = SimMeter::new(SimConfig::default(), home_id("bench-home")).unwrap();
    let info = meter.info().clone();
    let index = |kind| info.channels.iter().position(|c| c.kind == kind);
    use wattmesh_node::meter::ChannelKind as K;
    let (grid, load, solar, battery) = (
        index(K::Grid).unwrap(),
        index(K::Load),
        index(K::Solar),
        index(K::Battery),
    );
    let mut rows = Vec::with_capacity(batch);
    let mut n = 0;
    let mut minute = from - from % MINUTE_MS;
    while minute < to {
        let mut sums = [0.0f64; 4];
        let mut m = Minute {
            minute_ms: minute,
            ..Minute::default()
        };
        let polls = MINUTE_MS / POLL_MS;
        for k in 0..polls {
            let s = meter.poll(minute + k * POLL_MS).unwrap();
            let power =
                |ch: Option<usize>| ch.and_then(|c| s.reading(c)).map_or(0.0, |r| r.power_w);
            sums[0] += power(Some(grid));
            sums[1] += power(load);
            sums[2] -= power(solar);
            sums[3] += power(battery);
            let reg = s.reading(grid).and_then(|r| r.registers).unwrap();
            m.import_wh = reg.import_wh;
            m.export_wh = reg.export_wh;
        }
        let mean = |x: f64| (x / polls as f64).round() as i32;
        m.grid_w = mean(sums[0]);
        m.load_w = mean(sums[1]);
        m.solar_w = mean(sums[2]);
        m.battery_w = mean(sums[3]);
        rows.push((minute, postcard::to_allocvec(&m).unwrap()));
        if rows.len() == batch {
            write(&rows);
            rows.clear();
        }
        n += 1;
        minute += MINUTE_MS;
    }
    if !rows.is_empty() {
        write(&rows);
    }
    n
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB ({bytes} B)", bytes as f64 / 1e6)
}

/// What redb says about the database at `path` (closed): the pages it uses, and the tables
/// that hold readings (entries, pages, the bytes of their keys and values). Returns the bytes
/// of the pages allocated.
fn print_tables(path: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    let db = redb::Database::open(path).unwrap();
    let allocated = {
        let w = db.begin_write().unwrap();
        let st = w.stats().unwrap();
        println!(
            "redb: {} pages of {} B allocated ({}), {} of keys and values, {} fragmented",
            st.allocated_pages(),
            st.page_size(),
            mb(st.allocated_pages() * st.page_size() as u64),
            mb(st.stored_bytes()),
            mb(st.fragmented_bytes())
        );
        w.abort().unwrap();
        st.allocated_pages() * st.page_size() as u64
    };
    let r = db.begin_read().unwrap();
    for h in r.list_tables().unwrap() {
        if !h.name().contains("reading") {
            continue;
        }
        let t = r.open_untyped_table(h.clone()).unwrap();
        let st = t.stats().unwrap();
        println!(
            "redb table {}: {} entries, {} leaf + {} branch pages, {} of keys and values, {} \
             fragmented",
            h.name(),
            t.len().unwrap(),
            st.leaf_pages(),
            st.branch_pages(),
            mb(st.stored_bytes()),
            mb(st.fragmented_bytes())
        );
    }
    allocated
}

/// Founds a neighbourhood in `dir`, fills its database with `days` of readings ending at
/// `end_ms`, and prints the database's size figures; returns them for the JSON summary.
fn prepare(dir: &Path, days: u64, end_ms: u64) -> serde_json::Value {
    let db = dir.join("wattmesh.redb");
    let store = Store::open(&db).unwrap();
    let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key")).unwrap();
    wattmesh_node::neighbourhood::Neighbourhood::found(dir, &store, &key, "Bench Lane", 0).unwrap();
    let empty = file_size(&db);
    let t = Instant::now();
    let minutes = simulate(end_ms - days * DAY_MS, end_ms, 1440, |rows| {
        store.put_readings(rows).unwrap();
    });
    // put_readings does not sync; the node's next durable commit does (an attestation every
    // slot). Make the year durable the same way before measuring.
    store
        .put_meta("bench.filled", &minutes.to_le_bytes())
        .unwrap();
    let took = t.elapsed();
    drop(store);
    let full = file_size(&db);
    let stored = full - empty;
    println!(
        "readings: {minutes} minutes ({days} days) written in {:.1} s, a day per transaction",
        took.as_secs_f64()
    );
    println!(
        "database: {} empty, {} with the readings: {} for the readings, {:.1} B per minute",
        mb(empty),
        mb(full),
        mb(stored),
        stored as f64 / minutes as f64
    );
    let allocated = print_tables(&db);
    let copy = dir.join("compacted.redb");
    std::fs::copy(&db, &copy).unwrap();
    {
        let mut d = redb::Database::open(&copy).unwrap();
        let mut rounds = 0;
        while d.compact().unwrap() {
            rounds += 1;
        }
        println!("redb compaction of a copy: {rounds} rounds");
    }
    println!(
        "database after redb compaction (of a copy): {}",
        mb(file_size(&copy))
    );
    print_tables(&copy);
    let compacted = file_size(&copy);
    std::fs::remove_file(&copy).unwrap();

    // Opening the year as a schema-1 database (minutes only, as wattmesh before schema 2 left
    // it): the migration sums the stored minutes into blocks.
    let copy = dir.join("schema1.redb");
    std::fs::copy(&db, &copy).unwrap();
    {
        let d = redb::Database::open(&copy).unwrap();
        let w = d.begin_write().unwrap();
        w.delete_table(redb::TableDefinition::<u64, &[u8]>::new(
            "reading_blocks_v1",
        ))
        .unwrap();
        w.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta_v1"))
            .unwrap()
            .insert("schema_version", 1u32.to_le_bytes().as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let t = Instant::now();
    let migrated = Store::open(&copy).unwrap();
    let migration = t.elapsed().as_secs_f64();
    println!(
        "migration: opening the year as a schema-1 database (no blocks) took {migration:.2} s, \
         schema {:?} after",
        migrated.schema_version().unwrap()
    );
    drop(migrated);
    std::fs::remove_file(&copy).unwrap();

    // The node's own write pattern, for a week: one minute per transaction (no sync) and a
    // durable commit every 15-minute slot, standing in for the slot's attestation; and the same
    // week written a day per transaction, as above, for comparison.
    for per_minute in [true, false] {
        let path = dir.join("week.redb");
        let s = Store::open(&path).unwrap();
        let t = Instant::now();
        let mut written = 0u64;
        let batch = if per_minute { 1 } else { 1440 };
        let n = simulate(end_ms - 7 * DAY_MS, end_ms, batch, |rows| {
            s.put_readings(rows).unwrap();
            written += 1;
            if per_minute && written % 15 == 0 {
                s.put_meta("bench.slot", &written.to_le_bytes()).unwrap();
            }
        });
        s.put_meta("bench.slot", &written.to_le_bytes()).unwrap();
        drop(s);
        println!(
            "a week ({n} minutes) written {} in {:.1} s: the file {}",
            if per_minute {
                "as the node writes it (a minute per transaction, a durable commit per slot)"
            } else {
                "a day per transaction"
            },
            t.elapsed().as_secs_f64(),
            mb(file_size(&path))
        );
        print_tables(&path);
        std::fs::remove_file(&path).unwrap();
    }
    serde_json::json!({
        "days": days,
        "minutes": minutes,
        "fill_seconds": took.as_secs_f64(),
        // A row holds the mean power of the grid, consumption, solar and battery channels (and
        // the grid's registers).
        "channels_per_row": 4,
        "file_bytes": full,
        "allocated_bytes": allocated,
        "compacted_file_bytes": compacted,
        "migration_seconds": migration,
    })
}

/// A request as the browser app sends it: session cookie, same host, compression accepted.
fn request(path: &str, cookie: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::COOKIE, cookie)
        .header(header::ACCEPT, "application/json")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
        .body(Body::empty())
        .unwrap()
}

/// GETs `path` in-process and reads the whole body; the status and the body's bytes on the
/// wire (compressed where the server compresses).
async fn get(router: &Router, path: &str, cookie: &str) -> (StatusCode, usize) {
    let resp = router.clone().oneshot(request(path, cookie)).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.len())
}

/// Opens the live stream and waits for its first `power` event; the bytes of that frame.
async fn first_live_event(router: &Router, cookie: &str) -> usize {
    let resp = router
        .clone()
        .oneshot(request("/api/live", cookie))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut frames = resp.into_body().into_data_stream();
    loop {
        let f = frames.next().await.expect("the stream is open").unwrap();
        if f.windows(11).any(|w| w == b"event:power") || f.windows(12).any(|w| w == b"event: power")
        {
            return f.len();
        }
    }
}

/// The UI's first load as a browser makes it: `/`, then every asset `index.html` references
/// (stylesheets, scripts, icons that are not `data:` URLs), with `Accept-Encoding: br, gzip`.
/// Prints each file's bytes on the wire and its encoding; returns them.
async fn ui_first_load(router: &Router) -> serde_json::Value {
    async fn fetch(router: &Router, path: &str) -> (Vec<u8>, String) {
        let req = Request::builder()
            .uri(path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ACCEPT_ENCODING, "br, gzip")
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let enc = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .map_or("identity", |v| v.to_str().unwrap())
            .to_owned();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (body.to_vec(), enc)
    }
    let (html, enc) = fetch(router, "/").await;
    let mut total = html.len();
    println!("ui: / {} B ({enc})", html.len());
    let mut files = vec![serde_json::json!({ "path": "/", "bytes": html.len(), "encoding": enc })];
    // index.html itself, uncompressed, to find the references.
    let page = {
        let req = Request::builder()
            .uri("/")
            .header(header::HOST, "127.0.0.1:8080")
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    };
    let mut refs = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in page.split(attr).skip(1) {
            let r = part.split('"').next().unwrap_or("");
            if !r.is_empty() && !r.starts_with("data:") && !r.contains("://") {
                refs.push(format!("/{}", r.trim_start_matches('/')));
            }
        }
    }
    for r in refs {
        let (body, enc) = fetch(router, &r).await;
        println!("ui: {r} {} B ({enc})", body.len());
        total += body.len();
        files.push(serde_json::json!({ "path": r, "bytes": body.len(), "encoding": enc }));
    }
    println!(
        "ui: first load {total} B ({:.1} KB) of response bodies",
        total as f64 / 1024.0
    );
    serde_json::json!({ "total_bytes": total, "files": files })
}

/// The owner account, created with the setup code; the session cookie.
async fn sign_in(router: &Router, code: &str) -> String {
    let body =
        serde_json::json!({ "code": code, "username": "owner", "password": "bench-password" });
    let req = Request::builder()
        .method("POST")
        .uri("/api/setup")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "setup");
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

fn main() {
    let mut c = criterion_config().configure_from_args();
    let days: u64 = std::env::var("WATTMESH_BENCH_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(365);
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let end = now - now % MINUTE_MS;
    let mut figures = serde_json::json!({ "database": prepare(dir.path(), days, end) });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = Config::default();
    cfg.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg.reach.upnp = false;
    cfg.mdns.enabled = false;
    cfg.clock.check = ClockCheck::Trust;
    cfg.meter.source = SourceKind::Simulated;
    cfg.meter.home = "bench-home".into();
    cfg.web.enabled = true;
    cfg.web.listen = "127.0.0.1:0".into();
    let running = rt
        .block_on(node::start(NodeOptions {
            data_dir: dir.path().to_owned(),
            config: cfg,
        }))
        .unwrap();
    // The simulated meter first computes the home from its registers' origin up to now (a
    // few seconds of CPU); time nothing until its first reading is in.
    let t = Instant::now();
    rt.block_on(async {
        while running.handle.status().await.unwrap().meter.at_ms == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!(
        "node: first meter reading {:.1} s after start",
        t.elapsed().as_secs_f64()
    );
    let web = running.web.as_ref().expect("the web UI is on");
    let router = web.router().expect("the web server runs");
    let cookie = rt.block_on(sign_in(&router, web.setup_code.as_deref().unwrap()));
    figures["ui"] = rt.block_on(ui_first_load(&router));

    // What the dashboard asks for (web-ui/src/main.jsx, api.js, pages/dashboard.jsx): the
    // shell's status and charter; Today (summary); History, 24 h per slot by default (the
    // power chart and the energy per slot), 7 d per hour and 30 d per day when chosen; and
    // the live power stream.
    let slot_ms = 15 * MINUTE_MS;
    let hour_ms = 60 * MINUTE_MS;
    let to = end + MINUTE_MS;
    let range = |ms: u64, step_ms: u64| (to - ms) / step_ms * step_ms - step_ms;
    let routes: Vec<(&str, String)> = vec![
        ("session", "/api/session".into()),
        ("status", "/api/status".into()),
        ("charter", "/api/charter".into()),
        ("summary_today", "/api/summary".into()),
        (
            "readings_24h_slot",
            format!(
                "/api/readings?from={}&to={to}&step=slot",
                range(DAY_MS, slot_ms)
            ),
        ),
        (
            "readings_7d_hour",
            format!(
                "/api/readings?from={}&to={to}&step=hour",
                range(7 * DAY_MS, hour_ms)
            ),
        ),
        (
            "readings_30d_day",
            format!(
                "/api/readings?from={}&to={to}&step=day",
                range(30 * DAY_MS, DAY_MS)
            ),
        ),
        // Not on the dashboard: a year per day, what the API allows at most (400 days).
        (
            "readings_365d_day",
            format!(
                "/api/readings?from={}&to={to}&step=day",
                range(365 * DAY_MS, DAY_MS)
            ),
        ),
    ];
    for (name, path) in &routes {
        let (status, bytes) = rt.block_on(get(&router, path, &cookie));
        assert_eq!(status, StatusCode::OK, "{path}");
        let plain = rt.block_on(async {
            let mut req = request(path, &cookie);
            req.headers_mut().remove(header::ACCEPT_ENCODING);
            let resp = router.clone().oneshot(req).await.unwrap();
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
        });
        let json: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        let what = match json.as_array() {
            Some(steps) => format!("{} steps", steps.len()),
            None => "an object".into(),
        };
        println!(
            "{name}: {path} -> {what}, {} B, {bytes} B on the wire",
            plain.len()
        );
    }
    let live = rt.block_on(first_live_event(&router, &cookie));
    println!("live: first power event, {live} B");

    let mut g = c.benchmark_group("dashboard");
    for (name, path) in &routes {
        g.bench_function(*name, |b| {
            b.iter(|| rt.block_on(get(&router, path, &cookie)));
        });
    }
    g.bench_function("live_first_event", |b| {
        b.iter(|| rt.block_on(first_live_event(&router, &cookie)));
    });
    // The page's first load: everything it asks for at once, as the browser does.
    let on_load: Vec<&str> = routes
        .iter()
        .filter(|(n, _)| {
            !matches!(
                *n,
                "readings_7d_hour" | "readings_30d_day" | "readings_365d_day"
            )
        })
        .map(|(_, p)| p.as_str())
        .collect();
    g.bench_function("first_load_all", |b| {
        b.iter(|| {
            rt.block_on(async {
                let calls = on_load.iter().map(|p| get(&router, p, &cookie));
                let live = first_live_event(&router, &cookie);
                futures::join!(futures::future::join_all(calls), live)
            })
        });
    });
    g.finish();
    c.final_summary();

    // Criterion's figures are medians of samples that each average many requests; the target
    // is a median request, so also time requests one by one.
    const N: usize = 300;
    let mut latency = serde_json::Map::new();
    let mut pct = |name: &str, t: &mut Vec<Duration>| {
        t.sort();
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        latency.insert(
            name.to_owned(),
            serde_json::json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0), "requests": N }),
        );
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({N} requests one after another)",
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        )
    };
    for (name, path) in &routes {
        let mut t: Vec<Duration> = (0..N)
            .map(|_| {
                let s = Instant::now();
                rt.block_on(get(&router, path, &cookie));
                s.elapsed()
            })
            .collect();
        println!("latency {name}: {}", pct(name, &mut t));
    }
    let mut t: Vec<Duration> = (0..N)
        .map(|_| {
            let s = Instant::now();
            rt.block_on(first_live_event(&router, &cookie));
            s.elapsed()
        })
        .collect();
    println!(
        "latency live_first_event: {}",
        pct("live_first_event", &mut t)
    );
    figures["latency_ms"] = serde_json::Value::Object(latency);
    // The figures for scripts/bench-web, when it asks for them.
    if let Some(path) = std::env::var_os("WATTMESH_BENCH_JSON") {
        std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }

    drop(router);
    rt.block_on(async {
        running.handle.stop().await;
        let _ = running.task.await;
    });
    let db = dir.path().join("wattmesh.redb");
    println!("database at the end: {}", mb(file_size(&db)));
}
