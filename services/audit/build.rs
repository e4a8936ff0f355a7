//! Rebuilds this crate when its migrations or its `.sqlx/` query data change:
//! `sqlx::migrate!` and the offline query macros read them at compile time and cannot tell
//! cargo themselves on stable Rust (sqlx's recommended build script).

fn main() {
    // The query data of its compile-checked queries (read offline: see README "Checks").
    println!("cargo:rerun-if-changed=.sqlx");
    println!("cargo:rerun-if-changed=../../migrations/audit");
}
