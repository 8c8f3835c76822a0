//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Skips a test (the caller returns) with a note, or fails it when DDPROF_REQUIRE_BPF=1
/// (CI, where every tool is installed), so that a missing tool never passes silently.
pub fn skip_or_fail(reason: &str) {
    assert!(
        std::env::var("DDPROF_REQUIRE_BPF").as_deref() != Ok("1"),
        "{reason} (and DDPROF_REQUIRE_BPF=1 forbids skipping)"
    );
    eprintln!("skipped: {reason}");
}
