//! Flame graph SVGs, drawn by inferno (the Rust port of Brendan Gregg's flamegraph.pl):
//! search (Ctrl-F or the Search button), click to zoom, a tooltip per frame with its samples
//! and percentage.
//!
//! Input: collapsed stacks (`root;...;leaf COUNT`, one per line, the format of
//! stackcollapse-perf), frame names annotated the way inferno colours them: `_[k]` kernel,
//! `_[j]` JIT, `_[i]` inlined (the annotation is not drawn); plus colours for names no
//! annotation covers (Python functions, markers). Output: the SVG document. A differential
//! graph takes two profiles' lines (`differential`). Non-goals: collapsing (the caller has
//! the stacks), pprof.
use std::collections::HashMap;

use inferno::flamegraph::color::{Color, MultiPalette, Palette, PaletteMap};
use inferno::flamegraph::{self, Options};

use crate::error::{Error, Result};

/// How a flame graph is drawn.
pub struct FlameOptions {
    pub title: String,
    pub subtitle: Option<String>,
    /// What one count is, in tooltips ("samples").
    pub count_name: String,
    /// `name -> "#rrggbb"` for frames that no annotation colours.
    pub colors: HashMap<String, String>,
}

/// The SVG of `lines` (collapsed stacks). Errors: a colour that is not `#rrggbb`, no line
/// that parses (inferno's own message).
pub fn svg(lines: &[String], opts: &FlameOptions) -> Result<String> {
    if !lines.iter().any(|l| l.rsplit_once(' ').is_some_and(|(_, n)| n.trim().parse::<u64>().is_ok_and(|n| n > 0))) {
        return Ok(empty_svg(opts));
    }
    let mut palette = palette(&opts.colors)?;
    let mut o = options(opts, &mut palette);
    render(&mut o, lines.iter().map(String::as_str))
}

/// A differential flame graph of `base` then `new` (collapsed stacks each): the frames of
/// `new`, red where they grew and blue where they shrank (inferno's `differential`, then
/// its renderer); `base` is scaled to `new`'s total first, so shares are compared.
pub fn differential(base: &[String], new: &[String], opts: &FlameOptions) -> Result<String> {
    let (a, b) = (base.join("\n"), new.join("\n"));
    let mut folded = Vec::new();
    let diff = inferno::differential::Options { normalize: true, ..Default::default() };
    inferno::differential::from_readers(diff, a.as_bytes(), b.as_bytes(), &mut folded)
        .map_err(|e| Error::Other(format!("differential flame graph: {e}")))?;
    let folded = String::from_utf8_lossy(&folded).into_owned();
    let mut palette = palette(&opts.colors)?;
    let mut o = options(opts, &mut palette);
    render(&mut o, folded.lines())
}

fn options<'a>(opts: &FlameOptions, palette: &'a mut PaletteMap) -> Options<'a> {
    let mut o = Options::default();
    o.title = opts.title.clone();
    o.subtitle = opts.subtitle.clone();
    o.count_name = opts.count_name.clone();
    // Java's palette reads the annotations: kernel orange, JIT green, inlined aqua; C++ and
    // Rust paths (`::`) yellow, other native code red, as perf users know them.
    o.colors = Palette::Multi(MultiPalette::Java);
    o.hash = true; // the same name, the same colour, run after run
    o.deterministic = true;
    o.palette_map = Some(palette);
    o
}

fn render<'a>(o: &mut Options<'_>, lines: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut out = Vec::new();
    flamegraph::from_lines(o, lines, &mut out).map_err(|e| Error::Other(format!("flame graph: {e}")))?;
    String::from_utf8(out).map_err(|e| Error::Other(format!("flame graph: not UTF-8 ({e})")))
}

/// An empty profile's page. Written here because inferno refuses an input without counts
/// (an error, and an error page), while an empty profile is a right answer.
fn empty_svg(opts: &FlameOptions) -> String {
    let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"80\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text x=\"600\" y=\"24\" text-anchor=\"middle\" \
         font-family=\"Verdana\" font-size=\"17\">{}</text><text x=\"600\" y=\"56\" text-anchor=\"middle\" \
         font-family=\"Verdana\" font-size=\"12\">no samples</text></svg>\n",
        escape(&opts.title)
    )
}

fn palette(colors: &HashMap<String, String>) -> Result<PaletteMap> {
    let mut map = PaletteMap::default();
    for (name, hex) in colors {
        map.insert(name, parse_color(hex)?);
    }
    Ok(map)
}

fn parse_color(hex: &str) -> Result<Color> {
    let bad = || Error::InvalidArgument(format!("colour {hex:?} is not #rrggbb"));
    let digits = hex.strip_prefix('#').filter(|d| d.len() == 6).ok_or_else(bad)?;
    let byte = |i: usize| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| bad());
    Ok(Color { r: byte(0)?, g: byte(2)?, b: byte(4)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(colors: &[(&str, &str)]) -> FlameOptions {
        FlameOptions {
            title: "CPU".into(),
            subtitle: None,
            count_name: "samples".into(),
            colors: colors.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect(),
        }
    }

    #[test]
    fn draws_frames_with_tooltips_search_and_colours() {
        let lines = ["app;main;work 3".to_string(), "app;main;read;do_syscall_64_[k] 1".to_string(), "app;main;handler 4".to_string()];
        let svg = svg(&lines, &opts(&[("handler", "#3366cc")])).expect("draws");
        assert!(svg.starts_with("<?xml"), "{}", &svg[..80]);
        assert!(svg.contains("<title>work (3 samples, 37.50%)</title>"), "a tooltip with count and share");
        assert!(svg.contains("<title>do_syscall_64 (1 samples, 12.50%)</title>"), "the annotation is not drawn");
        assert!(svg.contains("id=\"search\""), "the search control");
        assert!(svg.contains("fill=\"rgb(51,102,204)\""), "the given colour of handler");
    }

    #[test]
    fn no_counts_draw_an_empty_page() {
        let svg = svg(&["a 0".into()], &opts(&[])).expect("draws");
        assert!(svg.contains(">no samples</text>") && svg.contains(">CPU</text>"), "{svg}");
    }

    #[test]
    fn bad_colour_is_an_error() {
        let err = svg(&["a 1".into()], &opts(&[("a", "blue")])).expect_err("not #rrggbb");
        assert!(err.to_string().contains("blue"), "{err}");
    }

    #[test]
    fn differential_colours_what_grew() {
        let base = ["app;main;a 5".to_string(), "app;main;b 5".to_string()];
        let new = ["app;main;a 9".to_string(), "app;main;b 1".to_string()];
        let svg = differential(&base, &new, &opts(&[])).expect("draws");
        assert!(svg.contains("<title>a (9 samples, 90.00%; +40.00%)</title>"), "{}", svg.lines().filter(|l| l.contains("<title>a")).collect::<String>());
    }
}
