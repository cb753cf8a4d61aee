//! The JSON API the browser app uses (described in `openapi.json`), the live power stream and
//! the CSV downloads, and the Prometheus metrics.

use super::auth::{Session, body};
use super::export::{self, Step};
use super::{ApiError, App};
use crate::book::OfferView;
use crate::metering::{Minute, MinuteSum};
use crate::node::{InviteArgs, PostOffer, SideArg, TradeView};
use crate::store::READING_BLOCK_MS;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

const OPENAPI: &str = include_str!("openapi.json");
const DAY_MS: u64 = 86_400_000;
/// The longest span one readings request may cover.
const MAX_SPAN_MS: u64 = 400 * DAY_MS;

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/status", get(status))
        .route("/api/live", get(live))
        .route("/api/readings", get(readings))
        .route("/api/summary", get(summary))
        .route("/api/charter", get(charter))
        .route("/api/offers", get(offers).post(post_offer))
        .route("/api/offers/{nonce}", delete(cancel_offer))
        .route("/api/take", post(take))
        .route("/api/trades", get(trades))
        .route("/api/trades/{taker}/{nonce}", get(one_trade))
        .route("/api/statements", get(statements))
        .route("/api/ledger", get(ledger))
        .route("/api/agreements", post(propose_agreement))
        .route("/api/payments", post(pay))
        .route("/api/documents/{id}", post(decide))
        .route("/api/disputes", post(note))
        .route("/api/members", get(members))
        .route("/api/invites", get(invites).post(invite))
        .route("/api/invites/{id}", delete(revoke))
        .route("/api/trader", get(trader).put(set_trader))
        .route(
            "/api/meter/calibration",
            get(calibration).put(set_calibration),
        )
        .route("/api/settings/retention", get(retention).put(set_retention))
        .route("/api/export/readings.csv", get(export_readings))
        .route("/api/export/trades.csv", get(export_trades))
        .route("/api/export/settlements.csv", get(export_settlements))
        .route("/api/export/signed.json", get(export_signed))
}

type Q<T> = Result<Query<T>, QueryRejection>;

fn query<T>(q: Q<T>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn may_trade(s: &Session) -> Result<(), ApiError> {
    if s.role.may_trade() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this account may only look, not trade"))
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn status(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.node.status().await?).into_response())
}

