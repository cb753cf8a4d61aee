//! The wattmesh node: everything that runs on a home's computer. For now it holds the node's
//! identity on disk; networking, storage, meters, the market and the web UI land here as their
//! issues are taken (see docs/ARCHITECTURE.md).

pub mod dirs;
pub mod identity;
