//! CPython's line tables: from an instruction offset in a code object to the source line
//! being executed, in each version's format.
//!
//! Input: the table's bytes (`co_lnotab` 3.8-3.9, `co_linetable` 3.10 and 3.11+), the code
//! object's first line, and which format. Output: [`LineTable`], the ranges of code units
//! (2-byte instructions) and their lines, parsed once per code object; a lookup is a binary
//! search. Source of the formats: CPython's `Objects/lnotab_notes.txt` (3.8-3.10) and
//! `Objects/locations.md` (3.11+); the decoders follow `PyCode_Addr2Line` of each version.
//! Non-goals: columns, end lines.

/// Which table a code object carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 3.8-3.9 `co_lnotab`: (byte increment, signed line increment) pairs.
    Lnotab,
    /// 3.10 `co_linetable` (PEP 626): (byte delta, signed line delta) pairs, -128 = no line.
    Linetable310,
    /// 3.11+ location table: varint-coded entries of 1 to 8 code units each.
    Locations,
}

/// Code-unit ranges of a code object with their line (`None`: no line, an artificial
/// instruction), sorted by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineTable {
    first_line: u32,
    /// (first code unit, line) of each range; a range ends where the next begins.
    ranges: Vec<(u32, Option<u32>)>,
    /// One past the last code unit the table covers.
    end: u32,
}

/// Tables larger than this are cut (a real one is a few KiB at most).
const MAX_TABLE_BYTES: usize = 1 << 20;

fn clamp_line(line: i64) -> Option<u32> {
    u32::try_from(line).ok().filter(|&l| l > 0)
}

impl LineTable {
    pub fn parse(format: Format, table: &[u8], first_line: u32) -> LineTable {
        let table = &table[..table.len().min(MAX_TABLE_BYTES)];
        let mut ranges = Vec::new();
        let end: u64;
        match format {
            Format::Lnotab => {
                // Bytes, not code units: a line starts at an even byte offset.
                let mut line = i64::from(first_line);
                let mut addr: u64 = 0;
                ranges.push((0, clamp_line(line)));
                for pair in table.chunks_exact(2) {
                    addr += u64::from(pair[0]);
                    line += i64::from(pair[1] as i8);
                    let unit = u32::try_from(addr / 2).unwrap_or(u32::MAX);
                    match ranges.last_mut() {
                        Some(last) if last.0 == unit => last.1 = clamp_line(line),
                        _ => ranges.push((unit, clamp_line(line))),
                    }
                }
                end = u64::MAX;
            }
            Format::Linetable310 => {
                let mut line = i64::from(first_line);
                let mut start: u64 = 0;
                for pair in table.chunks_exact(2) {
                    let bytes = u64::from(pair[0]);
                    let delta = pair[1] as i8;
                    let this = if delta == -128 {
                        None
                    } else {
                        line += i64::from(delta);
                        clamp_line(line)
                    };
                    if bytes > 0 {
                        ranges.push((u32::try_from(start / 2).unwrap_or(u32::MAX), this));
                        start += bytes;
                    }
                }
                end = start / 2;
            }
            Format::Locations => {
                let mut line = i64::from(first_line);
                let mut unit: u64 = 0;
                let mut at = 0;
                while at < table.len() {
                    let first = table[at];
                    at += 1;
                    if first & 0x80 == 0 {
                        // Not the start of an entry: the table is corrupt from here.
                        break;
                    }
                    let code = (first >> 3) & 15;
                    let length = u64::from(first & 7) + 1;
                    let this = match code {
                        15 => None,
                        14 => {
                            let Some((delta, n)) = svarint(&table[at..]) else { break };
                            at += n;
                            // end line delta, column + 1, end column + 1
                            for _ in 0..3 {
                                let Some((_, n)) = varint(&table[at..]) else { break };
                                at += n;
                            }
                            line += delta;
                            clamp_line(line)
                        }
                        13 => {
                            let Some((delta, n)) = svarint(&table[at..]) else { break };
                            at += n;
                            line += delta;
                            clamp_line(line)
                        }
                        10..=12 => {
                            at += 2;
                            line += i64::from(code - 10);
                            clamp_line(line)
                        }
                        _ => {
                            at += 1;
                            clamp_line(line)
                        }
                    };
                    ranges.push((u32::try_from(unit).unwrap_or(u32::MAX), this));
                    unit += length;
                }
                end = unit;
            }
        }
        LineTable { first_line, ranges, end: u32::try_from(end).unwrap_or(u32::MAX) }
    }

