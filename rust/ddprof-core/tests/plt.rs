//! PLT entry names against binutils' own synthetic `name@plt` symbols (`objdump -d`), on
//! real binaries of this machine: lazy `.plt`, `.plt.sec` (IBT) and `.plt.got` entries,
//! and a program built here with `-z now` and without.
use std::collections::BTreeMap;
use std::path::Path;

use ddprof_core::elf::plt;

mod common;
use common::{have, run, skip_or_fail, tmp_dir};

/// objdump's `<name@plt>` labels of the PLT sections: address -> name (entries without a
/// symbol, such as `*ABS*+0x...@plt` for IRELATIVE slots, left out as we leave them).
fn objdump_plt(path: &Path) -> BTreeMap<u64, String> {
    let text = run("objdump", &["-d", "-j", ".plt", "-j", ".plt.sec", "-j", ".plt.got", &path.to_string_lossy()]);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((addr, rest)) = line.split_once(" <") else { continue };
        let Some(name) = rest.strip_suffix(">:") else { continue };
        let Ok(addr) = u64::from_str_radix(addr.trim(), 16) else { continue };
        if name.ends_with("@plt") && !name.starts_with("*ABS*") {
            out.insert(addr, name.to_string());
        }
    }
    out
}

fn ours(path: &Path) -> BTreeMap<u64, String> {
    let bytes = std::fs::read(path).expect("readable");
    plt::entries(&bytes).into_iter().filter(|e| e.name != "[plt]").map(|e| (e.start.0, e.name)).collect()
}

fn check(path: &Path) -> usize {
    let (want, got) = (objdump_plt(path), ours(path));
    // objdump labels only the .plt.sec entry when the IBT .plt stub beside it has the same
    // name: every one of its labels must be ours, at the same address.
    for (addr, name) in &want {
        assert_eq!(got.get(addr), Some(name), "{}: {name} at {addr:#x}", path.display());
    }
    want.len()
}

#[test]
fn names_agree_with_objdump() {
    if !have("objdump") || !have("gcc") {
        return skip_or_fail("objdump and gcc are needed (binutils, gcc)");
    }
    let mut checked = 0;
    for path in ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3.11", "/usr/bin/bash", "/usr/bin/perf"] {
        if Path::new(path).exists() {
            checked += check(Path::new(path));
        }
    }
    let dir = tmp_dir("plt", "built");
    let src = dir.join("main.c");
    std::fs::write(&src, "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint main(int c, char **v) { puts(v[0]); return (int)strlen(getenv(\"HOME\") ? getenv(\"HOME\") : \"\") + abs(c); }\n")
        .expect("write");
    for (name, flags) in [("lazy", vec!["-Wl,-z,lazy"]), ("now", vec!["-Wl,-z,now"]), ("ibt", vec!["-fcf-protection=full", "-Wl,-z,ibtplt"])] {
        let out = dir.join(name);
        let mut args = vec!["-O2", "-o", out.to_str().expect("utf-8"), src.to_str().expect("utf-8")];
        args.extend(flags.iter().copied());
        run("gcc", &args);
        let n = check(&out);
        assert!(n >= 2, "{name}: objdump found {n} PLT entries");
        checked += n;
    }
    assert!(checked > 20, "only {checked} entries compared");
}
