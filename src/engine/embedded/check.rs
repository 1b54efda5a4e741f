//! `flowmesh check DIR`: verifies every file of a closed data directory and,
//! with `repair`, moves damaged bytes and torn tails to quarantine files
//! beside the file they came from (`<file>.damaged-<start>-<end>`,
//! `<file>.torn-<start>-<end>`), so that nothing is ever deleted.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::codec::{self, Piece};
use super::log::{quarantine_path, save_aside};
use super::partition::{check_partition, install, Finding};

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Files verified.
    pub files: u64,
    /// Intact records in them.
    pub records: u64,
    /// Every problem found, in file order.
    pub findings: Vec<Finding>,
    /// Whether the findings were repaired (truncated or rebuilt).
    pub repaired: bool,
}

impl CheckReport {
    /// Whether nothing was found.
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            write!(f, "{}: bytes {}..{}: {}", x.file.display(), x.bytes.0, x.bytes.1, x.what)?;
            if let Some(to) = &x.moved_to {
                write!(f, "; moved to {}", to.display())?;
            }
            writeln!(f)?;
        }
        let verdict = match (self.findings.len(), self.repaired) {
            (0, _) => "no damage".to_owned(),
            (n, false) => format!("{n} problem(s); run again with --repair to move them to quarantine files"),
            (n, true) => format!("{n} problem(s) repaired"),
        };
        write!(f, "{} files, {} intact records: {verdict}", self.files, self.records)
    }
}

/// Checks the data directory `dir` (it must not be open elsewhere).
pub fn check(dir: &Path, repair: bool) -> Result<CheckReport> {
    if !dir.join("LOCK").exists() && !dir.join("streams").exists() {
        return Err(Error::NotFound(format!("{} is not a flowmesh data directory", dir.display())));
    }
    let _lock = super::lock_dir(dir)?;
    let mut report = CheckReport { repaired: repair, ..Default::default() };
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let in_txn = path.parent().and_then(|p| p.file_name()).is_some_and(|d| d == "txn");
        // Write-ahead logs (and the transaction log, framed alike) here;
        // segments below, a partition at a time.
        if matches!(name, "queue.log" | "bucket.log" | "offsets.log") || (in_txn && name == "kv.log") {
            report.files += 1;
            check_wal(&path, repair, &mut report)?;
        }
    }
    let mut partitions = Vec::new();
    walk_partitions(&dir.join("streams"), &mut partitions)?;
    partitions.sort();
    for p in partitions {
        report.files += fs::read_dir(&p).map_or(0, |d| {
            d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".log"))).count()
        }) as u64;
        let (findings, records) = check_partition(&p, repair)?;
        report.records += records;
        report.findings.extend(findings);
    }
    Ok(report)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out)?,
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Partition directories (`p<N>` holding segments) under `dir`.
fn walk_partitions(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for e in entries.filter_map(|e| e.ok()) {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let is_partition =
            e.file_name().to_str().and_then(|n| n.strip_prefix('p')).is_some_and(|n| n.parse::<u32>().is_ok());
        if is_partition && path.parent().is_some_and(|p| p.join("meta.json").exists()) {
            out.push(path);
        } else {
            walk_partitions(&path, out)?;
        }
    }
    Ok(())
}

fn check_wal(path: &Path, repair: bool, report: &mut CheckReport) -> Result<()> {
    let data = fs::read(path).map_err(|e| Error::io(&format!("read {}", path.display()), e))?;
    let scan = codec::scan(&data, true, |_| true);
    report.records += scan.pieces.iter().filter(|p| matches!(p, Piece::Frame { .. })).count() as u64;
    let damaged: Vec<(usize, usize)> = scan.damaged().collect();
    let torn = (scan.tail < data.len()).then_some(scan.tail);
    for &(start, end) in &damaged {
        report.findings.push(Finding {
            file: path.to_owned(),
            bytes: (start as u64, end as u64),
            what: "damaged: checksum mismatch (the records in these bytes are lost to the log)".into(),
            moved_to: repair.then(|| quarantine_path(path, "damaged", start as u64, end as u64)),
        });
    }
    if let Some(at) = torn {
        report.findings.push(Finding {
            file: path.to_owned(),
            bytes: (at as u64, data.len() as u64),
            what: "torn tail: an append that never completed".into(),
            moved_to: repair.then(|| quarantine_path(path, "torn", at as u64, data.len() as u64)),
        });
    }
    if !repair || (damaged.is_empty() && torn.is_none()) {
        return Ok(());
    }
    let mut out = Vec::with_capacity(data.len());
    for piece in &scan.pieces {
        match *piece {
            Piece::Frame { pos, body } => out.extend_from_slice(&data[pos..pos + codec::FRAME_HEADER + body.len()]),
            Piece::Damaged { start, end } => {
                save_aside(&quarantine_path(path, "damaged", start as u64, end as u64), &data[start..end])?
            }
        }
    }
    if let Some(at) = torn {
        save_aside(&quarantine_path(path, "torn", at as u64, data.len() as u64), &data[at..])?;
    }
    install(path, &out)
}
