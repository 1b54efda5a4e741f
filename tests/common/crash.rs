//! Crash children: a writer process whose acknowledgements the test reads
//! line by line until it has enough, then kills with SIGKILL (kill -9).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Spawns `cmd` (stdout piped), reads its output lines until `want` of
/// them count as acknowledgements (`is_ack`) or `patience` passed, then
/// kills it with SIGKILL and reaps it. Returns the acknowledgement lines;
/// fails the test if fewer than `want` arrived.
pub fn acks_then_kill(
    cmd: &mut Command,
    want: usize,
    patience: Duration,
    is_ack: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn the crash child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acks = Vec::new();
    let deadline = Instant::now() + patience;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the child's output");
        if is_ack(&line) {
            acks.push(line);
        }
        if acks.len() >= want || Instant::now() > deadline {
            break;
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap the child");
    assert!(acks.len() >= want, "the child acknowledged only {} writes", acks.len());
    acks
}
