//! `wattmesh-testnet run --check` exits non-zero, saying why, when a home is broken: here one
//! aborts by itself partway through the run, as a crashing node would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn check_fails_when_a_home_crashes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("broken.toml");
    std::fs::write(
        &scenario,
        r#"
name = "broken"
homes = 3
speed = 20
duration_min = 8

[[sabotage]]
home = 1
crash_after_s = 8
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattmesh-testnet"))
        .args(["run", "--check", "--base-port", "24500", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--check passed with a crashing home:\n{stderr}"
    );
    assert!(
        stderr.contains("--check failed")
            && stderr.contains("healthy homes crashed: [\"home-01\"]"),
        "{stderr}"
    );
    // The report still describes the run, and says the same.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["crashed_homes"][0], "home-01");
    assert!(dir.path().join("out/report.html").exists());
}
