//! A guard in front of the system allocator for one failure mode: a
//! malformed request whose array claims two billion elements makes the
//! decoder ask for hundreds of GiB up front (`Vec::with_capacity(n)`), and
//! the default allocator's failure aborts the process. Requests above
//! `huge_bytes_min` are served by an anonymous `MAP_NORESERVE` mapping: it
//! costs address space only, the decoder fails on the first missing element
//! and the mapping is returned untouched. Everything else goes to `System`.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct GuardedAlloc;

#[allow(non_upper_case_globals)]
const huge_bytes_min: usize = 1 << 30;

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= huge_bytes_min && layout.align() <= 4096 {
            return map_noreserve(layout.size());
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= huge_bytes_min && layout.align() <= 4096 {
            // SAFETY: this pointer came from map_noreserve with this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= huge_bytes_min && layout.align() <= 4096 {
            return map_noreserve(layout.size()); // anonymous mappings are zeroed
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = layout.size() >= huge_bytes_min && layout.align() <= 4096;
        let new_huge = new_size >= huge_bytes_min && layout.align() <= 4096;
        if !old_huge && !new_huge {
            // SAFETY: forwarded unchanged.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: layout is valid for the new size (same align, size checked by caller).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as GlobalAlloc::alloc.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both regions are valid for the smaller size and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

fn map_noreserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}
