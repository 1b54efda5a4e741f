//! The lifecycle subcommands of the `flowmesh` command on a file:// engine:
//! `stream ls|info|rm|purge|update`, `queue ls|rm|purge|extend`,
//! `kv buckets|rm-bucket`, and the confirmation destructive ones ask for on
//! a terminal.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn flowmesh(url: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(args)
        .env("FLOWMESH_URL", url)
        .stdin(Stdio::null())
        .output()
        .expect("run flowmesh");
    out
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = flowmesh(url, args);
    assert!(out.status.success(), "flowmesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lifecycle_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    ok(&url, &["pub", "orders", "a", "b", "c"]);
    ok(&url, &["pub", "orders-eu", "x"]);
    ok(&url, &["queue", "enqueue", "jobs", "j1"]);
    ok(&url, &["kv", "set", "cfg", "k", "v"]);
    assert_eq!(ok(&url, &["stream", "ls"]), "default/default/orders\ndefault/default/orders-eu\n");
    assert_eq!(ok(&url, &["stream", "ls", "orders-"]), "default/default/orders-eu\n");
    let info = ok(&url, &["stream", "info", "orders"]);
    assert!(info.contains("partitions=1") && info.contains("partition 0 earliest=0 latest=3"), "{info}");
    let upd = ok(&url, &["stream", "update", "orders", "--partitions", "2", "--max-messages", "100"]);
    assert_eq!(upd, "partitions=2 max_age_ms=0 max_bytes=0 max_messages=100\n");
    let shrink = flowmesh(&url, &["stream", "update", "orders", "--partitions", "1"]);
    assert_eq!(shrink.status.code(), Some(1), "invalid argument");
    assert_eq!(ok(&url, &["stream", "purge", "orders"]), "removed 3\n");
    ok(&url, &["stream", "rm", "orders-eu", "--yes"]);
    assert_eq!(ok(&url, &["stream", "ls"]), "default/default/orders\n");
    let missing = flowmesh(&url, &["stream", "rm", "orders-eu", "--yes"]);
    assert_eq!(missing.status.code(), Some(2), "not found");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    assert_eq!(ok(&url, &["queue", "ls"]), "default/default/jobs\n");
    let job = ok(&url, &["queue", "reserve", "jobs", "--visibility-ms", "60000"]);
    let id = job.split_whitespace().next().unwrap().to_owned();
    ok(&url, &["queue", "extend", "jobs", &id, "--visibility-ms", "60000"]);
    assert_eq!(flowmesh(&url, &["queue", "extend", "jobs", "999"]).status.code(), Some(2));
    ok(&url, &["queue", "enqueue", "jobs", "j2"]);
    assert_eq!(ok(&url, &["queue", "purge", "jobs", "-y"]), "removed 1\n");
    ok(&url, &["queue", "rm", "jobs", "--yes"]);
    assert_eq!(ok(&url, &["queue", "ls"]), "");

    assert_eq!(ok(&url, &["kv", "buckets"]), "default/default/cfg\n");
    ok(&url, &["kv", "rm-bucket", "cfg", "--yes"]);
    assert_eq!(ok(&url, &["kv", "buckets"]), "");
    for help in [&["stream", "--help"][..], &["queue", "extend", "--help"], &["kv", "rm-bucket", "--help"]] {
        assert!(!ok(&url, help).is_empty());
    }
}

/// Runs `flowmesh args` with a terminal as stdin (through script(1)) and
/// `answer` typed into it.
fn on_terminal(url: &str, args: &str, answer: &str) -> bool {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_flowmesh"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("FLOWMESH_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) runs the command on a pseudo terminal");
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success()
}

#[test]
fn destructive_commands_ask_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    ok(&url, &["pub", "s", "x"]);
    assert!(!on_terminal(&url, "stream rm s", "n\n"), "declined: refused");
    assert_eq!(ok(&url, &["stream", "ls"]), "default/default/s\n", "still there");
    assert!(!on_terminal(&url, "stream purge s", "\n"), "no answer: refused");
    assert!(on_terminal(&url, "stream rm s", "y\n"), "confirmed");
    assert_eq!(ok(&url, &["stream", "ls"]), "");
    ok(&url, &["pub", "s", "x"]);
    assert!(on_terminal(&url, "stream rm s --yes", ""), "--yes asks nothing");
    assert_eq!(ok(&url, &["stream", "ls"]), "");
}
