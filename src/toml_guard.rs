//! What parsing an *unsigned* TOML document may cost, judged before it is parsed.
//!
//! A TOML parser builds a tree of every value it reads; a value costs about 170 bytes
//! of memory whatever its text (`0,` is two bytes), so an unsigned 24 MiB array of
//! zeros costs 2 GB. Signed documents are checked over their exact bytes before they
//! are parsed (`signed.rs`), so they never reach a parser untrusted; the few readers
//! that parse without a signature on purpose (`offgrid inspect`, which says that
//! nothing is verified) first pass the text through [`check`]: a single pass without
//! allocation over the text that counts the tokens that make values, tables and keys
//! (`,` `=` `[` `{` `.` outside strings and comments) and the nesting depth, and
//! refuses a document above [`MAX_UNVERIFIED_BYTES`], [`MAX_UNVERIFIED_TOKENS`] or
//! [`MAX_DEPTH`] (SPEC.md §15.1). The count over-estimates (a float's dot counts), which
//! is the safe side: a real manifest has one token per few dozen bytes.

/// Most bytes of an unsigned document parsed by a reader that verifies nothing.
pub const MAX_UNVERIFIED_BYTES: u64 = 8 << 20;
/// Most value-making tokens in an unsigned document (about 35 MB of parse tree).
pub const MAX_UNVERIFIED_TOKENS: u64 = 200_000;
/// Deepest nesting of arrays and inline tables.
pub const MAX_DEPTH: u32 = 32;

/// Why a document is refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooCostly {
    #[error("it is {0} bytes, more than the {MAX_UNVERIFIED_BYTES} read without a signature")]
    Bytes(u64),
    #[error(
        "it has more than {MAX_UNVERIFIED_TOKENS} values or keys, more than is parsed without a signature"
    )]
    Tokens,
    #[error("it nests arrays or tables deeper than {MAX_DEPTH}")]
    Depth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Comment,
    Basic,
    BasicEscape,
    MultiBasic,
    MultiBasicEscape,
    Literal,
    MultiLiteral,
}

/// Refuses `text` when parsing it could cost more than the limits above.
pub fn check(text: &[u8]) -> Result<(), TooCostly> {
    if text.len() as u64 > MAX_UNVERIFIED_BYTES {
        return Err(TooCostly::Bytes(text.len() as u64));
    }
    let mut tokens: u64 = 0;
    let mut depth: u32 = 0;
    let mut state = State::Normal;
    let mut i = 0;
    let starts = |i: usize, q: &[u8]| text[i..].starts_with(q);
    while i < text.len() {
        let b = text[i];
        match state {
            State::Normal => match b {
                b'#' => state = State::Comment,
                b'"' if starts(i, b"\"\"\"") => {
                    state = State::MultiBasic;
                    i += 2;
                }
                b'"' => state = State::Basic,
                b'\'' if starts(i, b"'''") => {
                    state = State::MultiLiteral;
                    i += 2;
                }
                b'\'' => state = State::Literal,
                b',' | b'=' | b'.' => tokens += 1,
                b'[' | b'{' => {
                    tokens += 1;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(TooCostly::Depth);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'\n' => tokens += 1,
                _ => {}
            },
            State::Comment => {
                if b == b'\n' {
                    state = State::Normal;
                    tokens += 1;
                }
            }
            State::Basic => match b {
                b'\\' => state = State::BasicEscape,
                b'"' | b'\n' => state = State::Normal,
                _ => {}
            },
            State::BasicEscape => state = State::Basic,
            State::MultiBasic => match b {
                b'\\' => state = State::MultiBasicEscape,
                b'"' if starts(i, b"\"\"\"") => {
                    state = State::Normal;
                    i += 2;
                }
                _ => {}
            },
            State::MultiBasicEscape => state = State::MultiBasic,
            State::Literal => {
                if b == b'\'' || b == b'\n' {
                    state = State::Normal;
                }
            }
            State::MultiLiteral => {
                if starts(i, b"'''") {
                    state = State::Normal;
                    i += 2;
                }
            }
        }
        if tokens > MAX_UNVERIFIED_TOKENS {
            return Err(TooCostly::Tokens);
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_manifests_pass() {
        for t in [
            include_str!("../formats/manifest.example.toml"),
            include_str!("../formats/manifest.payload.example.toml"),
        ] {
            check(t.as_bytes()).unwrap();
        }
    }

    #[test]
    fn a_long_array_is_refused() {
        let mut t = b"x=[".to_vec();
        t.extend(b"0,".repeat(300_000));
        t.extend(b"0]");
        assert_eq!(check(&t), Err(TooCostly::Tokens));
    }

    #[test]
    fn many_dotted_keys_count() {
        let t = "a.b.c.d.e=1\n".repeat(50_000);
        assert_eq!(check(t.as_bytes()), Err(TooCostly::Tokens));
    }

    #[test]
    fn tokens_inside_strings_and_comments_do_not_count() {
        let body = ",".repeat(500_000);
        for t in [
            format!("x=\"{body}\"\n"),
            format!("x='{body}'\n"),
            format!("x=\"\"\"\n{body}\n\"\"\"\n"),
            format!("x='''\n{body}\n'''\n"),
            format!("# {body}\nx=1\n"),
            format!("x=\"\\\"{body}\"\n"),
        ] {
            check(t.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", &t[..8]));
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let t = format!("x={}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(check(t.as_bytes()), Err(TooCostly::Depth));
        let t = format!("x={}", "{a=".repeat(40));
        assert_eq!(check(t.as_bytes()), Err(TooCostly::Depth));
    }

    #[test]
    fn too_many_bytes_is_refused() {
        let t = vec![b' '; MAX_UNVERIFIED_BYTES as usize + 1];
        assert!(matches!(check(&t), Err(TooCostly::Bytes(_))));
    }
}