/// Live power, every two seconds, as server-sent events (`event: power`).
async fn live(
    State(app): State<App>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let node = app.node.clone();
    let stream = futures::stream::unfold(
        (node, tokio::time::interval(Duration::from_secs(2))),
        |(node, mut tick)| async move {
            tick.tick().await;
            let s = node.status().await.ok()?;
            let m = &s.meter;
            let data = serde_json::json!({
                "at_ms": m.at_ms,
                "grid_w": m.grid_w,
                "solar_w": m.solar_w,
                "load_w": m.load_w,
                "import_wh": m.import_wh,
                "export_wh": m.export_wh,
            });
            let ev = Event::default().event("power").data(data.to_string());
            Some((Ok(ev), (node, tick)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
struct Range {
    from: Option<u64>,
    to: Option<u64>,
    step: Option<String>,
}

/// The owner's UTC offset in minutes (from the trader's settings, which the owner sets).
async fn offset_minutes(app: &App) -> Result<i64, ApiError> {
    Ok(app.node.trader().await?.limits.utc_offset_minutes)
}

fn local_midnight(now: u64, offset_minutes: i64) -> u64 {
    let shifted = now as i64 + offset_minutes * 60_000;
    let midnight = shifted - shifted.rem_euclid(DAY_MS as i64);
    (midnight - offset_minutes * 60_000).max(0) as u64
}

fn span(r: &Range, now: u64) -> Result<(u64, u64), ApiError> {
    let to = r.to.unwrap_or(now);
    let from = r.from.unwrap_or(to.saturating_sub(DAY_MS));
    if from >= to {
        return Err(ApiError::bad("from must be before to"));
    }
    if to - from > MAX_SPAN_MS {
        return Err(ApiError::bad("at most 400 days at a time"));
    }
    Ok((from, to))
}

async fn readings(State(app): State<App>, q: Q<Range>) -> Result<Json<Vec<Step>>, ApiError> {
    let r = query(q)?;
    let status = app.node.status().await?;
    let (from, to) = span(&r, status.now_ms)?;
    let offset = offset_minutes(&app).await?;
    let slot_ms = u64::from(app.node.charter().await?.slot_minutes) * 60_000;
    let step_ms = match r.step.as_deref() {
        Some("minute") => 60_000,
        Some("slot") => slot_ms,
        Some("hour") => 3_600_000,
        Some("day") => DAY_MS,
        None if to - from <= 2 * DAY_MS => 60_000,
        None if to - from <= 14 * DAY_MS => 3_600_000,
        None => DAY_MS,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "step {other:?}: use minute, slot, hour or day"
            )));
        }
    };
    if step_ms == 60_000 && to - from > 7 * DAY_MS {
        return Err(ApiError::bad(
            "per-minute readings for at most 7 days at a time",
        ));
    }
    let origin = local_midnight(from, offset);
    let sums = minute_sums(&app, from, to, step_ms, origin).await?;
    Ok(Json(export::aggregate_sums(sums, step_ms, origin)))
}

/// The readings for minutes in `[from, to)`, read from the store on a blocking thread (the node
/// task is not held up by a long range).
async fn minutes(app: &App, from: u64, to: u64) -> Result<Vec<Minute>, ApiError> {
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.minutes(from, to))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// The readings for minutes in `[from, to)`, summed for steps of `step_ms` from `origin`:
/// from the store's 15-minute blocks when every block lies within one step (a row per block),
/// else minute by minute (a row per minute).
async fn minute_sums(
    app: &App,
    from: u64,
    to: u64,
    step_ms: u64,
    origin: u64,
) -> Result<Vec<MinuteSum>, ApiError> {
    let blocks_fit = step_ms % READING_BLOCK_MS == 0 && origin % READING_BLOCK_MS == 0;
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || {
        if blocks_fit {
            store.minute_sums(from, to)
        } else {
            Ok(store
                .minutes(from, to)?
                .iter()
                .map(MinuteSum::from)
                .collect())
        }
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

#[derive(Debug, Serialize)]
struct Summary {
    day_start_ms: u64,
    #[serde(flatten)]
    energy: export::DayEnergy,
    savings: i64,
    retail_price: u64,
    feed_in_price: u64,
    currency: String,
}

async fn summary(State(app): State<App>) -> Result<Json<Summary>, ApiError> {
    let now = app.node.status().await?.now_ms;
    let offset = offset_minutes(&app).await?;
    let start = local_midnight(now, offset);
    let minutes = minutes(&app, start.saturating_sub(60_000), now + 1).await?;
    let (before, today): (Vec<_>, Vec<_>) = minutes.into_iter().partition(|m| m.minute_ms < start);
    let energy = export::day_energy(before.last(), &today);
    let c = app.node.charter().await?;
    let trades = app.node.trades().await?;
    let todays: Vec<&TradeView> = trades
        .iter()
        .filter(|t| t.slot_ms >= start && t.slot_ms < now)
        .collect();
    Ok(Json(Summary {
        day_start_ms: start,
        energy,
        savings: export::savings(&todays, c.retail_price, c.feed_in_price),
        retail_price: c.retail_price,
        feed_in_price: c.feed_in_price,
        currency: c.currency,
    }))
}

async fn charter(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let c = app.node.charter().await?;
    Ok(Json(serde_json::json!({
        "version": c.version,
        "name": c.name,
        "slot_minutes": c.slot_minutes,
        "feed_in_price": c.feed_in_price,
        "retail_price": c.retail_price,
        "currency": c.currency,
        "time_zone": c.time_zone,
        "admins": c.admins.iter().map(|a| a.to_hex()).collect::<Vec<_>>(),
        "gate_closure_secs": c.gate_closure_secs,
        "settlement_grace_secs": c.settlement_grace_secs,
        "max_power_w": c.max_power_w,
        "effective_ms": c.effective_ms,
    })))
}

/// Member names by node id (hex).
async fn names(app: &App) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(app
        .node
        .members()
        .await?
        .into_iter()
        .map(|m| (m.node_id, m.name))
        .collect())
}

#[derive(Debug, Serialize)]
struct OfferOut {
    #[serde(flatten)]
    offer: OfferView,
    maker_name: String,
    mine: bool,
}

async fn offers(State(app): State<App>) -> Result<Json<Vec<OfferOut>>, ApiError> {
    let me = app.node.status().await?.node_id;
    let names = names(&app).await?;
    let list = app
        .node
        .offers()
        .await?
        .into_iter()
        .map(|o| OfferOut {
            maker_name: names
                .get(&o.maker)
                .cloned()
                .unwrap_or_else(|| o.maker_short.clone()),
            mine: o.maker == me,
            offer: o,
        })
        .collect();
    Ok(Json(list))
}

#[derive(Debug, Deserialize)]
struct NewOffer {
    side: SideArg,
    quantity_wh: u64,
    price: u64,
    #[serde(default)]
    slot_ms: Option<u64>,
}

async fn post_offer(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<NewOffer>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<OfferView>, ApiError> {
    may_trade(&s)?;
    let b = body(b)?;
    let p = PostOffer {
        side: b.side,
        quantity_wh: b.quantity_wh,
        price: b.price,
        slot_ms: b.slot_ms,
        min_fill_wh: None,
    };
    app.node
        .post(p)
        .await?
        .map(Json)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

async fn cancel_offer(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    nonce: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_trade(&s)?;
    let Path(nonce) = nonce.map_err(|e| ApiError::bad(e.body_text()))?;
    app.node
        .cancel(nonce)
        .await?
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Debug, Deserialize)]
struct TakeBody {
    maker: String,
    nonce: u64,
    energy_wh: u64,
}

async fn take(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<TakeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TradeView>, ApiError> {
    may_trade(&s)?;
    let b = body(b)?;
    let maker = wattmesh_protocol::NodeId::from_hex(b.maker.trim())
        .map_err(|_| ApiError::bad("maker must be a 64-digit hex node id"))?;
    app.node
        .take(maker, b.nonce, b.energy_wh)
        .await?
        .map(Json)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

#[derive(Debug, Serialize)]
struct TradeOut {
    #[serde(flatten)]
    trade: TradeView,
    counterparty_name: String,
    /// Where it stands for the owner (`paging::status_key`).
    status: &'static str,
}

fn trade_out(
    t: TradeView,
    names: &BTreeMap<String, String>,
    slot_len_ms: u64,
    now: u64,
) -> TradeOut {
    TradeOut {
        counterparty_name: names
            .get(&t.counterparty_id)
            .cloned()
            .unwrap_or_else(|| t.counterparty.clone()),
        status: super::paging::status_key(&t, slot_len_ms, now),
        trade: t,
    }
}

/// The trades a page at a time, newest slot first, with filters (`paging`).
async fn trades(
    State(app): State<App>,
    q: Q<super::paging::TradeQuery>,
) -> Result<Json<super::paging::Page<TradeOut>>, ApiError> {
    let q = query(q)?;
    let names = names(&app).await?;
    let now = app.node.status().await?.now_ms;
    let slot_len_ms = u64::from(app.node.charter().await?.slot_minutes) * 60_000;
    let list = app.node.trades().await?;
    let named = |t: &TradeView| names.get(&t.counterparty_id).cloned().unwrap_or_default();
    let p =
        super::paging::page(list, &q, slot_len_ms, now, named).map_err(|e| ApiError::bad(e.0))?;
    Ok(Json(super::paging::Page {
        trades: p
            .trades
            .into_iter()
            .map(|t| trade_out(t, &names, slot_len_ms, now))
            .collect(),
        next_cursor: p.next_cursor,
        total: p.total,
    }))
}

/// One trade, by its taker and nonce.
async fn one_trade(
    State(app): State<App>,
    p: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<TradeOut>, ApiError> {
    let Path((taker, nonce)) = p.map_err(|e| ApiError::bad(e.body_text()))?;
    let taker = wattmesh_protocol::NodeId::from_hex(taker.trim())
        .map_err(|_| ApiError::bad("the taker must be a 64-digit hex node id"))?
        .to_hex();
    let nonce: u64 = nonce
        .parse()
        .map_err(|_| ApiError::bad("the nonce must be a whole number"))?;
    let names = names(&app).await?;
    let now = app.node.status().await?.now_ms;
    let slot_len_ms = u64::from(app.node.charter().await?.slot_minutes) * 60_000;
    let t = app
        .node
        .trades()
        .await?
        .into_iter()
        .find(|t| t.taker == taker && t.nonce == nonce)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such trade on this node".into()))?;
    Ok(Json(trade_out(t, &names, slot_len_ms, now)))
}

#[derive(Debug, Serialize)]
struct LineOut {
    #[serde(flatten)]
    line: crate::ledger::Line,
    counterparty_name: String,
}

fn name_of(names: &BTreeMap<String, String>, id: &str) -> String {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| id.get(..4).unwrap_or(id).to_owned())
}

fn named(lines: Vec<crate::ledger::Line>, names: &BTreeMap<String, String>) -> Vec<LineOut> {
    lines
        .into_iter()
        .map(|line| LineOut {
            counterparty_name: name_of(names, &line.counterparty),
            line,
        })
        .collect()
}

async fn statements(State(app): State<App>) -> Result<Json<Vec<LineOut>>, ApiError> {
    let names = names(&app).await?;
    Ok(Json(named(app.node.ledger().await?.statements, &names)))
}

async fn ledger(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let names = names(&app).await?;
    let l = app.node.ledger().await?;
    let with_names = |v: Result<serde_json::Value, serde_json::Error>, key: &str| {
        let mut v = v.unwrap_or_default();
        for item in v.as_array_mut().into_iter().flatten() {
            let id = item[key].as_str().unwrap_or_default().to_owned();
            item["counterparty_name"] = serde_json::Value::String(name_of(&names, &id));
        }
        v
    };
    Ok(Json(serde_json::json!({
        "statements": named(l.statements, &names),
        "balances": named(l.balances, &names),
        "reputation": with_names(serde_json::to_value(&l.reputation), "peer"),
        "documents": with_names(serde_json::to_value(&l.documents), "counterparty"),
        "disputes": with_names(serde_json::to_value(&l.disputes), "counterparty"),
    })))
}

async fn doc(app: &App, req: crate::node::DocRequest) -> Result<Json<serde_json::Value>, ApiError> {
    let id = app
        .node
        .doc(req)
        .await?
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(Json(serde_json::json!({ "ok": true, "id": id })))
}

async fn propose_agreement(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<crate::node::AgreementArgs>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_trade(&s)?;
    doc(&app, crate::node::DocRequest::Agreement(body(b)?)).await
}

async fn pay(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<crate::node::PaymentArgs>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_trade(&s)?;
    doc(&app, crate::node::DocRequest::Pay(body(b)?)).await
}

#[derive(Debug, Deserialize)]
struct DecideBody {
    decision: crate::node::Decision,
}

async fn decide(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    b: Result<Json<DecideBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_trade(&s)?;
    let d = body(b)?.decision;
    doc(&app, crate::node::DocRequest::Decide(id, d)).await
}

async fn note(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<crate::node::NoteArgs>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_trade(&s)?;
    doc(&app, crate::node::DocRequest::Note(body(b)?)).await
}

async fn members(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.node.members().await?).into_response())
}

async fn invites(
    State(app): State<App>,
    Extension(s): Extension<Session>,
) -> Result<Response, ApiError> {
    if s.role != super::auth::Role::Owner {
        return Err(ApiError::forbidden(
            "only the owner account manages invites",
        ));
    }
    let list = app.node.tickets().await?.map_err(ApiError::internal)?;
    Ok(Json(list).into_response())
}

#[derive(Debug, Deserialize)]
struct InviteBody {
    #[serde(default)]
    note: String,
    #[serde(default)]
    valid_secs: u64,
}

async fn invite(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<InviteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if s.role != super::auth::Role::Owner {
        return Err(ApiError::forbidden("only the owner account issues invites"));
    }
    let b = body(b)?;
    if b.note.len() > 64 {
        return Err(ApiError::bad("the note is at most 64 bytes"));
    }
    let out = app
        .node
        .invite(InviteArgs {
            bootstrap: vec![],
            note: b.note,
            valid_secs: b.valid_secs.min(30 * 86_400),
        })
        .await?
        .map_err(ApiError::forbidden)?;
    Ok(Json(out).into_response())
}

async fn revoke(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if s.role != super::auth::Role::Owner {
        return Err(ApiError::forbidden(
            "only the owner account manages invites",
        ));
    }
    let msg = app
        .node
        .revoke(id)
        .await?
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(Json(serde_json::json!({ "ok": true, "message": msg })))
}

async fn trader(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.node.trader().await?).into_response())
}

#[derive(Debug, Deserialize)]
struct TraderBody {
    limits: crate::market::trader::Limits,
}

async fn set_trader(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<TraderBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    may_trade(&s)?;
    let l = body(b)?.limits;
    if l.from_hour > 24 || l.to_hour > 24 {
        return Err(ApiError::bad("hours are 0 to 24"));
    }
    if l.utc_offset_minutes.abs() > 14 * 60 {
        return Err(ApiError::bad("utc_offset_minutes is within ±14 hours"));
    }
    if l.lead_slots > 96 || l.ramp_minutes > 24 * 60 {
        return Err(ApiError::bad(
            "lead_slots at most 96, ramp_minutes at most a day",
        ));
    }
    app.node.set_trader(l).await?.map_err(ApiError::internal)?;
    Ok(Json(app.node.trader().await?).into_response())
}

async fn calibration(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(Json(app.node.meter_calibration().await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalibrationBody {
    calibration: crate::meter::ct::Calibration,
}

async fn set_calibration(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<CalibrationBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    use crate::node::CalibrationError;
    may_trade(&s)?;
    let cal = body(b)?.calibration;
    match app.node.set_meter_calibration(cal).await? {
        Ok(()) => Ok(Json(app.node.meter_calibration().await?).into_response()),
        Err(CalibrationError::NotCalibratable(m)) => Err(ApiError(StatusCode::CONFLICT, m)),
        Err(CalibrationError::Invalid(m)) => Err(ApiError::bad(m)),
        Err(CalibrationError::Store(m)) => Err(ApiError::internal(m)),
    }
}

/// The readings retention the owner may choose, days.
const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 7..=3650;

#[derive(Debug, Serialize, Deserialize)]
struct RetentionBody {
    /// Days of per-minute readings kept.
    days: u32,
}

async fn retention(State(app): State<App>) -> Result<Response, ApiError> {
    let days = app.node.retention_days().await?;
    Ok(Json(RetentionBody { days }).into_response())
}

async fn set_retention(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    b: Result<Json<RetentionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if s.role != super::auth::Role::Owner {
        return Err(ApiError::forbidden("only the owner changes the retention"));
    }
    let days = body(b)?.days;
    if !RETENTION_DAYS.contains(&days) {
        return Err(ApiError::bad(format!(
            "keep readings for {} to {} days",
            RETENTION_DAYS.start(),
            RETENTION_DAYS.end()
        )));
    }
    app.node
        .set_retention_days(days)
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(RetentionBody { days }).into_response())
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ExportRange {
    from: Option<u64>,
    to: Option<u64>,
}

async fn export_readings(State(app): State<App>, q: Q<ExportRange>) -> Result<Response, ApiError> {
    let r = query(q)?;
    let now = app.node.status().await?.now_ms;
    let (from, to) = span(
        &Range {
            from: r.from,
            to: r.to,
            step: None,
        },
        now,
    )?;
    let slot_ms = u64::from(app.node.charter().await?.slot_minutes) * 60_000;
    let steps = export::aggregate_sums(minute_sums(&app, from, to, slot_ms, 0).await?, slot_ms, 0);
    let rows = steps.windows(2).map(|w| {
        let (a, b) = (&w[0], &w[1]);
        vec![
            b.t.to_string(),
            b.import_wh.saturating_sub(a.import_wh).to_string(),
            b.export_wh.saturating_sub(a.export_wh).to_string(),
            (b.solar_w * (slot_ms as i64) / 3_600_000).to_string(),
            (b.load_w * (slot_ms as i64) / 3_600_000).to_string(),
            b.grid_w.to_string(),
        ]
    });
    Ok(csv_response(
        "readings.csv",
        export::csv(
            &[
                "slot_start_ms",
                "import_wh",
                "export_wh",
                "solar_wh",
                "consumption_wh",
                "mean_grid_w",
            ],
            rows,
        ),
    ))
}

/// The signed export of the trades in a range of slots (`to` inclusive, like the CSVs).
async fn export_signed(State(app): State<App>, q: Q<ExportRange>) -> Result<Response, ApiError> {
    let r = query(q)?;
    let (from, to) = (r.from.unwrap_or(0), r.to.unwrap_or(u64::MAX - 1));
    if from > to {
        return Err(ApiError::bad("from must not be after to"));
    }
    let f = app
        .node
        .signed_export(from, to.saturating_add(1))
        .await?
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"wattmesh-export.json\"".to_string(),
        )],
        Json(f),
    )
        .into_response())
}

