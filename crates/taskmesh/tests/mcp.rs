//! The MCP server end to end, with the official Python MCP SDK (PyPI `mcp`) as its client:
//! runs `tools/mcp_test.py` (with its helpers `tools/mcp_test_support.py` and
//! `tools/mcp_test_http.py`) against this build's `taskmesh dev` on a fresh database. Over
//! Streamable HTTP at `/mcp`, in the SDK's newest protocol revision (2026-07-28) and the one
//! before it (2025-11-25, plus a short 2025-06-18 session), it lists the tools (descriptions,
//! input and output schemas, the exact read-only and destructive hints) and has a scripted
//! conversation that calls every tool, validating each result's `structuredContent` against
//! the tool's `outputSchema` (JSON Schema 2020-12) and its text against the same JSON, and
//! checking what the results mean (a date-only task's reminder time, the next occurrence
//! after a skipped one, a reminder that fires and is snoozed); bad input, also arguments that
//! do not fit the schema, must give bounded `isError` results. It checks the HTTP layer (403
//! for a foreign `Host` or `Origin` with or without a token, 401 with a `resource_metadata`
//! challenge, the protected-resource metadata, 405 for GET), that one user cannot see
//! another's tasks, and `taskmesh mcp --stdio` through the SDK's stdio client. Logs land in
//! `build/mcp-tests/`.
//!
//! Needs `python3` (3.10 or newer) with its venv module (Debian: `python3-venv`) and PyPI:
//! the SDK is installed from `tools/mcp-requirements.txt` into a virtualenv in cargo's
//! target tmp dir, again whenever that file changes. Without a usable `python3` the test says
//! so and passes, unless `TASKMESH_REQUIRE_MCP_CLIENT=1`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `python3` is 3.10 or newer (the SDK's minimum) and can make a virtualenv.
fn python_usable() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))",
        ])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `command`, failing the test with its exit status.
fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// The virtualenv's python, with `tools/mcp-requirements.txt` installed: pip runs only when
/// the file differs from the copy kept in the virtualenv after the last install. A
/// virtualenv without its python or its pip (an interrupted creation) is made anew.
fn venv_python(root: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
    let python = venv.join("bin").join("python");
    let pip = venv.join("bin").join("pip");
    if !(python.exists() && pip.exists()) {
        run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "python3 -m venv",
        );
    }
    let requirements = root.join("tools").join("mcp-requirements.txt");
    let wanted = fs::read_to_string(&requirements).expect("read tools/mcp-requirements.txt");
    let stamp = venv.join("taskmesh-mcp-requirements.txt");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
            "pip install -r tools/mcp-requirements.txt",
        );
        fs::write(&stamp, &wanted).expect("write the virtualenv's requirements stamp");
    }
    python
}

#[test]
fn mcp_clients_end_to_end() {
    let required = std::env::var("TASKMESH_REQUIRE_MCP_CLIENT").is_ok_and(|value| value == "1");
    if !python_usable() {
        assert!(
            !required,
            "TASKMESH_REQUIRE_MCP_CLIENT=1 but python3 (3.10 or newer, with venv and ensurepip) is missing"
        );
        // Written past the test harness's capture, so a passing run still shows it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED mcp_clients_end_to_end: the MCP client test needs python3 3.10 or newer \
             with its venv module (apt install python3-venv); TASKMESH_REQUIRE_MCP_CLIENT=1 \
             makes this a failure"
        );
        return;
    }
    let root = repo_root();
    let python = venv_python(&root);
    run(
        Command::new(&python)
            .arg(root.join("tools").join("mcp_test.py"))
            .current_dir(&root)
            .env("TASKMESH_BIN", env!("CARGO_BIN_EXE_taskmesh"))
            .env("PYTHONUNBUFFERED", "1"),
        "tools/mcp_test.py",
    );
}
