//! Compiles `bpf/sampler.bpf.c` with clang into `$OUT_DIR/sampler.bpf.o`, which the crate
//! embeds with `include_bytes!`. The compiler is `$DDPROF_CLANG`, else the newest `clang-N`
//! on PATH, else `clang`.
use std::{env, path::PathBuf, process::Command};

fn find_clang() -> String {
    if let Ok(c) = env::var("DDPROF_CLANG") {
        return c;
    }
    for v in (14..=22).rev() {
        let name = format!("clang-{v}");
        if Command::new(&name).arg("--version").output().is_ok() {
            return name;
        }
    }
    "clang".to_string()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("../../bpf");
    let src = bpf_dir.join("sampler.bpf.c");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("sampler.bpf.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", bpf_dir.join("sampler.h").display());
    println!("cargo:rerun-if-env-changed=DDPROF_CLANG");

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("unsupported target arch for the BPF sampler: {other}"),
        Err(_) => "x86",
    };
    let multiarch = match arch {
        "x86" => "/usr/include/x86_64-linux-gnu",
        _ => "/usr/include/aarch64-linux-gnu",
    };
    let clang = find_clang();
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg(format!("-I{multiarch}"))
        .arg(format!("-I{}", bpf_dir.display()))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} to build the BPF sampler ({e}); install clang (apt-get install clang-19) or set DDPROF_CLANG"));
    assert!(status.success(), "{clang} failed to compile {}", src.display());
}
