//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(target_arch = "x86_64")]
pub mod eh_frame;

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

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A fresh temporary directory for `test`'s `name`.
pub fn tmp_dir(test: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ddprof-{test}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs a tool that must succeed; its standard output.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(cmd).args(args).output().expect("tool runs");
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The ELF file at `path`, as the profiler opens it.
pub fn open_elf(path: &std::path::Path) -> ddprof_core::elf::ElfFile {
    ddprof_core::elf::ElfFile::open_path(path, ddprof_core::elf::Origin::at_path(path, std::path::Path::new("/"))).expect("an ELF file")
}