async fn ranged_trades(app: &App, q: Q<ExportRange>) -> Result<Vec<TradeView>, ApiError> {
    let r = query(q)?;
    let (from, to) = (r.from.unwrap_or(0), r.to.unwrap_or(u64::MAX));
    let mut t: Vec<TradeView> = app
        .node
        .trades()
        .await?
        .into_iter()
        .filter(|t| t.slot_ms >= from && t.slot_ms <= to)
        .collect();
    t.sort_by_key(|t| (t.slot_ms, t.nonce));
    Ok(t)
}

fn state_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn export_trades(State(app): State<App>, q: Q<ExportRange>) -> Result<Response, ApiError> {
    let trades = ranged_trades(&app, q).await?;
    let rows = trades.iter().map(|t| {
        vec![
            t.slot_ms.to_string(),
            t.role.to_string(),
            t.side.to_string(),
            t.counterparty_id.clone(),
            t.energy_wh.to_string(),
            t.price.to_string(),
            state_name(&t.state),
            t.taker.clone(),
            t.nonce.to_string(),
        ]
    });
    Ok(csv_response(
        "trades.csv",
        export::csv(
            &[
                "slot_start_ms",
                "role",
                "side",
                "counterparty",
                "energy_wh",
                "price_millicents_per_kwh",
                "state",
                "taker",
                "nonce",
            ],
            rows,
        ),
    ))
}

