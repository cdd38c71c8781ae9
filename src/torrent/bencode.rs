//! A minimal bencode encoder (BEP 3) for the metainfo `offgrid torrent` writes.
//!
//! Only encoding is needed, of values offgrid builds itself, so a tiny encoder beats a
//! serde format crate: dictionaries are `BTreeMap`s keyed by raw bytes, which gives the
//! sorted, duplicate-free keys BEP 3 requires by construction (the info-hash depends on
//! the exact bytes, so this ordering is what makes it reproducible). Known gap: no
//! decoder; tests cross-check the output against stock clients and tools instead.

use std::collections::BTreeMap;

/// A bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A list of byte strings from text.
    pub fn str_list<S: AsRef<str>>(items: &[S]) -> Value {
        Value::List(items.iter().map(|s| Value::str(s.as_ref())).collect())
    }

    /// The encoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    out.extend_from_slice(k.len().to_string().as_bytes());
                    out.push(b':');
                    out.extend_from_slice(k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// Builds a dictionary from `(key, value)` pairs.
pub fn dict<I: IntoIterator<Item = (&'static str, Value)>>(items: I) -> Value {
    Value::Dict(
        items
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bep3_examples() {
        assert_eq!(Value::str("spam").encode(), b"4:spam");
        assert_eq!(Value::Int(3).encode(), b"i3e");
        assert_eq!(Value::Int(-3).encode(), b"i-3e");
        assert_eq!(Value::Int(0).encode(), b"i0e");
        assert_eq!(Value::str("").encode(), b"0:");
        assert_eq!(
            Value::str_list(&["spam", "eggs"]).encode(),
            b"l4:spam4:eggse"
        );
        let d = dict([("spam", Value::str_list(&["a", "b"]))]);
        assert_eq!(d.encode(), b"d4:spaml1:a1:bee");
    }

    #[test]
    fn dictionary_keys_are_sorted_as_raw_bytes() {
        let d = dict([
            ("spam", Value::str("eggs")),
            ("cow", Value::str("moo")),
            ("piece length", Value::Int(1)),
            ("pieces", Value::str("")),
        ]);
        assert_eq!(
            d.encode(),
            b"d3:cow3:moo12:piece lengthi1e6:pieces0:4:spam4:eggse".to_vec()
        );
    }
}
