//! Signal hygiene for a library that lives inside someone else's process.

/// Blocks SIGPIPE on the calling thread. A write to a socket whose peer
/// vanished then fails with EPIPE (an error we report) instead of raising
/// SIGPIPE, whose default action kills the host program (C and Go programs
/// do not ignore it the way Rust binaries do). Called at the start of every
/// thread the library creates.
pub fn block_sigpipe_on_this_thread() {
    // SAFETY: plain libc calls on a zero-initialised sigset owned here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sigpipe_is_blocked_after_the_call() {
        std::thread::spawn(|| {
            super::block_sigpipe_on_this_thread();
            // SAFETY: querying this thread's mask into an owned sigset.
            let blocked = unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                libc::sigismember(&cur, libc::SIGPIPE)
            };
            assert_eq!(blocked, 1);
        })
        .join()
        .unwrap();
    }
}
