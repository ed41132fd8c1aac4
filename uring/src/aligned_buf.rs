//! Heap buffers aligned to the device block size, as O_DIRECT requires, and a
//! process-wide cache of idle ones; and regions aligned to huge pages
//! ([`HugeRegion`]) for memory read at random. Every I/O needs such a buffer; taking a
//! recycled one instead of a fresh allocation keeps the allocator (aligned
//! allocations are slow, and large ones are fresh, page-faulting mmaps) and the
//! page zeroing off the data path.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// The alignment, and the unit of size, of every [`AlignedBuf`]: the device
/// block that O_DIRECT transfers need.
pub const BLOCK_SIZE: usize = 4096;

/// Cached size classes: class `k` holds buffers of `2^k` blocks (4 KiB .. 8 MiB:
/// up to a default segment, which the collector reads whole).
const CLASSES: usize = 12;
/// Classes from this one on (4 MiB and up) keep at most
/// [`LARGE_CLASS_IDLE_COUNT`] idle buffers: few users take them, and each is big.
const LARGE_CLASS_FIRST: usize = 10;
const LARGE_CLASS_IDLE_COUNT: usize = 2;
/// Idle bytes one size class may keep...
const CLASS_IDLE_BYTES_MAX: usize = 4 << 20;
/// ...but every class may keep at least this many buffers.
const CLASS_IDLE_COUNT_MIN: usize = 4;

/// Classes from this one (16 KiB) to [`SLAB_CLASS_LAST`] (2 MiB) are carved
/// from huge pages: a buffer inside one huge page is physically contiguous,
/// so a device transfer from it is one segment, not one per 4 KiB page (a
/// virtio disk without indirect descriptors holds only 254 segments in
/// flight, so page-sized segments cap it at about 1 MiB in flight).
const SLAB_CLASS_FIRST: usize = 2;
const SLAB_CLASS_LAST: usize = 9;
/// Most bytes of huge pages the slabs take in all; past it, buffers of
/// those classes come from the allocator like the others.
const SLAB_BYTES_MAX: usize = 512 << 20;
/// Bytes of huge pages the slabs have taken (never given back: slab
/// buffers only ever return to the cache).
static SLAB_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Where a buffer's memory comes from, which says how it is given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Memory {
    /// The global allocator (classes under 16 KiB, and sizes past the classes).
    Heap,
    /// A piece of a huge page carved for its class: back to the cache, never freed.
    Slab,
    /// A mapping of whole huge pages of its own (the 4 and 8 MiB classes),
    /// so each 2 MiB of it is physically contiguous: unmapped when freed.
    Huge,
}

/// An idle allocation of its class's capacity, owned by the cache alone.
struct Idle {
    ptr: NonNull<u8>,
    memory: Memory,
}

// SAFETY: an idle allocation is referenced by nothing but the cache entry that
// holds it, so moving the entry between threads moves sole ownership.
unsafe impl Send for Idle {}

/// Idle buffers by size class. Buffers are initialised (they were zeroed when
/// first allocated and only ever written since), so handing one out again never
/// exposes uninitialised memory.
static IDLE: [Mutex<Vec<Idle>>; CLASSES] = [const { Mutex::new(Vec::new()) }; CLASSES];

/// The size class of a capacity of `blocks` blocks, if it is cached.
fn class_of(blocks: usize) -> Option<usize> {
    let class = blocks.next_power_of_two().trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

fn class_idle_max(class: usize) -> usize {
    if class >= LARGE_CLASS_FIRST {
        return LARGE_CLASS_IDLE_COUNT;
    }
    (CLASS_IDLE_BYTES_MAX / (BLOCK_SIZE << class)).max(CLASS_IDLE_COUNT_MIN)
}

/// An owned, zero-initialised buffer whose start and capacity are multiples of
/// [`BLOCK_SIZE`]. It is handed to the kernel for the duration of one I/O and
/// returned with the completion, so no borrowed slice is ever lent to the kernel.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    memory: Memory,
    /// Where the usable region starts in the allocation: a multiple of
    /// [`BLOCK_SIZE`], with `start + len <= capacity`.
    start: usize,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); moving it
