//! Rebuilds this crate when the platform's migrations change: `sqlx::migrate!` embeds them at
//! compile time and cannot tell cargo itself on stable Rust (sqlx's recommended build script).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/platform");
}
