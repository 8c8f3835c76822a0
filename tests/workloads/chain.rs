// main -> rs_outer -> rs_middle -> rs_leaf in Rust, burning CPU in rs_leaf. Built by the
// tests with rustc -O, whose default linker (lld) packs PT_LOAD segments so that the text
// mapping does not start where its segment does: a layout the unwinder must get right.
// argv[1]: seconds to run.
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

#[inline(never)]
fn rs_leaf(mut x: u64) -> u64 {
    for _ in 0..1_000_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}

#[inline(never)]
fn rs_middle(x: u64) -> u64 {
    black_box(rs_leaf(x)) ^ (x + 1)
}

#[inline(never)]
fn rs_outer(x: u64) -> u64 {
    black_box(rs_middle(x)) + 3
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    println!("ready");
    std::io::stdout().flush().ok();
    let mut x = 1u64;
    while Instant::now() < end {
        x = black_box(rs_outer(x));
    }
    black_box(x);
}
