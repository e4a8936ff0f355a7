//! The `taskmesh` binary's library part: what both the binary and the test harness run.
//!
//! # Layout
//! - [`mesh`]: every component in one process (`taskmesh dev`, and the test harness).

pub mod mesh;
