//! Simulated wattmesh neighbourhoods on one machine.
//!
//! - [`run`]: a neighbourhood of real `wattmesh` processes on loopback, on one accelerated
//!   clock, driven by a [`scenario`] (charter, home mix, faults, a [`hostile`] home), with a
//!   report and `--check`;
//! - [`baseline`]: the bare gossipsub baseline the propagation benchmark compares with;
//! - [`walkthrough`]: one slot played through the real protocol code in one process.

pub mod baseline;
pub mod hostile;
pub mod html;
pub mod netns;
pub mod observe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod walkthrough;
