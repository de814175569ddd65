//! Ctrl-C (or SIGTERM) during the demo, the lab or a benchmark must not leave namespaces,
//! daemons or pinned XDP programs behind: a waiter thread takes the signal, removes the
//! lab of the given prefix (its namespaces, with every process inside, and its pins) and
//! exits.

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts later) and hands
/// them to a waiter that cleans up the lab `prefix`. Call before starting other threads.
pub fn cleanup_on_signal(prefix: &'static str) {
    // SAFETY: plain signal-mask manipulation on a zeroed sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialised signal set; sigwait writes `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        eprintln!("\ninterrupted: removing the lab ({prefix}-*) ...");
        let n = e2e::topo::down(prefix);
        eprintln!("removed {n} namespaces");
        std::process::exit(130);
    });
}
