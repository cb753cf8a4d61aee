//! Simulated wattmesh neighbourhoods on one machine.
//!
//! Until the node's networking lands (issue 3) and the multi-process testnet is built on it
//! (issue 8), this crate holds the protocol walkthrough: one slot of a neighbourhood played
//! through the real protocol code in one process, with every message sealed, encoded,
//! decoded and validated as a receiving node would.

pub mod run;
pub mod walkthrough;
