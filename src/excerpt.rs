//! The one message sanitiser: anything quoted from outside input (a parser's error that
//! echoes the offending line, a trusted comment, a tar entry name) goes through here
//! before it reaches an error message, so no input can make a message long or make it
//! carry terminal control sequences.
//!
//! [`excerpt`] cuts one quoted value to [`MAX_EXCERPT_CHARS`] printable characters;
//! [`message`] bounds a multi-line text (a TOML parser's diagnostic) line by line and in
//! total. Known gap: the cut is by characters, not display width (wide characters take
//! two columns).

/// Most characters of one quoted value.
pub const MAX_EXCERPT_CHARS: usize = 100;
/// Most characters of one line of a quoted diagnostic.
pub const MAX_LINE_CHARS: usize = 200;
/// Most lines of a quoted diagnostic.
pub const MAX_LINES: usize = 12;

/// `s` without control characters, cut to [`MAX_EXCERPT_CHARS`] characters (an ellipsis
/// marks the cut).
pub fn excerpt(s: &str) -> String {
    cut(s, MAX_EXCERPT_CHARS)
}

/// A multi-line text from outside input, bounded: control characters other than the line
/// breaks dropped, each line cut to [`MAX_LINE_CHARS`], at most [`MAX_LINES`] lines.
pub fn message(s: &str) -> String {
    let mut out = Vec::new();
    for (i, line) in s.lines().enumerate() {
        if i == MAX_LINES {
            out.push("…".to_owned());
            break;
        }
        out.push(cut(line, MAX_LINE_CHARS));
    }
    out.join("\n")
}

fn cut(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().filter(|c| !c.is_control()).enumerate() {
        if n == max {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_hostile_text_is_cut_and_cleaned() {
        let evil = format!("a\u{1b}[2J{}", "x".repeat(10_000));
        let e = excerpt(&evil);
        assert!(!e.contains('\u{1b}'));
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS + 1);
        let many = format!("{}\n", "y".repeat(1 << 20)).repeat(100);
        let m = message(&many);
        assert!(
            m.len() < 4 * MAX_LINE_CHARS * (MAX_LINES + 1),
            "{}",
            m.len()
        );
        assert_eq!(message("one\ntwo"), "one\ntwo");
    }
}
