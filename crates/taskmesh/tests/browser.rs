//! The browser client end to end: builds `web/` (`npm run build`: `buf generate`, `tsc`,
//! esbuild) and runs its Playwright tests (`web/tests/`) in headless Debian Chromium against
//! this build's `taskmesh dev` on a fresh database (and, for sign-in, a real OpenID Connect
//! provider: `tools/oidc/provider.mjs`). Screenshots land in `build/screenshots/`.
//!
//! Needs Node.js with npm and Chromium (`CHROMIUM`, default `/usr/bin/chromium`). Without
//! them the test says so and passes, unless `TASKMESH_REQUIRE_BROWSER=1` (set by `.ci/run`,
//! which installs both).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Runs `npm <args>` in `dir`, failing the test with its exit status.
fn npm_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .status()
        .expect("run npm");
    assert!(
        status.success(),
        "`npm {}` failed: {status}",
        args.join(" ")
    );
}

#[test]
fn web_app_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let required = std::env::var("TASKMESH_REQUIRE_BROWSER").is_ok_and(|value| value == "1");
    let npm_found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !npm_found || !Path::new(&chromium).exists() {
        assert!(
            !required,
            "TASKMESH_REQUIRE_BROWSER=1 but npm (found: {npm_found}) or Chromium ({chromium}) is missing"
        );
        // Written past the test harness's capture, so a passing run still shows it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED web_app_in_chromium: the browser tests need npm and Chromium at {chromium} \
             (apt install chromium); TASKMESH_REQUIRE_BROWSER=1 makes this a failure"
        );
        return;
    }
    // Always (quick when nothing changed): a pull may have added a dependency. tools/ has
    // the sign-in test's identity provider (npm `oidc-provider`, tools/oidc/provider.mjs).
    let install = ["install", "--no-audit", "--no-fund", "--loglevel=error"];
    npm_in(&web_dir(), &install, &[]);
    npm_in(&web_dir().join("../tools"), &install, &[]);
    npm_in(&web_dir(), &["run", "build"], &[]);
    npm_in(
        &web_dir(),
        &["test"],
        &[
            ("TASKMESH_BIN", env!("CARGO_BIN_EXE_taskmesh")),
            ("CHROMIUM", &chromium),
        ],
    );
}
