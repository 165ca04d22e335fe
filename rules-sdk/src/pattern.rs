//! Glob patterns over collectd identifiers, with the host's semantics: `*` matches any run of
//! characters except `/`, `?` one character except `/`, `**` anything including `/`. Small on
//! purpose: a regex engine would add hundreds of KiB to every rule.

/// A compiled glob. Matching is linear in practice and never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    glob: String,
}

impl Pattern {
    pub fn new(glob: impl Into<String>) -> Self {
        Self { glob: glob.into() }
    }

    pub fn as_str(&self) -> &str {
        &self.glob
    }

    pub fn matches(&self, text: &str) -> bool {
        matches(self.glob.as_bytes(), text.as_bytes())
    }
}

/// Several globs; a text matches the set when it matches any of them. The host matches rules'
/// subscriptions with this, so a rule and the host agree on what a pattern means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    pub fn new<S: Into<String>>(globs: impl IntoIterator<Item = S>) -> Self {
        Self {
            patterns: globs.into_iter().map(Pattern::new).collect(),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(text))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Does an MQTT topic filter (`+` one level, `#` the rest, as the last level) match a topic
/// name? The broker decides what a rule receives; this tells a rule which of its filters a
/// message came through. Topics starting with `$` match only filters that name it.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/').peekable();
    while let Some(f) = filter_levels.next() {
        if f == "#" {
            return filter_levels.peek().is_none();
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

fn matches(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Backtrack point for the most recent `*` (pattern index after it, text index it covers to).
    let mut star: Option<(usize, usize, bool)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    let deep = p.get(pi + 1) == Some(&b'*');
                    pi += if deep { 2 } else { 1 };
                    star = Some((pi, ti, deep));
                    continue;
                }
                b'?' if t[ti] != b'/' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                c if c == t[ti] && c != b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st, deep)) if deep || t[st] != b'/' => {
                star = Some((sp, st + 1, deep));
                pi = sp;
                ti = st + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::{Pattern, PatternSet, topic_matches};

    #[test]
    fn a_set_matches_when_any_pattern_does() {
        let set = PatternSet::new(["*/load/load", "web1/**"]);
        assert!(set.matches("db/load/load"));
        assert!(set.matches("web1/cpu-0/percent-idle"));
        assert!(!set.matches("db/cpu-0/percent-idle"));
        assert!(!PatternSet::default().matches("anything/at/all"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        let p = Pattern::new("*/memory/memory-free");
        assert!(p.matches("web1/memory/memory-free"));
        assert!(!p.matches("a/b/memory/memory-free"));
        assert!(Pattern::new("*/cpu-*/percent-idle").matches("h/cpu-0/percent-idle"));
        assert!(!Pattern::new("*/cpu-*/percent-idle").matches("h/cpu-0/x/percent-idle"));
        assert!(Pattern::new("*/*/*").matches("h/p/t"));
        assert!(!Pattern::new("*/*").matches("h/p/t"));
        assert!(Pattern::new("**").matches("h/p/t"));
        assert!(Pattern::new("h/**").matches("h/p/t"));
        assert!(Pattern::new("h/p?/t").matches("h/p1/t"));
        assert!(!Pattern::new("h/p?/t").matches("h/p/t"));
        assert!(Pattern::new("exact/id/x").matches("exact/id/x"));
        assert!(!Pattern::new("exact/id/x").matches("exact/id/xy"));
        assert!(Pattern::new("*a*b").matches("xaxxb"));
        assert!(!Pattern::new("*a*b").matches("xaxxbc"));
    }

    #[test]
    fn mqtt_filters_match_as_a_broker_does() {
        for (filter, topic, yes) in [
            ("home/a/state", "home/a/state", true),
            ("home/+/state", "home/a/state", true),
            ("home/+/state", "home/a/b/state", false),
            ("home/#", "home", true),
            ("home/#", "home/a/b", true),
            ("home/a", "home/a/b", false),
            ("home/a/b", "home/a", false),
            ("#", "$SYS/x", false),
            ("home/#/x", "home/a/x", false),
        ] {
            assert_eq!(topic_matches(filter, topic), yes, "{filter} vs {topic}");
        }
    }
}
