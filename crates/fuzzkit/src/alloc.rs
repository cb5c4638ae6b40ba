//! A global allocator that records the largest single allocation, so a fuzz test can tell a
//! loader that allocates what a corrupt file declares from one that checks the size first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest request. Install it in a fuzz test binary:
/// `#[global_allocator] static ALLOC: attune_fuzzkit::PeakAlloc = attune_fuzzkit::PeakAlloc;`
pub struct PeakAlloc;

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated besides.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts a new measurement.
pub(crate) fn reset_peak() {
    PEAK.store(0, Ordering::Relaxed);
}

/// The largest single allocation since [`reset_peak`] (0 when `PeakAlloc` is not installed).
pub(crate) fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Whether the binary installed [`PeakAlloc`] (a probe allocation must move the peak).
pub(crate) fn installed() -> bool {
    reset_peak();
    let probe = std::hint::black_box(vec![0u8; 12_345]);
    drop(probe);
    peak() >= 12_345
}
