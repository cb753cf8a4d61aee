//! The wattmesh node: everything that runs on a home's computer. For now it holds the node's
//! identity on disk; networking, storage, meters, the market and the web UI land here as their
//! issues are taken (see docs/ARCHITECTURE.md).

pub mod backup;
pub mod book;
pub mod clock;
pub mod config;
pub mod control;
pub mod dirs;
pub mod discovery;
pub mod display;
pub mod forecast;
pub mod identity;
pub mod ledger;
pub mod market;
pub mod meter;
pub mod metering;
pub mod neighbourhood;
pub mod net;
pub mod node;
pub mod signed_export;
pub mod store;
pub mod summary;
pub mod web;
pub mod worker;
