//! Reading HTCondor values: argument lists, environments, sizes and ClassAd literals.
//!
//! Both argument syntaxes of `condor_submit` are read: the new one (the whole value in
//! double quotes, words separated by spaces, single quotes group a word, `''` and `""`
//! stand for one quote) and the old one (words separated by spaces, `\"` for a quote).
//! Environments likewise: new (`"A=1 B='x y'"`) and old (`A=1;B=2`).

/// The words of an `arguments` value.
pub fn arguments(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) if value.len() >= 2 => new_syntax_words(inner),
        _ => Ok(value
            .split_whitespace()
            .map(|w| w.replace("\\\"", "\""))
            .collect()),
    }
}

/// The variables of an `environment` value, in order.
pub fn environment(value: &str) -> Result<Vec<(String, String)>, String> {
    let value = value.trim();
    let entries: Vec<String> = match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) if value.len() >= 2 => new_syntax_words(inner)?,
        _ => value
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(format!("`{entry}` is not NAME=value")),
        })
        .collect()
}

/// Words of the new syntax (the text between the outer double quotes).
fn new_syntax_words(inner: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.peek() == Some(&'"') => {
                chars.next();
                word.push('"');
                in_word = true;
            }
            '"' => return Err("a lone `\"` inside a quoted value (write `\"\"`)".to_owned()),
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                chars.next();
                word.push('\'');
            }
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("a single quote is not closed".to_owned());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The unit a size without one is in: `request_memory` is in MiB, `request_disk` in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultUnit {
    /// Mebibytes.
    Mebi,
    /// Kibibytes.
    Kibi,
}

/// A `request_memory`/`request_disk` size (`1500`, `2 GB`, `15G`, `1.5g`) as a Kubernetes
/// quantity in the largest binary unit that states it exactly (`1500Mi`, `2Gi`, `15Gi`).
/// HTCondor reads K, M, G and T (with or without a trailing B) as powers of 1024.
pub fn size(value: &str, default: DefaultUnit) -> Result<String, String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let digits_end = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    let (number, unit) = compact.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a size such as 2048, 2 GB or 15G"))?;
    let unit = unit.to_ascii_uppercase();
    let unit = unit.strip_suffix('B').unwrap_or(&unit);
    let kib_per_unit: f64 = match unit {
        "" => match default {
            DefaultUnit::Mebi => 1024.0,
            DefaultUnit::Kibi => 1.0,
        },
        "K" => 1.0,
        "M" => 1024.0,
        "G" => 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{value}`: unknown unit (K, M, G or T)")),
    };
    let kib = (number * kib_per_unit).round();
    if kib < 1.0 || !kib.is_finite() {
        return Err(format!("`{value}` is not a size larger than zero"));
    }
    // Sizes fit in u64 KiB by far; the cast saturates rather than wraps.
    let kib = kib as u64;
    Ok(binary_quantity(kib))
}

fn binary_quantity(kib: u64) -> String {
    for (suffix, factor) in [("Ti", 1u64 << 30), ("Gi", 1 << 20), ("Mi", 1 << 10)] {
        if kib.is_multiple_of(factor) {
            return format!("{}{suffix}", kib / factor);
        }
    }
    format!("{kib}Ki")
}

/// A ClassAd string literal's text (`"el9"` → `el9`); a bare word stays as it is.
pub fn classad_string(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_owned()
}

/// A ClassAd boolean (`True`, `false`, `1`, `0`), `None` when the value is an expression.
pub fn classad_bool(value: &str) -> Option<bool> {
    match classad_string(value).to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_argument_syntax_groups_single_quoted_words() {
        assert_eq!(
            arguments(r#""-c 'echo hello world' --n=3 'it''s' say""hi""""#).unwrap(),
            ["-c", "echo hello world", "--n=3", "it's", "say\"hi\""]
        );
        assert_eq!(arguments(r#""""#).unwrap(), Vec::<String>::new());
        assert!(arguments(r#""'open""#).is_err());
    }

    #[test]
    fn old_argument_syntax_splits_on_spaces() {
        assert_eq!(
            arguments(r#"-n 10 file_$(Process).root \"x\""#).unwrap(),
            ["-n", "10", "file_$(Process).root", "\"x\""]
        );
    }

    #[test]
    fn both_environment_syntaxes() {
        assert_eq!(
            environment(r#""ONE=1 TWO='a b' EMPTY=""#).unwrap(),
            [
                ("ONE".into(), "1".into()),
                ("TWO".into(), "a b".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(
            environment("A=1;B=two").unwrap(),
            [("A".into(), "1".into()), ("B".into(), "two".into())]
        );
        assert!(environment("NOVALUE").is_err());
    }

    #[test]
    fn sizes_follow_htcondor_units() {
        assert_eq!(size("1500", DefaultUnit::Mebi).unwrap(), "1500Mi");
        assert_eq!(size("2048", DefaultUnit::Mebi).unwrap(), "2Gi");
        assert_eq!(size("2 GB", DefaultUnit::Mebi).unwrap(), "2Gi");
        assert_eq!(size("15G", DefaultUnit::Kibi).unwrap(), "15Gi");
        assert_eq!(size("1.5g", DefaultUnit::Mebi).unwrap(), "1536Mi");
        assert_eq!(size("1000000", DefaultUnit::Kibi).unwrap(), "1000000Ki");
        assert_eq!(size("20480", DefaultUnit::Kibi).unwrap(), "20Mi");
        assert!(
            size(
                "ifThenElse(MemoryUsage > 2000, 4000, 2000)",
                DefaultUnit::Mebi
            )
            .is_err()
        );
        assert!(size("3 PB", DefaultUnit::Mebi).is_err());
        assert!(size("0", DefaultUnit::Mebi).is_err());
    }

    #[test]
    fn classad_literals() {
        assert_eq!(classad_string(" \"longlunch\" "), "longlunch");
        assert_eq!(classad_bool("True"), Some(true));
        assert_eq!(classad_bool("\"false\""), Some(false));
        assert_eq!(classad_bool("OpSysMajorVer == 7"), None);
    }
}
