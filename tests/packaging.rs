//! Running under a service manager: systemd readiness notifications (Type=notify), the
//! shipped unit file passes `systemd-analyze verify`, `skerry health` (issue 11).

mod common;

use common::*;
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const SUITE: u8 = 36;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("nothing received: {e}"),
    }
}

#[test]
fn systemd_hears_ready_once_the_node_serves_reloading_around_restart_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let ip = ips(SUITE, 1);
    let mut n = TestNode::start_with_env(&ip[0], "", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    // TestNode::start returned after /health answered; READY=1 was sent before that.
    assert_eq!(recv(&sock), "READY=1");
    n.ok(json!({"operation":"restart"}));
    assert_eq!(recv(&sock), "RELOADING=1");
    assert_eq!(recv(&sock), "READY=1");
    n.stop();
    assert_eq!(recv(&sock), "STOPPING=1");
}

#[test]
fn the_shipped_systemd_unit_verifies() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/skerry.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/skerry", env!("CARGO_BIN_EXE_skerry"));
    let path = dir.path().join("skerry.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The unit names a user that only exists once installed; anything else is a real problem.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("User=") && !l.contains("skerry"))
        .collect();
    assert!(problems.is_empty(), "{text}");
    assert!(!text.contains("Unknown key"), "{text}");
    assert!(!text.contains("ignoring"), "{text}");
}
