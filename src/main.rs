use std::process::ExitCode;

use clap::Parser;
use otp_relay::cli::{self, Cli};

// jemalloc rather than glibc's malloc (see Cargo.toml for why), configured below.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (before `main`): one arena, as the threads'
/// own caches serve nearly every allocation and each further arena holds pages of its
/// own, and pages freed returned after a second, not ten, so that a burst's memory does
/// not linger (with the defaults, four arenas per CPU, peak RSS at c64 was ~4 MiB more).
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: Options =
    Options(c"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads once: immutable, so sharing it is sound.
#[cfg(not(target_env = "msvc"))]
#[repr(transparent)]
struct Options(*const std::ffi::c_char);
// SAFETY: the pointer is to a static, never-written C string literal.
#[cfg(not(target_env = "msvc"))]
unsafe impl Sync for Options {}

// One thread: the HTTP server runs its own worker threads (`WORKERS`); this one only
// starts it, waits for signals, and runs the short CLI commands.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
