//! Running a launch: fiber stacks per OS thread, blocks in parallel on rayon's pool (one block
//! per call into the module), serially under the sanitizer.

use super::module::{Entry, Module};
use crate::{Dim3, Error, LaunchPlan, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

/// Must equal `attune_emu_abi_version()` of kernels/emu/launch.h.
pub(crate) const ABI_VERSION: u32 = 2;

/// `AttuneEmuBlockLaunch` of kernels/emu/runtime.h.
#[repr(C)]
pub(crate) struct BlockLaunch {
    thunk: unsafe extern "C" fn(*mut *mut c_void),
    params: *mut *mut c_void,
    kernel: *const c_char,
    grid: [u32; 3],
    block: [u32; 3],
    block_idx: [u32; 3],
    dyn_smem_bytes: u32,
    dyn_smem: *mut c_void,
    stacks: *mut u8,
    stack_stride: usize,
    stack_size: usize,
    err: *mut c_char,
    err_cap: usize,
}

/// Bytes of stack per emulated thread: `ATTUNE_EMU_STACK` (bytes, or with a K/M suffix),
/// default 256 KiB (attention kernels keep large register arrays on the stack). The sanitizer
/// needs about four times more for its redzones.
pub fn stack_size(sanitize: bool) -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    let base = *SIZE.get_or_init(|| {
        std::env::var("ATTUNE_EMU_STACK").ok().and_then(|s| parse_size(&s)).unwrap_or(256 << 10).max(16 << 10)
    });
    let size = if sanitize { base * 4 } else { base };
    size.div_ceil(page_size()) * page_size()
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    digits.trim().parse::<usize>().ok().map(|v| v * mult)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// One OS thread's fiber stacks, mapped once and reused by every block this thread runs (only
/// touched pages cost memory): `count` slots of `stride` bytes, a power of two at least
/// `size` + one page, each aligned to `stride` (the runtime finds a fiber's record from its
/// stack pointer, kernels/emu/runtime.h) and starting with a guard page.
struct Stacks {
    map: *mut u8,
    len: usize,
    slots: *mut u8,
    count: usize,
    size: usize,
    stride: usize,
}

impl Stacks {
    fn map(count: usize, size: usize) -> std::result::Result<Stacks, String> {
        let page = page_size();
        let stride = (size + page).next_power_of_two();
        // One extra slot's worth so the first slot can be aligned to the stride.
        let len = (count + 1) * stride;
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes of fiber stacks failed: {}", std::io::Error::last_os_error()));
        }
        let map = base as *mut u8;
        let offset = (map as usize).next_multiple_of(stride) - map as usize;
        // SAFETY: `offset` < stride, so all `count` slots lie inside the mapping.
        let slots = unsafe { map.add(offset) };
        for i in 0..count {
            // SAFETY: the page lies inside the mapping just made.
            unsafe { libc::mprotect(slots.add(i * stride) as *mut c_void, page, libc::PROT_NONE) };
        }
        Ok(Stacks { map, len, slots, count, size, stride })
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no fiber runs on it any more.
        unsafe { libc::munmap(self.map as *mut c_void, self.len) };
    }
}

