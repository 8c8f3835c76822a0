//! Kernel symbols from `/proc/kallsyms`, in a compact sorted table.
//!
//! Input: the kallsyms text. Output: for a kernel address, the function that contains it and
//! its module (`[kernel.kallsyms]` for the core kernel). Non-goals: kernel DWARF (vmlinux).
//!
//! Written here rather than through blazesym's kernel source because blazesym keeps a
//! String per symbol: ~120k symbols cost ~20 MiB there against ~4 MiB in one name blob with
//! (address, name offset, module) entries; the profiler's memory budget is 64 MiB in all.
use std::io::{BufRead, BufReader};

use crate::addr::Avma;

struct Entry {
    addr: u64,
    name: u32,
    name_len: u16,
    module: u16,
}

pub struct KernelSymbols {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<String>,
}

pub const CORE_MODULE: &str = "[kernel.kallsyms]";

impl KernelSymbols {
    pub fn load() -> std::io::Result<KernelSymbols> {
        let f = std::fs::File::open("/proc/kallsyms")?;
        Ok(Self::parse(BufReader::new(f)))
    }

    pub fn parse(reader: impl BufRead) -> KernelSymbols {
        let mut entries = Vec::new();
        let mut names = String::new();
        let mut modules = vec![CORE_MODULE.to_string()];
        for line in reader.lines().map_while(Result::ok) {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
            // Text symbols only: data symbols would shadow the end of the function before them.
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            // `__pfx_X` (kernels built with function padding, 6.2+) labels the padding before
            // X, not a function: a return address there follows a call that ended the function
            // before it, which is what it is named after.
            if name.starts_with("__pfx_") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            if addr == 0 || name.len() > u16::MAX as usize || names.len() > u32::MAX as usize - name.len() {
                continue;
            }
            let module = match it.next() {
                Some(m) => {
                    let m = m.trim_start_matches('[').trim_end_matches(']');
                    match modules.iter().position(|x| x == m) {
                        Some(i) => i,
                        None => {
                            modules.push(m.to_string());
                            modules.len() - 1
                        }
                    }
                }
                None => 0,
            };
            entries.push(Entry { addr, name: names.len() as u32, name_len: name.len() as u16, module: module.min(u16::MAX as usize) as u16 });
            names.push_str(name);
        }
        entries.sort_by_key(|e| e.addr);
        entries.shrink_to_fit();
        names.shrink_to_fit();
        KernelSymbols { entries, names, modules }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The function containing `addr` and its module, or `None` below the first symbol.
    /// Addresses past the last symbol of a region resolve to that symbol, as perf does.
    pub fn lookup(&self, addr: Avma) -> Option<(&str, &str)> {
        let i = self.entries.partition_point(|e| e.addr <= addr.0);
        let e = self.entries.get(i.checked_sub(1)?)?;
        let name = self.names.get(e.name as usize..e.name as usize + e.name_len as usize)?;
        Some((name, self.modules.get(e.module as usize).map(String::as_str).unwrap_or(CORE_MODULE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_functions_and_modules() {
        let text = "\
ffffffff81000000 T _stext
ffffffff81000100 t do_one
ffffffff81000180 D some_data
ffffffff810001f0 t __pfx_do_two
ffffffff81000200 T do_two
ffffffffc0201000 t ext4_read\t[ext4]
ffffffffc0202000 t xfs_write\t[xfs]
";
        let k = KernelSymbols::parse(text.as_bytes());
        assert_eq!(k.len(), 5);
        let at = |a| k.lookup(Avma(a));
        assert_eq!(at(0xffffffff81000150), Some(("do_one", CORE_MODULE)));
        // data symbols and the padding label before do_two do not cut do_one short
        assert_eq!(at(0xffffffff810001f8), Some(("do_one", CORE_MODULE)));
        assert_eq!(at(0xffffffff81000200), Some(("do_two", CORE_MODULE)));
        assert_eq!(at(0xffffffffc0201010), Some(("ext4_read", "ext4")));
        assert_eq!(at(0xffffffffc0202fff), Some(("xfs_write", "xfs")));
        assert_eq!(at(0xffffffff80000000), None);
    }

    #[test]
    fn reads_this_machines_kallsyms() {
        let k = KernelSymbols::load().expect("/proc/kallsyms is readable");
        // Unprivileged readers see zero addresses, which are skipped.
        if k.is_empty() {
            crate::test_support::skip_or_fail("/proc/kallsyms shows no addresses (needs root)");
            return;
        }
        assert!(k.len() > 10_000, "only {} text symbols", k.len());
    }
}
