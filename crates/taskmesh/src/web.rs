//! The web app for `taskmesh dev`: when the gateway's web directory is `web/dist` of a source
//! checkout (a `package.json` beside it) and is missing or older than its sources, it is
//! built first with npm (`npm install` once, then `npm run build`: `buf generate`, `tsc`,
//! esbuild). Without npm, or when the build fails, `dev` still starts and the gateway serves
//! its short index page; the log says how to build the app by hand.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

/// Builds the web app served from `dist` if needed (see the module docs). Never fails: a
/// problem is logged as a warning.
pub(crate) async fn ensure_built(dist: PathBuf) {
    let result = tokio::task::spawn_blocking(move || build_if_stale(&dist)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => tracing::warn!(
            "the web app is not built ({problem}); build it with \
             `npm --prefix web install && npm --prefix web run build` (Node.js 20+)"
        ),
        Err(panic) => tracing::warn!(%panic, "the web app build was interrupted"),
    }
}

fn build_if_stale(dist: &Path) -> Result<(), String> {
    let Some(app) = dist
        .parent()
        .filter(|app| app.join("package.json").is_file())
    else {
        // Not a source checkout (an installed app directory, or none): serve what is there.
        return Ok(());
    };
    let built = modified(&dist.join("index.html"));
    let sources = [
        app.join("src"),
        app.join("package.json"),
        app.join("package-lock.json"),
        app.join("../proto"),
    ];
    let newest = sources.iter().filter_map(|path| newest_file(path)).max();
    if built.is_some() && built >= newest {
        return Ok(());
    }
    tracing::info!(app = %app.display(), "building the web app (npm run build)");
    if needs_install(app) {
        npm(
            app,
            &["install", "--no-audit", "--no-fund", "--loglevel=error"],
        )?;
    }
    npm(app, &["run", "build"])?;
    tracing::info!(dist = %dist.display(), "web app built");
    Ok(())
}

/// Whether `npm install` must run in `dir`: no `node_modules`, or its record of what was
/// installed (`node_modules/.package-lock.json`) is older than `package-lock.json` (a pull
/// added a dependency).
pub(crate) fn needs_install(dir: &Path) -> bool {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed < locked,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn npm(dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|error| format!("cannot run npm: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`npm {}` failed with {status}", args.join(" ")))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|meta| meta.modified()).ok()
}

/// The newest modification time of a file, or of any file under a directory (skipping
/// generated code and dependencies).
fn newest_file(path: &Path) -> Option<SystemTime> {
    let meta = path.metadata().ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| !matches!(entry.file_name().to_str(), Some("gen" | "node_modules")))
        .filter_map(|entry| newest_file(&entry.path()))
        .max()
}