/// This OS thread's scratch: stacks and the dynamic shared memory buffer.
#[derive(Default)]
struct Scratch {
    stacks: Option<Stacks>,
    smem: Vec<u128>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Pointers shared read-only by the blocks of one launch.
struct Shared {
    params: Vec<*mut c_void>,
}
// SAFETY: the parameter pointers point at argument bytes that live until every block is done;
// blocks only read them.
unsafe impl Sync for Shared {}

/// Checks the launch geometry like the driver does (docs/kernels.md adds the multiple of 32).
pub(crate) fn validate(plan: &LaunchPlan) -> Result<()> {
    let bad = |why: String| Error::BadLaunch {
        backend: "emu",
        entry: plan.entry.clone(),
        grid: plan.grid.to_array(),
        block: plan.block.to_array(),
        shared: plan.shared_mem_bytes,
        why,
    };
    let threads = plan.block.count();
    if threads == 0 || threads > 1024 {
        return Err(bad(format!("a block has {threads} threads; it must have 1 to 1024")));
    }
    if !threads.is_multiple_of(32) {
        return Err(bad(format!("a block has {threads} threads, not a multiple of 32 (whole warps, docs/kernels.md)")));
    }
    if plan.block.z > 64 {
        return Err(bad(format!("block z extent {} exceeds 64", plan.block.z)));
    }
    if plan.grid.count() == 0 {
        return Err(bad("the grid has a zero extent".into()));
    }
    if plan.grid.y > 65535 || plan.grid.z > 65535 || plan.grid.x > i32::MAX as u32 {
        return Err(bad("grid extents are limited to (2^31 - 1, 65535, 65535)".into()));
    }
    const MAX_SHARED: u32 = 227 << 10;
    if plan.shared_mem_bytes > MAX_SHARED {
        return Err(bad(format!(
            "{} B of dynamic shared memory exceeds the 227 KiB a block may have",
            plan.shared_mem_bytes
        )));
    }
    Ok(())
}

/// Runs `plan` with the module's `entry`. Arguments were checked by the caller.
pub(crate) fn run(module: &Module, entry: &Entry, plan: &LaunchPlan, sanitize: bool) -> Result<()> {
    let mut arg_bytes: Vec<Vec<u8>> = plan.args.iter().map(|a| a.bytes()).collect();
    let shared = Shared { params: arg_bytes.iter_mut().map(|b| b.as_mut_ptr() as *mut c_void).collect() };
    let nblocks = plan.grid.count() as usize;
    let one = |b: usize| run_block(module, entry, plan, &shared, b, sanitize).map_err(|why| (b, why));
    let failure = if sanitize || nblocks == 1 {
        (0..nblocks).map(one).find_map(|r| r.err())
    } else {
        (0..nblocks).into_par_iter().filter_map(|b| one(b).err()).min_by_key(|(b, _)| *b)
    };
    drop(arg_bytes);
    match failure {
        None => Ok(()),
        Some((b, why)) => Err(Error::EmuFault {
            entry: plan.entry.clone(),
            file: plan.module.file.clone(),
            defines: plan.module.defines_string(),
            block: block_index(plan.grid, b),
            why,
        }),
    }
}

fn block_index(grid: Dim3, b: usize) -> [u32; 3] {
    let (gx, gy) = (grid.x as usize, grid.y as usize);
    [(b % gx) as u32, ((b / gx) % gy) as u32, (b / (gx * gy)) as u32]
}

fn run_block(
    module: &Module,
    entry: &Entry,
    plan: &LaunchPlan,
    shared: &Shared,
    b: usize,
    sanitize: bool,
) -> std::result::Result<(), String> {
    let threads = plan.block.count() as usize;
    let size = stack_size(sanitize);
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let fits = scratch.stacks.as_ref().is_some_and(|s| s.count >= threads && s.size == size);
        if !fits {
            scratch.stacks = None;
            // Room for at least 256 threads, so small blocks never remap.
            scratch.stacks = Some(Stacks::map(threads.next_power_of_two().max(256), size)?);
        }
        let smem_bytes = plan.shared_mem_bytes as usize;
        let dyn_smem = if sanitize {
            // The runtime mallocs exactly the requested size so ASan guards its end.
            std::ptr::null_mut()
        } else {
            if scratch.smem.len() * 16 < smem_bytes.max(16) {
                scratch.smem = vec![0; smem_bytes.max(16).div_ceil(16)];
            }
            // Never-written shared memory reads as NaN (0xFF bytes), as uninitialised device
            // memory does in this emulator, so a read-before-write shows in the results.
            let buf = bytemuck::cast_slice_mut::<u128, u8>(&mut scratch.smem);
            buf[..smem_bytes].fill(0xff);
            buf.as_mut_ptr() as *mut c_void
        };
        let stacks = scratch.stacks.as_ref().expect("mapped above");
        let mut err = [0 as c_char; 2048];
        let launch = BlockLaunch {
            thunk: entry.thunk,
            params: shared.params.as_ptr() as *mut *mut c_void,
            kernel: entry.name.as_ptr(),
            grid: plan.grid.to_array(),
            block: plan.block.to_array(),
            block_idx: block_index(plan.grid, b),
            dyn_smem_bytes: plan.shared_mem_bytes,
            dyn_smem,
            // The usable part of slot i starts after its guard page.
            // SAFETY: inside the first slot.
            stacks: unsafe { stacks.slots.add(page_size()) },
            stack_stride: stacks.stride,
            stack_size: stacks.stride - page_size(),
            err: err.as_mut_ptr(),
            err_cap: err.len(),
        };
        // SAFETY: the module was built from our runtime headers with a matching ABI version;
        // the launch's pointers outlive the call. The kernel itself is trusted code.
        let rc = unsafe { (module.run_block)(&launch) };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: the runtime wrote a NUL-terminated message into `err`.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
            Err(msg.to_string_lossy().into_owned())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn block_indices_run_x_fastest() {
        let g = Dim3::new(3, 2, 2);
        assert_eq!(block_index(g, 0), [0, 0, 0]);
        assert_eq!(block_index(g, 4), [1, 1, 0]);
        assert_eq!(block_index(g, 11), [2, 1, 1]);
    }
}
