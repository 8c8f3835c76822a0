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

/// A Go toolchain and its minor version (`go1.MINOR`).
pub struct Toolchain {
    pub go: std::path::PathBuf,
    pub minor: u32,
}

/// The toolchain `go` runs as (a path or a name on PATH), None when it does not run.
pub fn toolchain(go: &std::path::Path) -> Option<Toolchain> {
    let out = std::process::Command::new(go).arg("version").env("GOTOOLCHAIN", "local").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout).into_owned();
    // "go version go1.26.8 linux/amd64"
    let minor = v.split_whitespace().nth(2)?.strip_prefix("go1.")?.split('.').next()?.parse().ok()?;
    Some(Toolchain { go: go.to_path_buf(), minor })
}

/// Other Go toolchains (1.18 and later) installed side by side (Debian's golang-1.NN-go
/// packages, /usr/lib/go-1.NN/bin/go), oldest first, leaving out `main`'s version.
pub fn older_toolchains(main: Option<&Toolchain>) -> Vec<Toolchain> {
    let Ok(dirs) = std::fs::read_dir("/usr/lib") else { return Vec::new() };
    let mut v: Vec<Toolchain> = dirs
        .filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().starts_with("go-1."))
        .filter_map(|d| toolchain(&d.path().join("bin/go")))
        .filter(|t| t.minor >= 18 && main.is_none_or(|m| m.minor != t.minor))
        .collect();
    v.sort_by_key(|t| t.minor);
    v
}
