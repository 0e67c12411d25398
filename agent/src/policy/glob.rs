//! Shell-style patterns for `targets.devices` and `targets.namespaces`, matched against
//! interface names and namespace paths.

use std::fmt;

use crate::fault::values::ValueError;

/// A shell-style pattern: `*` any run of characters, `?` one character, `[abc]`, `[a-z]`,
/// `[!a-z]` one of (or none of) a set, `\x` a literal x. As in paths, no wildcard matches `/`,
/// so `/run/netns/lab-*` cannot reach outside /run/netns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    pub fn new(text: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError(format!("{text:?} is not a valid pattern: {why}"));
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::One,
                '\\' => Token::Literal(chars.next().ok_or_else(|| bad("ends in \\"))?),
                '[' => {
                    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let first = match chars.next() {
                            None => return Err(bad("[ without ]")),
                            // A ] first in the set is a member, as in fnmatch.
                            Some(']') if !ranges.is_empty() => break,
                            Some('\\') => chars.next().ok_or_else(|| bad("ends in \\"))?,
                            Some(c) => c,
                        };
                        let last = if chars.next_if_eq(&'-').is_some() {
                            match chars.next() {
                                None => return Err(bad("[ without ]")),
                                Some(']') => {
                                    // A trailing - is a member: `[a-]`.
                                    ranges.push((first, first));
                                    ranges.push(('-', '-'));
                                    break;
                                }
                                Some('\\') => chars.next().ok_or_else(|| bad("ends in \\"))?,
                                Some(c) => c,
                            }
                        } else {
                            first
                        };
                        if last < first {
                            return Err(bad(&format!("range {first}-{last} is backwards")));
                        }
                        ranges.push((first, last));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        // reach[j]: the tokens seen so far can match chars[..j]. Quadratic at worst, and the
        // inputs are interface names and paths.
        let mut reach = vec![false; chars.len() + 1];
        reach[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; chars.len() + 1];
            for j in 0..=chars.len() {
                next[j] = match token {
                    Token::Star => reach[j] || (j > 0 && next[j - 1] && chars[j - 1] != '/'),
                    _ => j > 0 && reach[j - 1] && token.matches_one(chars[j - 1]),
                };
            }
            reach = next;
        }
        reach[chars.len()]
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Self::Literal(l) => *l == c,
            Self::One => c != '/',
            Self::Star => false,
            Self::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(a, b)| (a..=b).contains(&c)) != *negated
            }
        }
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("eth*", "eth0", true),
            ("eth*", "eth", true),
            ("eth*", "veth0", false),
            ("veth?", "veth1", true),
            ("veth?", "veth10", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("en[ops]*", "enp0s3", true),
            ("en[ops]*", "enx0", false),
            ("eth[0-3]", "eth2", true),
            ("eth[0-3]", "eth4", false),
            ("eth[!0-3]", "eth4", true),
            ("eth[^0-3]", "eth1", false),
            ("x[]a]", "x]", true),
            ("x[a-]", "x-", true),
            ("lit\\*", "lit*", true),
            ("lit\\*", "litX", false),
            ("/run/netns/lab-*", "/run/netns/lab-a", true),
            ("/run/netns/lab-*", "/run/netns/lab-a/x", false),
            ("/run/netns/?", "/run/netns//", false),
            ("a[/]b", "a/b", false),
            ("**", "abc", true),
        ];
        for (pattern, text, want) in cases {
            let glob = Glob::new(pattern).expect("valid pattern");
            assert_eq!(glob.matches(text), want, "{pattern} ~ {text}");
        }
        for bad in ["", "[", "[!", "a[b", "x\\", "[z-a]", "[a\\"] {
            assert!(Glob::new(bad).is_err(), "{bad:?}");
        }
    }
}