    /// The line of code unit `unit` (`None`: before the first instruction, which is where a
    /// frame that has not started yet points: its first line). 0 when the instruction has
    /// no line.
    pub fn line(&self, unit: Option<u32>) -> u32 {
        let Some(unit) = unit else { return self.first_line };
        if unit >= self.end {
            return 0;
        }
        let i = self.ranges.partition_point(|r| r.0 <= unit);
        match i.checked_sub(1).and_then(|i| self.ranges.get(i)) {
            Some((_, Some(line))) => *line,
            _ => 0,
        }
    }

    /// Heap bytes held, for the cache's budget.
    pub fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<(u32, Option<u32>)>()
    }
}

/// An unsigned varint of the location table: 6-bit chunks, bit 6 says another follows.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 63) << (6 * i);
        if byte & 64 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A signed varint: the sign in the lowest bit.
fn svarint(b: &[u8]) -> Option<(i64, usize)> {
    let (v, n) = varint(b)?;
    let magnitude = i64::try_from(v >> 1).ok()?;
    Some((if v & 1 == 1 { -magnitude } else { magnitude }, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_of_3_8() {
        // def f():  (line 10)
        //     a = 1      line 11 at byte 0
        //     b = 2      line 12 at byte 4
        //     return 3   line 14 at byte 8 (line increments > 1 are one pair)
        let t = LineTable::parse(Format::Lnotab, &[0, 1, 4, 1, 4, 2], 10);
        assert_eq!(t.line(Some(0)), 11);
        assert_eq!(t.line(Some(1)), 11);
        assert_eq!(t.line(Some(2)), 12);
        assert_eq!(t.line(Some(4)), 14);
        assert_eq!(t.line(Some(400)), 14);
        assert_eq!(t.line(None), 10);
        // A negative increment (a loop's condition on an earlier line).
        let t = LineTable::parse(Format::Lnotab, &[0, 3, 6, 0xfe], 1);
        assert_eq!((t.line(Some(0)), t.line(Some(3))), (4, 2));
    }

    #[test]
    fn linetable_of_3_10() {
        // (bytes, line delta): line 2 for 4 bytes, no line for 2 bytes, line 3 for 6 bytes.
        let t = LineTable::parse(Format::Linetable310, &[4, 1, 2, 0x80, 6, 1], 1);
        assert_eq!(t.line(Some(0)), 2);
        assert_eq!(t.line(Some(1)), 2);
        assert_eq!(t.line(Some(2)), 0);
        assert_eq!(t.line(Some(3)), 3);
        assert_eq!(t.line(Some(5)), 3);
        assert_eq!(t.line(Some(6)), 0, "past the table");
    }

    #[test]
    fn locations_of_3_11() {
        // Entries: (1 unit, no column, line +1), (2 units, short form: same line),
        // (1 unit, one-line form +2), (3 units, long form -1), (1 unit, no location).
        let t = LineTable::parse(
            Format::Locations,
            &[0x80 | (13 << 3), 2, 0x80 | 1, 0x05, 0x80 | (12 << 3), 0, 0, 0x80 | (14 << 3) | 2, 3, 0, 1, 1, 0x80 | (15 << 3)],
            5,
        );
        assert_eq!(t.line(Some(0)), 6);
        assert_eq!(t.line(Some(1)), 6);
        assert_eq!(t.line(Some(2)), 6);
        assert_eq!(t.line(Some(3)), 8);
        assert_eq!(t.line(Some(4)), 7);
        assert_eq!(t.line(Some(6)), 7);
        assert_eq!(t.line(Some(7)), 0, "no location");
        assert_eq!(t.line(Some(8)), 0, "past the table");
        assert_eq!(t.line(None), 5);
    }

    #[test]
    fn corrupt_tables_stop_quietly() {
        let t = LineTable::parse(Format::Locations, &[0x80 | (14 << 3), 0xff, 0xff], 1);
        assert_eq!(t.line(Some(0)), 0);
        let t = LineTable::parse(Format::Locations, &[0x01, 0x02], 1);
        assert_eq!(t.line(Some(0)), 0);
        assert_eq!(varint(&[0x40; 12]), None);
        assert_eq!(svarint(&[3]), Some((-1, 1)));
        assert_eq!(svarint(&[4]), Some((2, 1)));
    }
}
