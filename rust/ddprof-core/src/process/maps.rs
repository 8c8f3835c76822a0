//! `/proc/PID/maps`: the mappings of a process.
//!
//! Input: the text of a maps file. Output: one [`MapsLine`] per mapping (address range, file
//! offset, device and inode, path as the process names it, whether it is executable).
//! Non-goals: opening the files (`crate::elf`), deciding what each mapping is (`process`).
use crate::addr::{Avma, FileOffset, MappedRange};

/// One line of /proc/PID/maps.
#[derive(Debug, PartialEq)]
pub struct MapsLine {
    pub range: MappedRange,
    pub dev: u64,
    pub inode: u64,
    pub path: String,
    pub exec: bool,
}

/// Parses the lines of a /proc/PID/maps text, in its order (by address).
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let exec = perms.as_bytes().get(2) == Some(&b'x');
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16), u64::from_str_radix(off, 16))
        else {
            continue;
        };
        let dev = dev
            .split_once(':')
            .and_then(|(ma, mi)| Some((u64::from_str_radix(ma, 16).ok()? << 32) | u64::from_str_radix(mi, 16).ok()?))
            .unwrap_or(0);
        let inode = inode.parse().unwrap_or(0);
        let range = MappedRange { start: Avma(start), end: Avma(end), offset: FileOffset(offset) };
        out.push(MapsLine { range, dev, inode, path, exec });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_line_and_says_which_execute() {
        let text = "\
55d0c0a00000-55d0c0a2c000 r--p 00000000 fd:01 1311 /usr/bin/python3.11
55d0c0a2c000-55d0c0d1e000 r-xp 0002c000 fd:01 1311 /usr/bin/python3.11
7ffd1c5f2000-7ffd1c5f4000 r-xp 00000000 00:00 0                          [vdso]
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f1000000000-7f1000001000 r-xp 00001000 08:02 77 /tmp/a b (deleted)
";
        let all = parse_maps(text);
        assert_eq!(all.len(), 5);
        assert!(!all[0].exec && all[0].path == "/usr/bin/python3.11");
        let v: Vec<MapsLine> = all.into_iter().filter(|l| l.exec).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].range.start, Avma(0x55d0c0a2c000));
        assert_eq!(v[0].range.end, Avma(0x55d0c0d1e000));
        assert_eq!(v[0].range.offset, FileOffset(0x2c000));
        assert_eq!(v[0].dev, (0xfd << 32) | 1);
        assert_eq!(v[0].inode, 1311);
        assert_eq!(v[0].path, "/usr/bin/python3.11");
        assert_eq!(v[1].path, "[vdso]");
        assert_eq!(v[2].path, "");
        assert_eq!(v[3].path, "/tmp/a b (deleted)");
    }
}
