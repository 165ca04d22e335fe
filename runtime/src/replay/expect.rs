//! `medic replay --expect`: compare a replay's lines with the expected ones as JSON values
//! (key order and spacing do not matter) and say how they differ, as a line diff.

use std::fmt::Write as _;

use serde_json::Value as Json;
use similar::{Algorithm, DiffOp, capture_diff_slices};

/// The expected lines of a file (blank lines skipped). A line that is not JSON is an error
/// naming it: an expectation that cannot be read must not pass.
pub fn read(text: &str, name: &str) -> Result<Vec<(String, Json)>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|j| (l.to_string(), j))
                .map_err(|e| format!("{name}:{}: not JSON: {e}", i + 1))
        })
        .collect()
}

/// `None` when `got` is what was expected; otherwise a readable diff: `-` lines expected and
/// missing, `+` lines produced and not expected, with a line of context around each change.
pub fn compare(expected: &[(String, Json)], got: &[String]) -> Option<String> {
    let got_json: Vec<Json> = got
        .iter()
        .map(|l| serde_json::from_str(l).expect("replay lines are JSON"))
        .collect();
    let old: Vec<String> = expected.iter().map(|(_, j)| canonical(j)).collect();
    let new: Vec<String> = got_json.iter().map(canonical).collect();
    if old == new {
        return None;
    }
    let mut out = String::new();
    for op in capture_diff_slices(Algorithm::Myers, &old, &new) {
        match op {
            DiffOp::Equal { old_index, len, .. } => {
                // Context: the first and last of a run of equal lines.
                let _ = writeln!(out, "  {}", expected[old_index].0);
                if len > 2 {
                    let _ = writeln!(out, "  ... {} equal lines", len - 2);
                }
                if len > 1 {
                    let _ = writeln!(out, "  {}", expected[old_index + len - 1].0);
                }
            }
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for (line, _) in &expected[old_index..old_index + old_len] {
                    let _ = writeln!(out, "- {line}");
                }
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for line in &got[new_index..new_index + new_len] {
                    let _ = writeln!(out, "+ {line}");
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for (line, _) in &expected[old_index..old_index + old_len] {
                    let _ = writeln!(out, "- {line}");
                }
                for line in &got[new_index..new_index + new_len] {
                    let _ = writeln!(out, "+ {line}");
                }
            }
        }
    }
    Some(out)
}

/// A JSON value as text with object keys sorted at every level: equal values, equal text.
fn canonical(j: &Json) -> String {
    fn sorted(j: &Json) -> Json {
        match j {
            Json::Object(o) => {
                let mut keys: Vec<_> = o.iter().collect();
                keys.sort_by(|a, b| a.0.cmp(b.0));
                Json::Object(
                    keys.into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(j).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let expected = read(r#"{ "b": 1, "a": {"y": 2, "x": 3} }"#, "e").unwrap();
        let got = vec![r#"{"a":{"x":3,"y":2},"b":1}"#.to_string()];
        assert_eq!(compare(&expected, &got), None);
    }

    #[test]
    fn a_difference_shows_what_is_missing_and_what_is_new() {
        let expected = read("{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n", "e").unwrap();
        let got = vec![
            r#"{"n":1}"#.to_string(),
            r#"{"n":4}"#.to_string(),
            r#"{"n":3}"#.to_string(),
        ];
        let diff = compare(&expected, &got).unwrap();
        assert!(diff.contains("- {\"n\":2}"), "{diff}");
        assert!(diff.contains("+ {\"n\":4}"), "{diff}");
        let extra = vec![r#"{"n":1}"#.to_string()];
        let diff = compare(&expected, &extra).unwrap();
        assert!(diff.contains("- {\"n\":3}"), "{diff}");
    }

    #[test]
    fn an_unreadable_expectation_names_its_line() {
        let err = read("{\"n\":1}\n\nnope\n", "expected.jsonl").unwrap_err();
        assert!(err.starts_with("expected.jsonl:3: not JSON"), "{err}");
    }
}