async fn export_settlements(
    State(app): State<App>,
    q: Q<ExportRange>,
) -> Result<Response, ApiError> {
    let trades = ranged_trades(&app, q).await?;
    let rows = trades.iter().filter(|t| t.settlement.is_some()).map(|t| {
        vec![
            t.slot_ms.to_string(),
            t.side.to_string(),
            t.counterparty_id.clone(),
            t.energy_wh.to_string(),
            t.delivered_wh.map(|d| d.to_string()).unwrap_or_default(),
            t.price.to_string(),
            t.amount.map(|a| a.to_string()).unwrap_or_default(),
            t.settlement.as_ref().map(state_name).unwrap_or_default(),
        ]
    });
    Ok(csv_response(
        "settlements.csv",
        export::csv(
            &[
                "slot_start_ms",
                "side",
                "counterparty",
                "agreed_wh",
                "delivered_wh",
                "price_millicents_per_kwh",
                "amount_millicents",
                "state",
            ],
            rows,
        ),
    ))
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metrics, for a bearer token rather than a browser session.
pub(super) async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let token = &app.cfg.metrics_token;
    if token.is_empty() {
        return ApiError(
            StatusCode::NOT_FOUND,
            "metrics are off; set [web] metrics_token to turn them on".into(),
        )
        .into_response();
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !super::auth::constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required".into(),
        )
        .into_response();
    }
    let (Ok(s), Ok(trades)) = (app.node.status().await, app.node.trades().await) else {
        return ApiError::stopping().into_response();
    };
    let settled = trades
        .iter()
        .filter(|t| state_name(&t.settlement) == "settled")
        .count();
    let c = &s.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "wattmesh_peers",
        "gauge",
        "Connected peers.",
        s.peers.len().to_string(),
    );
    metric(
        "wattmesh_offers",
        "gauge",
        "Offers in the book.",
        s.offers.to_string(),
    );
    metric(
        "wattmesh_trades",
        "gauge",
        "Trades this node is party to.",
        trades.len().to_string(),
    );
    metric(
        "wattmesh_trades_settled",
        "gauge",
        "Trades settled by both parties.",
        settled.to_string(),
    );
    metric(
        "wattmesh_grid_power_watts",
        "gauge",
        "Grid power, positive importing.",
        s.meter.grid_w.to_string(),
    );
    metric(
        "wattmesh_solar_power_watts",
        "gauge",
        "Solar production.",
        s.meter.solar_w.to_string(),
    );
    metric(
        "wattmesh_import_energy_wh_total",
        "counter",
        "Grid import register.",
        s.meter.import_wh.to_string(),
    );
    metric(
        "wattmesh_export_energy_wh_total",
        "counter",
        "Grid export register.",
        s.meter.export_wh.to_string(),
    );
    metric(
        "wattmesh_gossip_accepted_total",
        "counter",
        "Gossip messages accepted.",
        c.gossip_accepted.to_string(),
    );
    metric(
        "wattmesh_gossip_rejected_total",
        "counter",
        "Gossip messages rejected as invalid.",
        c.gossip_rejected.to_string(),
    );
    metric(
        "wattmesh_gossip_ignored_total",
        "counter",
        "Gossip messages ignored.",
        c.gossip_ignored.to_string(),
    );
    metric(
        "wattmesh_attestation_chain_breaks_total",
        "counter",
        "Peers' attestations or commitments that broke their chain.",
        c.attestation_chain_breaks.to_string(),
    );
    metric(
        "wattmesh_attestations_sent_privately_total",
        "counter",
        "Private attestations delivered to trade counterparties (privacy mode).",
        c.attestations_sent_privately.to_string(),
    );
    metric(
        "wattmesh_commitments_received_total",
        "counter",
        "Peers' attestation commitments accepted (privacy mode).",
        c.commitments_received.to_string(),
    );
    if let Some(h) = &s.meter.health {
        metric(
            "wattmesh_meter_fault",
            "gauge",
            "1 while the meter source reports a fault, else 0.",
            u8::from(h.error.is_some()).to_string(),
        );
        // One labelled series per counter: reads that worked and read errors by kind.
        let name = "wattmesh_meter_source_events_total";
        out.push_str(&format!(
            "# HELP {name} Meter source counters since start: reads and read errors by kind.\n\
             # TYPE {name} counter\n"
        ));
        for (counter, v) in &h.counters {
            out.push_str(&format!(
                "{name}{{source=\"{}\",counter=\"{}\"}} {v}\n",
                label(&h.source),
                label(counter)
            ));
        }
    }
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "wattmesh_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        s.uptime_secs.to_string(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
