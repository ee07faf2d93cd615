//! Where a setting is in the file: the line and column of the value at a YAML path
//! (`routes[2].upstream`), and "did you mean" for unknown keys and variants.
//!
//! serde_yaml keeps positions only on its own (syntax and type) errors; a compile step
//! refuses a value by its YAML path ([`crate::compile::CompileError::at`]). Here the text is
//! parsed once more with a parser that keeps spans (`saphyr-parser`, events only) and every
//! node's start is recorded under its path, so the config module can put FILE:LINE:COLUMN on
//! every error. A path that is not in the file (a default, a key left out) is located at its
//! nearest ancestor that is.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

use crate::compile::closest;

/// Line and column (both 1-based) of every node of a YAML document, by path.
#[derive(Debug, Default)]
pub struct Spans {
    at: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map {
        path: String,
        /// The next node is a key (else the value of `key`).
        key_next: bool,
        key: String,
    },
    Seq {
        path: String,
        index: usize,
    },
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Spans {
    /// The spans of the first document of `text`; `None` when it does not parse (the
    /// caller then has a syntax error with serde's own location anyway).
    pub fn parse(text: &str) -> Option<Spans> {
        let mut spans = Spans::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_seen = false;
        for ev in Parser::new_from_str(text) {
            let (ev, span) = ev.ok()?;
            let pos = (span.start.line(), span.start.col() + 1);
            let is_node = matches!(
                ev,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(_)
            );
            if is_node {
                // The path of this node, or None when it is a mapping key.
                let path = match stack.last_mut() {
                    None if root_seen => return Some(spans),
                    None => {
                        root_seen = true;
                        Some(String::new())
                    }
                    Some(Frame::Map { key_next, key, .. }) if *key_next => {
                        *key_next = false;
                        *key = match &ev {
                            Event::Scalar(v, ..) => v.to_string(),
                            _ => "?".to_string(),
                        };
                        None
                    }
                    Some(Frame::Map {
                        path,
                        key_next,
                        key,
                    }) => {
                        *key_next = true;
                        Some(child(path, key))
                    }
                    Some(Frame::Seq { path, index }) => {
                        *index += 1;
                        Some(format!("{path}[{}]", *index - 1))
                    }
                };
                // A complex key's own nodes are recorded under a path no setting has.
                let path = path.unwrap_or_else(|| "?key".to_string());
                spans.at.entry(path.clone()).or_insert(pos);
                match ev {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path,
                        key_next: true,
                        key: String::new(),
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, index: 0 }),
                    _ => {}
                }
            } else if matches!(ev, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                if stack.is_empty() {
                    return Some(spans);
                }
            }
        }
        Some(spans)
    }

    /// Line and column of the value at `path`, or of its nearest ancestor in the file.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(&pos) = self.at.get(p) {
                return Some(pos);
            }
            if p.is_empty() {
                return None;
            }
            // Drop the last segment: `.key` or `[i]`.
            let cut = p.rfind(['.', '[']).unwrap_or(0);
            p = &p[..cut];
        }
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), rewritten
/// with the closest expected name: "unknown field `scopez` (did you mean `scopes`?)". The
/// list stays when nothing is close. Other messages are returned unchanged.
pub fn did_you_mean(reason: &str) -> String {
    for kind in ["unknown field `", "unknown variant `"] {
        let Some(start) = reason.find(kind) else {
            continue;
        };
        let rest = &reason[start + kind.len()..];
        let Some(end) = rest.find('`') else { continue };
        let word = &rest[..end];
        let after = &rest[end + 1..];
        let expected: Vec<&str> = after.split('`').skip(1).step_by(2).collect();
        if let Some(best) = closest(word, expected.iter().copied()) {
            let what = &kind[..kind.len() - 2];
            return format!(
                "{}{what} `{word}` (did you mean `{best}`?)",
                &reason[..start]
            );
        }
    }
    reason.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const DOC: &str = "listen:\n  address: 1.2.3.4:5\nroutes:\n  - name: a\n    upstream: x\n  - {name: b, upstream: y}\nissuers: []\n";

    #[test]
    fn paths_map_to_value_positions() {
        let s = Spans::parse(DOC).unwrap();
        assert_eq!(s.find("listen.address"), Some((2, 12)));
        assert_eq!(s.find("routes[0].upstream"), Some((5, 15)));
        assert_eq!(s.find("routes[1].upstream"), Some((6, 25)));
        assert_eq!(s.find("routes[1]"), Some((6, 5)));
        // Not in the file: its nearest ancestor.
        assert_eq!(s.find("routes[1].scopes"), Some((6, 5)));
        assert_eq!(s.find("listen.tls.cert"), s.find("listen"));
        assert_eq!(s.find("issuers"), Some((7, 10)));
        assert_eq!(s.find(""), Some((1, 1)));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean(
                "routes[0]: unknown field `scopez`, expected one of `name`, `scopes`, `tools`"
            ),
            "routes[0]: unknown field `scopez` (did you mean `scopes`?)"
        );
        assert_eq!(
            did_you_mean("unknown variant `oauht`, expected one of `oauth`, `none`"),
            "unknown variant `oauht` (did you mean `oauth`?)"
        );
        let far = "unknown field `zzz`, expected `name` or `issuer`";
        assert_eq!(did_you_mean(far), far);
        assert_eq!(closest("Issuer", ["issuer", "issuers"]), Some("issuer"));
        assert_eq!(closest("x", ["name"]), None);
    }
}
