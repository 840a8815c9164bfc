//! What the server keeps resident while it idles. Starting runs code and reads data
//! that no send needs again (configuration, the numbering plan's loader, TLS roots,
//! the workers' set-up): once the server is up, the heap's free pages and the
//! executable's pages are handed back, and only what serving touches comes back in.

/// Returns the heaps' free memory to the system. Loading the numbering plan leaves about
/// 1 MiB of freed, still resident heap behind, which an allocator keeps for later
/// allocations; a server that idles most of the time is better off without it. Both
/// heaps: jemalloc's (the binary's global allocator) and glibc's (what C code and, in
/// tests, Rust allocate).
pub fn release_free_heap() {
    #[cfg(not(target_env = "msvc"))]
    {
        // This thread's cache first (its blocks count as in use until flushed), then
        // every arena's free pages (4096 is MALLCTL_ARENAS_ALL).
        for command in [c"thread.tcache.flush", c"arena.4096.purge"] {
            // SAFETY: both commands take and return nothing (null pointers, length 0);
            // they only return jemalloc's unused memory, from any thread.
            unsafe {
                tikv_jemalloc_sys::mallctl(
                    command.as_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                );
            }
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free pages of glibc's own heaps to the
        // system; it touches no memory in use and is safe to call from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Drops the executable's pages from memory after start. The kernel maps a read-only
/// file page with its neighbours when one is touched, so starting leaves most of the
/// binary resident (about 8 MiB of ~12); the pages serving needs are read back from the
/// page cache, a minor fault each, the first time they run again.
///
/// Only read-only mappings of the executable that hold no page of the process's own
/// (`Anonymous: 0 kB`: no relocation or breakpoint written there) are dropped: their
/// pages are exactly the file's, so nothing is lost. Returns the bytes dropped.
pub fn shed_startup_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return 0;
        };
        let Some(exe) = exe.to_str() else {
            return 0;
        };
        read_only_file_mappings(&smaps, exe)
            .into_iter()
            .filter(|(start, end)| advise_dont_need(*start, end - start))
            .map(|(start, end)| end - start)
            .sum()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// The `(start, end)` of each mapping of `path` in `smaps` that is not writable and
/// holds no anonymous page.
fn read_only_file_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        }) {
            let perms = fields.next().unwrap_or_default();
            // offset, device, inode, then the path (which may hold spaces).
            let mapped = fields.nth(3).map(|_| {
                let mut rest = line.splitn(6, char::is_whitespace);
                rest.nth(5).unwrap_or_default().trim()
            });
            current = (mapped == Some(path) && !perms.contains('w') && perms.ends_with('p'))
                .then_some((start, end));
        } else if first == "Anonymous:" {
            if let Some(mapping) = current.take() {
                if fields.next() == Some("0") {
                    found.push(mapping);
                }
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
fn advise_dont_need(start: usize, length: usize) -> bool {
    const MADV_DONTNEED: std::ffi::c_int = 4;
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            length: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    // SAFETY: the range is a whole private, read-only mapping of the executable with no
    // page of the process's own (see `read_only_file_mappings`): discarding its pages
    // changes no byte anyone reads, they are read from the file again when next touched.
    unsafe { madvise(start as *mut std::ffi::c_void, length, MADV_DONTNEED) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5578000-5579000 r--p 00000000 fe:00 42 /opt/otp relay/bin
Size:                  4 kB
Anonymous:             0 kB
5579000-557a000 r-xp 00001000 fe:00 42 /opt/otp relay/bin
Anonymous:             0 kB
557a000-557b000 r--p 00002000 fe:00 42 /opt/otp relay/bin
Anonymous:             4 kB
557b000-557c000 rw-p 00003000 fe:00 42 /opt/otp relay/bin
Anonymous:             0 kB
7fc5000-7fc6000 r-xp 00000000 fe:00 7 /usr/lib/libc.so.6
Anonymous:             0 kB
7fc6000-7fc7000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_dropped() {
        assert_eq!(
            read_only_file_mappings(SMAPS, "/opt/otp relay/bin"),
            [(0x5578000, 0x5579000), (0x5579000, 0x557a000)],
            "not the relocated read-only part, the writable one, libc or the heap"
        );
        assert!(read_only_file_mappings(SMAPS, "/usr/bin/other").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_keeps_running_after_its_pages_are_dropped() {
        let dropped = shed_startup_pages();
        assert!(dropped > 0, "the test binary has read-only pages");
        // Code, constants and the relocated tables of the binary still work: they are
        // read back in (or were never dropped).
        let phone = otp_relay_providers::Phone::parse("+5511966191717", None).unwrap();
        assert_eq!(phone.masked(), "+55119*****17");
        assert_eq!(
            serde_json::json!({"dropped": dropped > 0}).to_string(),
            r#"{"dropped":true}"#
        );
    }
}
