//! Storage fault injection, compiled into unit tests only: every write and
//! fsync of the logs passes through these hooks, which in a normal build do
//! nothing and compile away. A test arms faults for one data directory (so
//! tests running in parallel never see each other's faults):
//! - disk full: appends fail with ENOSPC once a byte budget is spent (the
//!   write that crosses it is cut short, as a real full disk does);
//! - failed fsync: every fsync fails with EIO;
//! - power loss: `power_loss` cuts every file back to what was last fsynced,
//!   optionally keeping a torn prefix of the rest.

use std::io;
use std::path::Path;

pub use hooks::*;

/// The error a cut-short write reports, as the kernel would.
pub fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

#[cfg(not(test))]
mod hooks {
    use super::*;

    /// How many of `len` bytes may be written to `path` (all, outside tests).
    #[inline(always)]
    pub fn writable(_path: &Path, len: usize) -> usize {
        len
    }

    #[inline(always)]
    pub fn fsync(_path: &Path) -> io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub fn synced(_path: &Path, _len: u64) {}

    #[inline(always)]
    pub fn renamed(_from: &Path, _to: &Path) {}
}

#[cfg(test)]
mod hooks {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Plan {
        /// Bytes that may still be appended (None: unlimited).
        pub space: Option<u64>,
        pub fail_fsync: bool,
        /// Crashed: nothing written any more becomes durable.
        pub crashed: bool,
        /// fsyncs of log files asked for since the plan was armed.
        pub fsyncs: u64,
        /// How long each fsync takes (a slow disk), so that writers pile up.
        pub fsync_time: Option<std::time::Duration>,
        /// Durable length of every file written since the plan was armed.
        durable: HashMap<PathBuf, u64>,
    }

    static PLANS: Mutex<Vec<(PathBuf, Plan)>> = Mutex::new(Vec::new());

    fn with_plan<T>(path: &Path, f: impl FnOnce(&mut Plan) -> T) -> Option<T> {
        let mut plans = PLANS.lock().unwrap();
        plans.iter_mut().find(|(dir, _)| path.starts_with(dir)).map(|(_, p)| f(p))
    }

    /// Arms (or re-arms) faults for every file under `dir`.
    pub fn arm(dir: &Path, change: impl FnOnce(&mut Plan)) {
        let dir = dir.to_owned();
        let mut plans = PLANS.lock().unwrap();
        if !plans.iter().any(|(d, _)| *d == dir) {
            plans.push((dir.clone(), Plan::default()));
        }
        let plan = plans.iter_mut().find(|(d, _)| *d == dir).map(|(_, p)| p).unwrap();
        change(plan);
    }

    /// fsyncs asked for under `dir` since its plan was armed.
    pub fn fsyncs(dir: &Path) -> u64 {
        PLANS.lock().unwrap().iter().find(|(d, _)| d == dir).map_or(0, |(_, p)| p.fsyncs)
    }

    pub fn disarm(dir: &Path) {
        PLANS.lock().unwrap().retain(|(d, _)| d != dir);
    }

    fn note_existing(plan: &mut Plan, path: &Path) {
        if !plan.durable.contains_key(path) {
            // Written before the plan was armed: durable as it stands.
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            plan.durable.insert(path.to_owned(), len);
        }
    }

    pub fn writable(path: &Path, len: usize) -> usize {
        with_plan(path, |plan| {
            note_existing(plan, path);
            match plan.space.as_mut() {
                None => len,
                Some(space) => {
                    let n = (*space).min(len as u64);
                    *space -= n;
                    n as usize
                }
            }
        })
        .unwrap_or(len)
    }

    pub fn fsync(path: &Path) -> io::Result<()> {
        let (failing, time) = with_plan(path, |plan| {
            plan.fsyncs += 1;
            (plan.fail_fsync || plan.crashed, plan.fsync_time)
        })
        .unzip();
        if let Some(t) = time.flatten() {
            std::thread::sleep(t);
        }
        match failing {
            Some(true) => Err(io::Error::from_raw_os_error(libc::EIO)),
            _ => Ok(()),
        }
    }

    pub fn synced(path: &Path, len: u64) {
        with_plan(path, |plan| {
            plan.durable.insert(path.to_owned(), len);
        });
    }

    pub fn renamed(from: &Path, to: &Path) {
        with_plan(to, |plan| {
            if let Some(len) = plan.durable.remove(from) {
                plan.durable.insert(to.to_owned(), len);
            }
        });
    }

    /// The power goes out: from now on nothing under `dir` becomes durable.
    /// Call `power_loss` once the engine is dropped.
    pub fn crash(dir: &Path) {
        arm(dir, |p| p.crashed = true);
    }

    /// Cuts every file written under `dir` back to its durable length,
    /// keeping `torn(unsynced_len)` bytes of what was never fsynced (a write
    /// torn by the power loss), and disarms the plan.
    pub fn power_loss(dir: &Path, mut torn: impl FnMut(u64) -> u64) {
        let plan = {
            let mut plans = PLANS.lock().unwrap();
            let i = plans.iter().position(|(d, _)| d == dir).expect("crash() first");
            plans.remove(i).1
        };
        for (path, durable) in plan.durable {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.len() > durable {
                let keep = durable + torn(meta.len() - durable).min(meta.len() - durable);
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(keep).unwrap();
            }
        }
    }
}