// between threads moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only permit reads of initialised bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` zeroed bytes; capacity is at least `len` rounded up to a
    /// whole block (at least one block).
    pub fn zeroed(len: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::for_overwrite(len);
        buf.as_mut_slice().fill(0);
        buf
    }

    /// A buffer of `len` bytes whose content is unspecified (left over from an
    /// earlier use, never uninitialised memory): for a read target or a write
    /// source that will be overwritten completely. Cheaper than
    /// [`AlignedBuf::zeroed`]: a recycled buffer is neither allocated nor cleared.
    pub fn for_overwrite(len: usize) -> AlignedBuf {
        let blocks = len.div_ceil(BLOCK_SIZE).max(1);
        let Some(class) = class_of(blocks) else {
            return AlignedBuf::allocate(len, blocks * BLOCK_SIZE);
        };
        let capacity = BLOCK_SIZE << class;
        let idle = IDLE[class]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            // INVARIANT: the cache holds only allocations of its class's capacity.
            Some(Idle { ptr, memory }) => AlignedBuf::whole(ptr, memory, len, capacity),
            None => AlignedBuf::from_slab(class, len)
                .or_else(|| AlignedBuf::huge(class, len))
                .unwrap_or_else(|| AlignedBuf::allocate(len, capacity)),
        }
    }

    /// A buffer of class `class` carved from a fresh huge page, whose other
    /// buffers go to the cache; `None` for classes not carved so, or once
    /// the slabs have taken [`SLAB_BYTES_MAX`] or the kernel refuses memory.
    fn from_slab(class: usize, len: usize) -> Option<AlignedBuf> {
        if !(SLAB_CLASS_FIRST..=SLAB_CLASS_LAST).contains(&class) {
            return None;
        }
        let taken = SLAB_BYTES.fetch_add(HUGE_PAGE_BYTES, Ordering::Relaxed);
        if taken + HUGE_PAGE_BYTES > SLAB_BYTES_MAX {
            SLAB_BYTES.fetch_sub(HUGE_PAGE_BYTES, Ordering::Relaxed);
            return None;
        }
        let Ok(page) = HugeRegion::new(HUGE_PAGE_BYTES) else {
            SLAB_BYTES.fetch_sub(HUGE_PAGE_BYTES, Ordering::Relaxed);
            return None;
        };
        let base = page.leak();
        let capacity = BLOCK_SIZE << class;
        // INVARIANT: capacity divides a huge page (class <= SLAB_CLASS_LAST),
        // so every piece lies inside it; the kernel zeroed all of it.
        let pieces = (0..HUGE_PAGE_BYTES / capacity)
            .map(|i| NonNull::new(base.as_ptr().wrapping_add(i * capacity)));
        let mut idle = IDLE[class].lock().unwrap_or_else(PoisonError::into_inner);
        idle.extend(pieces.skip(1).flatten().map(|ptr| Idle {
            ptr,
            memory: Memory::Slab,
        }));
        Some(AlignedBuf::whole(base, Memory::Slab, len, capacity))
    }

    /// A buffer of class `class` (past the slab classes) in huge pages of
    /// its own, or `None` for other classes or when the kernel refuses.
    fn huge(class: usize, len: usize) -> Option<AlignedBuf> {
        if class <= SLAB_CLASS_LAST {
            return None;
        }
        let capacity = BLOCK_SIZE << class;
        let region = HugeRegion::new(capacity).ok()?;
        Some(AlignedBuf::whole(
            region.leak(),
            Memory::Huge,
            len,
            capacity,
        ))
    }

    /// A buffer over all `capacity` bytes at `ptr`, `len` of them usable.
    fn whole(ptr: NonNull<u8>, memory: Memory, len: usize, capacity: usize) -> AlignedBuf {
        AlignedBuf {
            ptr,
            memory,
            start: 0,
            len,
            capacity,
        }
    }

    fn allocate(len: usize, capacity: usize) -> AlignedBuf {
        let layout = Self::layout(capacity);
        // SAFETY: layout has a non-zero size and a power-of-two alignment.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf::whole(ptr, Memory::Heap, len, capacity)
    }

    fn layout(capacity: usize) -> Layout {
        match Layout::from_size_align(capacity, BLOCK_SIZE) {
            Ok(layout) => layout,
            Err(_) => panic!("aligned buffer of {capacity} bytes exceeds the address space"),
        }
    }

    /// Copies `data` into a new buffer of the same length.
    pub fn copy_from(data: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::for_overwrite(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        buf
    }

    /// Length in bytes of the usable region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes the usable length; it must stay within the allocated capacity.
    /// Bytes a longer length exposes read as zeros.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            self.start + len <= self.capacity,
            "len {len} from {} beyond capacity {}",
            self.start,
            self.capacity
        );
        let old = self.len;
        self.len = len;
        if len > old {
            self.as_mut_slice()[old..].fill(0);
        }
    }

    /// Makes the usable region the `len` bytes from `start` of the
    /// allocation (a multiple of [`BLOCK_SIZE`]), keeping every byte, so one
    /// I/O can fill one part of a larger buffer; `view(0, n)` widens it again.
    pub fn view(&mut self, start: usize, len: usize) {
        assert!(
            start.is_multiple_of(BLOCK_SIZE)
                && start
                    .checked_add(len)
                    .is_some_and(|end| end <= self.capacity),
            "view of {len} bytes from {start} outside a capacity of {}",
            self.capacity
        );
        self.start = start;
        self.len = len;
    }

    /// The start of the usable region (computed without `unsafe`: `start`
    /// never exceeds the capacity, so it stays within the allocation).
    fn region(&self) -> *mut u8 {
        self.ptr.as_ptr().wrapping_add(self.start)
    }

    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation holds `capacity` initialised bytes (zeroed when
        // allocated, only written since) for the lifetime of &self, and
        // `view` and `set_len` keep `start + len <= capacity`, so the region
        // lies inside it.
        unsafe { std::slice::from_raw_parts(self.region(), self.len) }
    }

    /// The bytes as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the region lies inside the initialised allocation as in
        // `as_slice`, and &mut self guarantees no other reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.region(), self.len) }
    }

    /// Raw pointer to the usable region, for submitting to the kernel; valid
    /// while the buffer lives.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.region()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let blocks = self.capacity / BLOCK_SIZE;
        if let Some(class) = class_of(blocks).filter(|&class| BLOCK_SIZE << class == self.capacity)
        {
            let mut idle = IDLE[class].lock().unwrap_or_else(PoisonError::into_inner);
            if self.memory == Memory::Slab || idle.len() < class_idle_max(class) {
                idle.push(Idle {
                    ptr: self.ptr,
                    memory: self.memory,
                });
                return;
            }
        }
        match self.memory {
            // A slab piece's capacity is always its class's: it went back above.
            Memory::Slab => {}
            // The mapping `huge` made and leaked, whole: its sole owner
            // hands it back to HugeRegion to unmap.
            Memory::Huge => drop(HugeRegion {
                ptr: self.ptr,
                len: self.capacity,
            }),
            // SAFETY: ptr was allocated with exactly this layout in
            // `allocate`, and this buffer is its only owner.
            Memory::Heap => unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) },
        }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Bytes of a transparent huge page (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Zero-filled anonymous memory that starts on a huge-page boundary and is
/// advised to be backed by transparent huge pages (`MADV_HUGEPAGE`), so a large
/// region read at random (a pool in memory) costs one TLB entry per 2 MiB
/// rather than per 4 KiB. Where the kernel gives no huge pages it is ordinary
/// memory; pages are taken on first touch either way.
pub struct HugeRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region owns its mapping exclusively (like Vec<u8>); moving it
// between threads moves that ownership.
unsafe impl Send for HugeRegion {}
// SAFETY: shared references only permit reads of initialised (zeroed or
// written) bytes.
unsafe impl Sync for HugeRegion {}

impl HugeRegion {
    /// A region of `len` bytes, rounded up to whole huge pages.
    pub fn new(len: usize) -> std::io::Result<HugeRegion> {
        let len = len
            .max(1)
            .checked_next_multiple_of(HUGE_PAGE_BYTES)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        let mapped = len + HUGE_PAGE_BYTES;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases no existing memory; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = base as usize;
        let start = base.next_multiple_of(HUGE_PAGE_BYTES);
        let head = start - base;
        let tail = mapped - head - len;
        // SAFETY: both ranges lie inside the mapping just made, outside
        // [start, start + len), and nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
            // Only advice: without huge pages the region still works.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        let ptr = NonNull::new(start as *mut u8)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(HugeRegion { ptr, len })
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes (zeroed by the kernel or written
        // through as_mut_slice) while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Its bytes, for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for as_slice; &mut self makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl HugeRegion {
    /// Gives up ownership of the region, which then lives as long as the
    /// process: for memory carved into buffers that are recycled, never freed.
    fn leak(self) -> NonNull<u8> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }
}

impl Drop for HugeRegion {
    fn drop(&mut self) {
        // SAFETY: [ptr, ptr + len) is the part of the mapping `new` kept, and
        // this region is its only owner.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_block_aligned_and_zeroed() {
        for len in [0, 1, 512, 4096, 4097, 65536] {
            let mut buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_mut_ptr() as usize % BLOCK_SIZE, 0);
            assert_eq!(buf.len(), len);
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_view_is_one_aligned_part_of_the_buffer_and_keeps_the_rest() {
        let mut buf = AlignedBuf::for_overwrite(4 * BLOCK_SIZE);
        for (i, byte) in buf.as_mut_slice().iter_mut().enumerate() {
            *byte = (i / BLOCK_SIZE) as u8;
        }
        buf.view(2 * BLOCK_SIZE, BLOCK_SIZE);
        assert_eq!(buf.len(), BLOCK_SIZE);
        assert_eq!(buf.as_mut_ptr() as usize % BLOCK_SIZE, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 2));
        buf.as_mut_slice().fill(9);
        buf.view(0, 4 * BLOCK_SIZE);
        let blocks: Vec<u8> = buf.as_slice().chunks(BLOCK_SIZE).map(|b| b[0]).collect();
        assert_eq!(blocks, [0, 1, 9, 3]);
    }

    #[test]
    #[should_panic(expected = "outside a capacity")]
    fn a_view_past_the_capacity_is_refused() {
        let mut buf = AlignedBuf::for_overwrite(2 * BLOCK_SIZE);
        buf.view(BLOCK_SIZE, 2 * BLOCK_SIZE);
    }

    #[test]
    fn recycled_buffers_are_zeroed_again_and_keep_their_alignment() {
        for len in [4096, 8192, 5000, 1 << 20, 3 << 20] {
            let mut dirty = AlignedBuf::for_overwrite(len);
            dirty.as_mut_slice().fill(0xFF);
            drop(dirty);
            let mut again = AlignedBuf::zeroed(len);
            assert_eq!(again.as_mut_ptr() as usize % BLOCK_SIZE, 0);
            assert_eq!(again.len(), len);
            assert!(again.as_slice().iter().all(|&b| b == 0), "{len} bytes");
            let reused = AlignedBuf::for_overwrite(len);
            assert_eq!(reused.len(), len);
        }
    }

    #[test]
    fn slab_buffers_of_a_class_lie_apart_inside_huge_pages_and_are_recycled() {
        let capacity = 128 << 10;
        let mut taken: Vec<AlignedBuf> = (0..40).map(|_| AlignedBuf::zeroed(capacity)).collect();
        let mut starts: Vec<usize> = taken.iter_mut().map(|b| b.as_mut_ptr() as usize).collect();
        assert!(
            taken.iter().all(|b| b.memory == Memory::Slab),
            "slab classes carve huge pages"
        );
        for buf in &mut taken {
            assert!(buf.as_slice().iter().all(|&b| b == 0));
            buf.as_mut_slice().fill(0xA5);
        }
        starts.sort_unstable();
        assert!(
            starts.windows(2).all(|w| w[1] - w[0] >= capacity),
            "no two overlap"
        );
        // A buffer never straddles a huge page: it is one physical run.
        assert!(starts
            .iter()
            .all(|s| s % HUGE_PAGE_BYTES + capacity <= HUGE_PAGE_BYTES));
        drop(taken);
        let again = AlignedBuf::for_overwrite(capacity);
        assert_eq!(again.memory, Memory::Slab, "comes back from the cache");
    }

    #[test]
    fn the_largest_classes_live_in_huge_pages_of_their_own() {
        let mut bufs: Vec<AlignedBuf> = (0..LARGE_CLASS_IDLE_COUNT + 2)
            .map(|_| AlignedBuf::zeroed(8 << 20))
            .collect();
        for buf in &mut bufs {
            assert_eq!(buf.memory, Memory::Huge);
            assert_eq!(buf.as_mut_ptr() as usize % HUGE_PAGE_BYTES, 0);
            buf.as_mut_slice().fill(3);
        }
        // More than the cache keeps: the rest are unmapped.
        drop(bufs);
        assert!(AlignedBuf::zeroed(8 << 20)
            .as_slice()
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn growing_the_length_exposes_zeros() {
        let mut buf = AlignedBuf::for_overwrite(4096);
        buf.as_mut_slice().fill(7);
        buf.set_len(100);
        buf.set_len(4096);
        assert!(buf.as_slice()[..100].iter().all(|&b| b == 7));
        assert!(buf.as_slice()[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn size_classes_are_powers_of_two_blocks_up_to_eight_mebibytes() {
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(2), Some(1));
        assert_eq!(class_of(3), Some(2));
        assert_eq!(class_of(272), Some(9));
        assert_eq!(class_of(512), Some(9));
        assert_eq!(class_of(513), Some(10));
        assert_eq!(class_of(2048), Some(11));
        assert_eq!(class_of(2049), None);
        assert_eq!(class_idle_max(0), 1024);
        assert_eq!(class_idle_max(9), CLASS_IDLE_COUNT_MIN);
        assert_eq!(class_idle_max(11), LARGE_CLASS_IDLE_COUNT);
    }

    #[test]
    fn copy_from_round_trips() {
        let data: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
        assert_eq!(AlignedBuf::copy_from(&data).as_slice(), &data[..]);
    }

    #[test]
    fn huge_regions_start_on_a_huge_page_are_zeroed_and_keep_what_is_written() {
        let mut region = HugeRegion::new(HUGE_PAGE_BYTES + 1).expect("mapping");
        assert_eq!(region.as_slice().len(), 2 * HUGE_PAGE_BYTES);
        assert_eq!(region.as_slice().as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        assert!(region.as_slice().iter().all(|&b| b == 0));
        region.as_mut_slice()[HUGE_PAGE_BYTES..][..4096].fill(7);
        assert!(region.as_slice()[HUGE_PAGE_BYTES..][..4096]
            .iter()
            .all(|&b| b == 7));
        assert_eq!(region.as_slice()[HUGE_PAGE_BYTES - 1], 0);
    }
}
