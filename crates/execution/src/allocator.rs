//! The allocator's settings for the binaries that execute blocks (`tessera`, `tessera-exec`),
//! both of which run on mimalloc.

use libmimalloc_sys::{mi_option_set, mi_option_t};
use std::ffi::c_long;

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_e` (mimalloc.h of the v3 sources
/// that libmimalloc-sys 0.1.49 builds), for which libmimalloc-sys names no constant.
const PURGE_DELAY: mi_option_t = 15;

/// How long memory mimalloc frees stays with the process before it is returned to the OS.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// Keeps freed memory for [`PURGE_DELAY_MS`] instead of mimalloc's one second. A block's
/// execution frees megabytes at its end (versions, reads, results, the diff) and the next block
/// allocates as much again; memory returned to the OS in between comes back as page faults on
/// fresh pages the kernel must zero, 2 MiB at a time with transparent huge pages. In
/// `tessera-exec bench` that was 2,000 page faults instead of 180 and a tenth to a sixth of its
/// CPU time. A node that goes quiet still gives its memory back, ten seconds later.
///
/// Call first thing in `main`: an option is read when mimalloc first needs it.
pub fn keep_freed_memory() {
    #[allow(unsafe_code)]
    // SAFETY: stores an integer in mimalloc's option table; callable from any thread at any
    // time, and mimalloc reads the new value the next time it consults the option.
    unsafe {
        mi_option_set(PURGE_DELAY, PURGE_DELAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    /// The purge delay mimalloc runs with, in milliseconds.
    fn purge_delay_ms() -> c_long {
        #[allow(unsafe_code)]
        // SAFETY: reads an integer from mimalloc's option table, which is initialised on first
        // use; callable from any thread at any time.
        unsafe {
            mi_option_get(PURGE_DELAY)
        }
    }

    /// Index 15 is the purge delay: its default, 1000 ms, is no other option's default, and the
    /// setting then reads back.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
